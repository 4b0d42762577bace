"""Issue 12, items 2, 3, 4 and 8 (run folders): damaged runs are listed as broken with the file
and the reason and never hide healthy ones (runs.load_run, `akl runs`, `akl runs --json`, the
Compare runs page), Run.create is atomic under concurrency, a reused PID is not "running",
empty run folders are removed; plus a bounded property-style fuzz test over damaged files."""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import shutil
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from akl_core.lab import cli, runs
from akl_core.lab.runs import Run, compare, list_runs, load_run

APP = Path(__file__).resolve().parents[1] / "app" / "Home.py"
FILES = ("config.json", "steps.jsonl", "probes.jsonl", "eval.json", "summary.json")


def make_run(root: Path, name: str, loss: str = "akl", steps: int = 3) -> Path:
    """A finished run with every file: config, steps, probes, eval (with generations)."""
    with Run.create(root, name=name) as run:
        run.write_config({"loss": loss, "steps": steps, "teacher": None})
        for i in range(1, steps + 1):
            run.append_step({"step": i, "loss": 1.0 / i, "kd_loss": 1.0 / i, "g_head": 0.1,
                             "g_tail": 0.2, "w": 0.3, "tokens_per_second": 50.0})
            run.append_probe({"step": i, "tokens": ["a", "b"], "w": [0.1, 0.2]})
        run.write_eval({"student": {"rougeL_teacher": 10.0, "distinct_2": 0.5},
                        "teacher": {"rougeL_gold": 20.0},
                        "generations": [{"instruction": "Say hi", "context": "",
                                         "teacher": "hi", "student": "hey", "gold": "hello"}]})
    return run.path


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main(list(argv))
        except SystemExit as e:
            code = e.code
    return code, out.getvalue(), err.getvalue()


def strict_json(text: str):
    def no_constant(token):
        raise AssertionError(f"bare {token} in JSON output")

    return json.loads(text, parse_constant=no_constant)


# --------------------------------------------------------------- item 2: damaged run folders

DAMAGE = [
    ("config.json", "[]", "config.json: expected a JSON object, found a list"),
    ("config.json", "{broken", "config.json: not valid JSON"),
    ("summary.json", "5", "summary.json: expected a JSON object, found a number"),
    ("summary.json", '{"status": 5, "steps_done": "many"}', "summary.json: 'status' is a number"),
    ("eval.json", '"x"', "eval.json: expected a JSON object, found a string"),
    ("eval.json", '{"student": [1], "generations": 3}', "eval.json: 'student' is a list"),
    ("eval.json", "", "eval.json: not valid JSON"),
    ("steps.jsonl", '{"step": 1, "loss": 1.0}\n[]\n{"step": 3, "loss": 0.5}\n',
     "steps.jsonl: line 2 is a list, not a JSON object"),
    ("steps.jsonl", '{"step": 1}\n{"ste\n{"step": 3}\n', "steps.jsonl: line 2 is not valid JSON"),
    ("steps.jsonl", '{"loss": 1.0}\n', "steps.jsonl: line 1 has no valid 'step'"),
    ("probes.jsonl", "7\n8\n", "probes.jsonl: line 1 is a number, not a JSON object"),
]


@pytest.mark.parametrize(("file", "content", "reason"), DAMAGE)
def test_damaged_run_is_listed_as_broken_and_hides_nothing(tmp_path, file, content, reason):
    for name in ("a-healthy", "b-damaged", "c-healthy"):
        make_run(tmp_path, name)
    (tmp_path / "b-damaged" / file).write_text(content)

    data = load_run(tmp_path / "b-damaged")  # never raises on a damaged run
    assert data.broken and reason in "; ".join(f"{f}: {w}" for f, w in data.problems.items())
    found = list_runs(tmp_path)
    assert [r.name for r in found] == ["a-healthy", "b-damaged", "c-healthy"]
    assert [r.broken for r in found] == [False, True, False]
    rows = compare(found)
    assert [r["status"] for r in rows] == ["finished", "broken", "finished"]
    assert reason in rows[1]["problem"] and rows[0]["problem"] is None

    code, out, err = run_cli("runs", "--runs-dir", str(tmp_path))
    assert code == 0, err
    assert "a-healthy" in out and "c-healthy" in out and "broken" in out
    assert f"broken run b-damaged: {reason}" in out
    code, out, err = run_cli("runs", "--runs-dir", str(tmp_path), "--json")
    assert code == 0, err
    listed = strict_json(out)
    assert [r["run"] for r in listed] == ["a-healthy", "b-damaged", "c-healthy"]
    assert reason in listed[1]["problem"]


def test_torn_last_line_of_a_killed_run_is_not_a_problem(tmp_path):
    path = make_run(tmp_path, "killed")
    with open(path / "steps.jsonl", "a") as f:
        f.write('{"step": 4, "lo')
    data = load_run(path)
    assert not data.broken and [s["step"] for s in data.steps] == [1, 2, 3]


def test_nan_and_infinity_never_reach_json_output(tmp_path):
    path = make_run(tmp_path, "nan")
    (path / "summary.json").write_text('{"status": "finished", "steps_done": 4, '
                                       '"final_loss": NaN, "final_g_head": Infinity}')
    with open(path / "steps.jsonl", "a") as f:
        f.write('{"step": 4, "loss": 1e999, "g_head": -Infinity}\n')
    code, out, err = run_cli("runs", "--runs-dir", str(tmp_path), "--json")
    assert code == 0, err
    row = strict_json(out)[0]
    assert row["final_loss"] is None and row["g_head"] is None and row["steps"] == 4


def test_akl_runs_json_is_strict_even_for_infinite_means(tmp_path):
    """The summary is recomputed from the steps (4 on disk, 3 in summary.json): a mean of two
    1e308 losses overflows to inf, which must be printed as null."""
    path = make_run(tmp_path, "overflow", steps=2)
    (path / "steps.jsonl").write_text('{"step": 1, "loss": 1e308}\n{"step": 2, "loss": 1e308}\n'
                                      '{"step": 3, "loss": 1e308}\n')
    code, out, _ = run_cli("runs", "--runs-dir", str(tmp_path), "--json")
    assert code == 0 and strict_json(out)[0]["final_loss"] is None


# ---------------------------------------------------------------- item 3: atomic Run.create


def test_concurrent_creations_with_one_name_never_collide(tmp_path):
    n = 64
    barrier = threading.Barrier(n)
    made, errors = [], []

    def create():
        barrier.wait()
        try:
            made.append(Run.create(tmp_path, loss="akl").path)
        except Exception as e:  # noqa: BLE001 - collected for the assertion
            errors.append(repr(e))

    threads = [threading.Thread(target=create) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors[:3]
    assert len(made) == n == len(set(made)) == len(list(tmp_path.iterdir()))


def test_a_folder_made_between_check_and_mkdir_is_skipped(tmp_path, monkeypatch):
    """Deterministic form of the race: another session creates the default-named folder just
    before this one's mkdir. Run.create must take the next free name, not raise."""
    real_mkdir = Path.mkdir
    raced = []

    def racing_mkdir(self, *args, **kwargs):
        if self.parent == tmp_path and not raced:
            raced.append(self.name)
            os.mkdir(self)  # the other session wins
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", racing_mkdir)
    run = Run.create(tmp_path, name="same")
    assert raced == ["same"] and run.name == "same-2"


def test_run_name_too_long_and_unwritable_root_are_one_line_errors(tmp_path):
    with pytest.raises(ValueError, match=r"run name is too long: 300 characters \(at most 200\)"):
        Run.create(tmp_path, name="x" * 300)
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ValueError, match="cannot create the runs folder"):
        Run.create(blocker / "sub", loss="akl")


# ---------------------------------------------------------------------- item 4: empty folders


def test_discard_if_empty_removes_only_runs_without_steps(tmp_path):
    empty = Run.create(tmp_path, name="empty")
    empty.write_config({"loss": "akl"})
    assert empty.discard_if_empty() and not empty.path.exists()
    kept = Run.create(tmp_path, name="kept")
    kept.write_config({"loss": "akl"})
    kept.append_step({"step": 1, "loss": 1.0})
    assert not kept.discard_if_empty() and kept.path.is_dir()


# -------------------------------------------------------------------------- item 8: PID reuse


def test_a_reused_pid_is_not_a_running_run(tmp_path):
    run = Run.create(tmp_path, name="live")
    run.write_config({"loss": "akl"})
    assert load_run(run.path).status == "running"  # this very process
    assert load_run(run.path).summary["pid_start"] == runs.process_start(os.getpid())
    # same PID, different start time: another process reused the PID of a killed writer
    summary = json.loads((run.path / "summary.json").read_text())
    summary["pid_start"] = "proc:1"
    (run.path / "summary.json").write_text(json.dumps(summary))
    assert load_run(run.path).status == "interrupted"
    # runs written before the start time was recorded keep the PID-only check
    del summary["pid_start"]
    (run.path / "summary.json").write_text(json.dumps(summary))
    assert load_run(run.path).status == "running"


# ------------------------------------------------------------------------ the Compare runs page


@pytest.fixture(scope="module")
def compare_page(tmp_path_factory):
    """The Compare runs page (AppTest) pointed at a work folder the fuzz test rewrites."""
    pytest.importorskip("streamlit")
    from streamlit.testing.v1 import AppTest

    base = tmp_path_factory.mktemp("fuzz")
    pristine, work = base / "pristine", base / "work"
    for name in ("r1-fkl", "r2-akl", "r3-rkl"):
        make_run(pristine, name)
    shutil.copytree(pristine, work)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AKL_ALLOWED_DIRS", str(base))
        mp.setenv("AKL_CACHE_DIR", str(base / "cache"))
        at = AppTest.from_file(str(APP), default_timeout=60).run()
        at.switch_page("pages/3_Compare_runs.py").run()
        at.text_input(key="cmp_root").input(str(work)).run()
        assert not at.exception, at.exception
        yield {"at": at, "pristine": pristine, "work": work,
               "healthy": {r.name: r for r in list_runs(pristine)}}


def page_rows(at) -> list[dict]:
    assert not at.exception, at.exception
    assert not [e.value for e in at.error], [e.value for e in at.error]
    return at.dataframe[0].value.to_dict("records")


@pytest.mark.parametrize(("file", "content", "reason"), DAMAGE[::3])
def test_compare_page_shows_broken_runs_and_every_other_run(compare_page, file, content, reason):
    at, work, pristine = compare_page["at"], compare_page["work"], compare_page["pristine"]
    shutil.rmtree(work)
    shutil.copytree(pristine, work)
    (work / "r2-akl" / file).write_text(content)
    at.run()
    rows = page_rows(at)
    assert [r["folder"] for r in rows] == ["r1-fkl", "r2-akl", "r3-rkl"]
    assert rows[1]["status"] == "broken" and reason in rows[1]["problem"]
    assert any(f"Broken run r2-akl: {reason}" in w.value for w in at.warning)


# ----------------------------------------------------------------------- property-style fuzz


def _damage(data: bytes, kind: str, at: float, payload: bytes) -> bytes:
    cut = int(at * len(data))
    if kind == "truncate":
        return data[:cut]
    if kind == "overwrite":
        return data[:cut] + payload + data[cut + len(payload):]
    if kind == "insert":
        return data[:cut] + payload + data[cut:]
    if kind == "line":  # one whole line becomes the payload
        lines = data.split(b"\n")
        lines[int(at * (len(lines) - 1))] = payload
        return b"\n".join(lines)
    return payload  # "replace": the whole file becomes the payload


STRUCTURED = st.sampled_from([b"[]", b"5", b'"x"', b"null", b"{", b"NaN", b'{"step": "1"}',
                              b"\n[]\n", b"\xff\xfe", b'{"status": 5}', b"\x00", b"1e999",
                              b'{"student": [1], "generations": [{"x": 1}]}',
                              b'  "status": 5,', b'  "steps_done": "3",', b'  "final_loss": [],',
                              b'  "loss": {"a": 1},', b'  "student": "x",'])
PAYLOADS = st.one_of(STRUCTURED, STRUCTURED, st.binary(min_size=1, max_size=12))
DAMAGES = st.tuples(
    st.sampled_from(["r1-fkl", "r2-akl", "r3-rkl"]), st.sampled_from(FILES),
    st.sampled_from(["truncate", "overwrite", "insert", "line", "replace"]),
    st.floats(0.0, 1.0), PAYLOADS,
)


def _damaged_copy(pristine: Path, work: Path, damages) -> set[str]:
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(pristine, work)
    for name, file, kind, where, payload in damages:
        path = work / name / file
        path.write_bytes(_damage(path.read_bytes(), kind, where, payload))
    return {name for name, *_ in damages}


FUZZ = settings(deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@settings(FUZZ, max_examples=60)
@given(damages=st.lists(DAMAGES, min_size=1, max_size=10))
def test_fuzz_damaged_files_never_raise_or_hide_a_healthy_run(compare_page, damages):
    """Random truncation / corruption of the files of a few run folders: runs.load_run,
    list_runs, compare and `akl runs` (table and --json) never raise, list every run, and
    report every untouched run exactly as before."""
    work = compare_page["pristine"].parent / "work_cli"
    healthy = compare_page["healthy"]
    touched = _damaged_copy(compare_page["pristine"], work, damages)
    names = sorted(healthy)

    for name in names:
        load_run(work / name)  # never raises
    found = list_runs(work)
    assert [r.name for r in found] == names
    for r in found:
        if r.name not in touched:
            h = healthy[r.name]
            assert not r.broken
            assert (r.status, r.steps, r.probes, r.eval, r.config) == \
                (h.status, h.steps, h.probes, h.eval, h.config)
        else:
            assert set(r.problems) <= set(FILES), r.problems
    rows = compare(found)
    assert [r["run"] for r in rows] == names
    for row in rows:  # what a table / dataframe needs: one type per column
        assert isinstance(row["status"], str) and isinstance(row["steps"], int)
        assert all(isinstance(row[k], (str, type(None))) for k in ("loss", "problem"))
        assert all(row[k] is None or (isinstance(row[k], (int, float))
                                      and math.isfinite(row[k]))
                   for k in ("final_loss", "g_head", "g_tail", "rougeL_teacher", "rougeL_gold",
                             "distinct_2"))

    code, out, err = run_cli("runs", "--runs-dir", str(work))
    assert code == 0 and "Traceback" not in err
    assert all(name in out for name in names)
    code, out, err = run_cli("runs", "--runs-dir", str(work), "--json")
    assert code == 0, err
    assert [r["run"] for r in strict_json(out)] == names


@settings(FUZZ, max_examples=12)
@given(damages=st.lists(DAMAGES, min_size=1, max_size=10))
def test_fuzz_compare_page_never_fails_or_hides_a_run(compare_page, damages):
    """The same damage on the Compare runs page (AppTest): no exception, no error line, a row
    for every run, untouched runs not marked broken."""
    touched = _damaged_copy(compare_page["pristine"], compare_page["work"], damages)
    compare_page["at"].run()
    rows = page_rows(compare_page["at"])
    assert [r["folder"] for r in rows] == sorted(compare_page["healthy"])
    assert all(r["status"] != "broken" for r in rows if r["folder"] not in touched)
