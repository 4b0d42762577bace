"""Issue 12, item 1: the dashboard is local-only wherever it is started from, and paths typed
into its pages stay inside the runs folder, the model cache and AKL_ALLOWED_DIRS.

- a real `streamlit run <repo>/app/Home.py` started from another folder, on a free port,
  listens on loopback only (bounded by a timeout; nothing binds beyond loopback here);
- AppTest: a non-loopback server.address makes every page refuse (one error line, no
  widgets) unless AKL_APP_ALLOW_REMOTE=1, which shows a warning instead;
- AppTest: model folders, data files and runs folders outside the allowed folders are
  refused with one error line, symbolic links included.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402
from streamlit.testing.v1.util import patch_config_options  # noqa: E402

from tests.app_server import free_port  # noqa: E402
from tests.small_lm import examples, save_bundle, small_teacher, write_jsonl  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "app" / "Home.py"
PAGES = ["1_Live_distillation.py", "2_Toy_lab.py", "3_Compare_runs.py", "4_Token_inspector.py"]


# ------------------------------------------------------------------ the real server's address





def _listening(pid: int, port: int) -> list[str]:
    psutil = pytest.importorskip("psutil")
    proc = psutil.Process(pid)
    get = getattr(proc, "net_connections", None) or proc.connections
    return sorted({c.laddr.ip for c in get(kind="inet")
                   if c.status == psutil.CONN_LISTEN and c.laddr.port == port})


def test_streamlit_started_from_another_folder_listens_on_loopback_only(tmp_path):
    pytest.importorskip("psutil")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMLIT_")}
    env.update(PYTHONPATH=str(ROOT), AKL_CACHE_DIR=str(tmp_path / "cache"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(APP), "--server.port", str(port),
         "--browser.gatherUsageStats", "false"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        deadline = time.monotonic() + 90
        addresses: list[str] = []
        while time.monotonic() < deadline and proc.poll() is None and not addresses:
            time.sleep(0.3)
            addresses = _listening(proc.pid, port)
        assert addresses, f"streamlit did not listen on {port} (exit {proc.poll()})"
        time.sleep(0.5)  # a second socket (IPv6) would be open by now
        addresses = _listening(proc.pid, port)
        assert addresses == ["127.0.0.1"], addresses
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=10) as r:
            assert r.read() == b"ok"
    finally:
        proc.terminate()
        try:
            out, _ = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
    assert "Network URL" not in out, out


# ----------------------------------------------------------------------------- AppTest pages


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A small teacher as the default, a runs folder, a model cache, and outside material."""
    base = tmp_path_factory.mktemp("security")
    teacher = save_bundle(small_teacher(), base / "teacher")
    (base / "runs").mkdir()
    data = write_jsonl(base / "runs" / "train.jsonl", examples(6))
    outside = base / "outside"
    outside.mkdir()
    write_jsonl(outside / "secret.jsonl", examples(6))
    save_bundle(small_teacher(), outside / "model")
    (base / "runs" / "link").symlink_to(outside, target_is_directory=True)
    values = {"AKL_APP_TEACHER": str(teacher), "AKL_APP_STUDENT": "truncate:1",
              "AKL_APP_RUNS_DIR": str(base / "runs"), "AKL_CACHE_DIR": str(base / "cache")}
    with pytest.MonkeyPatch.context() as mp:
        for key, value in values.items():
            mp.setenv(key, value)
        mp.delenv("AKL_ALLOWED_DIRS", raising=False)
        mp.delenv("AKL_APP_ALLOW_REMOTE", raising=False)
        yield {"base": base, "data": data, "outside": outside, "teacher": teacher}


def open_page(page: str | None = None) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=120).run()
    if page is not None:
        at.switch_page(f"pages/{page}").run()
    assert not at.exception, at.exception
    return at


def errors(at: AppTest) -> list[str]:
    return [e.value for e in at.error]


def test_which_addresses_count_as_loopback():
    sys.path.insert(0, str(APP.parent))
    from ui_common import is_loopback

    for address in ("127.0.0.1", "127.0.0.2", "localhost", "LOCALHOST", "::1", "[::1]",
                    "unix:///tmp/akl.sock"):
        assert is_loopback(address), address
    for address in (None, "", "0.0.0.0", "::", "192.168.1.7", "10.0.0.1", "example.org",
                    "fe80::1"):
        assert not is_loopback(address), address


def test_every_page_refuses_a_server_beyond_loopback(env):
    with patch_config_options({"server.address": "0.0.0.0"}):
        for page in [None, *PAGES]:
            at = open_page(page)
            assert len(errors(at)) == 1 and errors(at)[0].startswith("Refused: this dashboard "
                                                                     "listens on"), errors(at)
            assert "AKL_APP_ALLOW_REMOTE=1" in errors(at)[0]
            assert not at.title and not at.text_input and not at.button, page


def test_explicit_opt_in_serves_the_pages_with_a_warning(env, monkeypatch):
    monkeypatch.setenv("AKL_APP_ALLOW_REMOTE", "1")
    with patch_config_options({"server.address": "0.0.0.0"}):
        for page in ("3_Compare_runs.py",):
            at = open_page(page)
            assert not errors(at) and at.title
            assert any("listens on address 0.0.0.0" in w.value for w in at.warning)


def test_a_loopback_address_needs_no_opt_in(env):
    with patch_config_options({"server.address": "127.0.0.1"}):
        at = open_page()
    assert not errors(at) and not at.warning and at.title


def test_live_page_refuses_folders_and_files_outside(env):
    at = open_page("1_Live_distillation.py")
    at.text_input(key="live_teacher").input(str(env["outside"] / "model")).run()
    assert errors(at) == [f"Cannot load the teacher: Teacher: {env['outside'] / 'model'} is "
                          "outside the folders this dashboard may open (the runs folder, the "
                          "model cache and $AKL_ALLOWED_DIRS); add its folder to "
                          "AKL_ALLOWED_DIRS to allow it"], errors(at)
    at.text_input(key="live_teacher").input(str(env["teacher"])).run()
    assert not errors(at)
    for key, value, what in [
        ("live_data", str(env["outside"] / "secret.jsonl"), "Data"),
        ("live_data", str(env["base"] / "runs" / "link" / "secret.jsonl"), "Data"),  # symlink
        ("live_data", "/etc/passwd", "Data"),
        ("live_student", str(env["outside"] / "model"), "Student"),
        ("live_student", "../../../../../../etc", "Student"),
    ]:
        at.text_input(key="live_data").input(str(env["data"]))
        at.text_input(key="live_student").input("truncate:1")
        at.text_input(key=key).input(value)
        at.button(key="live_run").click().run()
        assert not at.exception
        assert errors(at) == [f"Cannot start: {what}: {value} is outside the folders this "
                              "dashboard may open (the runs folder, the model cache and "
                              "$AKL_ALLOWED_DIRS); add its folder to AKL_ALLOWED_DIRS to allow "
                              "it"], errors(at)
        assert "live" not in at.session_state


def test_compare_and_inspector_refuse_folders_outside(env):
    at = open_page("3_Compare_runs.py")
    for root in ("/", str(env["outside"]), str(env["base"] / "runs" / "link")):
        at.text_input(key="cmp_root").input(root).run()
        assert not at.exception
        assert len(errors(at)) == 1 and "is outside the folders" in errors(at)[0], errors(at)
        assert not at.dataframe
    at = open_page("4_Token_inspector.py")
    at.selectbox(key="insp_student_choice").select("other...").run()
    at.text_input(key="insp_student_other").input(str(env["outside"] / "model")).run()
    assert any("Student: " in e and "is outside the folders" in e for e in errors(at))


def test_allowed_dirs_setting_opens_a_folder(env, monkeypatch):
    extra = env["base"] / "extra"
    extra.mkdir(exist_ok=True)
    monkeypatch.setenv("AKL_ALLOWED_DIRS", os.pathsep.join(["/nonexistent", str(extra)]))
    at = open_page("3_Compare_runs.py")
    at.text_input(key="cmp_root").input(str(extra)).run()
    assert not errors(at)
    assert any("No runs under" in i.value for i in at.info)
