"""Real-browser test of the dashboard: `streamlit run` on a free local port, driven by
Playwright with the system Chromium (never `playwright install`). Runs a short toy experiment
and a short live distillation on small random models, checks that the charts and the per-token
view are in the DOM, and saves screenshots to test-artifacts/.

Skips with a reason when /usr/bin/chromium (apt-get install chromium) or playwright is missing.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"

pytestmark = pytest.mark.browser


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"streamlit did not answer at {url} within {timeout} s")


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    if not CHROMIUM.exists():
        pytest.skip("no system browser at /usr/bin/chromium (apt-get install -y chromium)")
    pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    from tests.small_lm import save_bundle, small_teacher

    base = tmp_path_factory.mktemp("browser")
    teacher_dir = save_bundle(small_teacher(), base / "teacher")
    port = _free_port()
    env = {
        **os.environ,
        "AKL_APP_TEACHER": str(teacher_dir),
        "AKL_APP_STUDENT": "truncate:1",
        "AKL_APP_RUNS_DIR": str(base / "runs"),
        "AKL_CACHE_DIR": str(base / "cache"),
    }
    cmd = [sys.executable, "-m", "streamlit", "run", str(ROOT / "app" / "Home.py"),
           "--server.address", "127.0.0.1", "--server.port", str(port),
           "--server.headless", "true", "--browser.gatherUsageStats", "false",
           "--server.fileWatcherType", "none"]
    log = open(base / "streamlit.log", "wb")  # noqa: SIM115 - closed in the finally below
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc)
        yield {"url": url, "runs": base / "runs"}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
        log.close()


@pytest.fixture(scope="module")
def browser_page(app_url):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1100})
            page.set_default_timeout(120_000)
            yield page
        finally:
            browser.close()


def _no_exception(page) -> None:
    assert page.locator('[data-testid="stException"]').count() == 0, (
        page.locator('[data-testid="stException"]').first.inner_text()
    )


def _set_number(page, label: str, value: int) -> None:
    box = page.get_by_label(label, exact=True)
    box.fill(str(value))
    box.press("Enter")
    page.wait_for_timeout(300)


def test_toy_lab_in_the_browser(app_url, browser_page):
    page = browser_page
    page.goto(f"{app_url['url']}/Toy_lab")
    charts = page.locator('[data-testid="stPlotlyChart"]')
    charts.nth(3).wait_for(state="visible")
    page.locator(".js-plotly-plot").first.wait_for(state="visible")
    assert charts.count() == 4
    assert "Teacher p and students q" in page.locator(".js-plotly-plot").first.inner_text()
    _no_exception(page)
    page.screenshot(path=str(ARTIFACTS / "toy_lab.png"), full_page=True)


def test_live_distillation_in_the_browser(app_url, browser_page):
    page = browser_page
    page.goto(f"{app_url['url']}/Live_distillation")
    page.get_by_test_id("stSidebar").get_by_role("button", name="Run", exact=True).wait_for(state="visible")
    _set_number(page, "Steps", 3)
    _set_number(page, "Batch size", 2)
    _set_number(page, "Max length (tokens)", 48)
    page.get_by_text("More settings").click()
    _set_number(page, "Probe every k steps (0 = never)", 1)
    _set_number(page, "Teacher response tokens", 12)
    _set_number(page, "Max examples (0 = all)", 4)
    page.get_by_test_id("stSidebar").get_by_role("button", name="Run", exact=True).click()
    page.get_by_text("Finished 3 steps").wait_for(state="visible")
    _no_exception(page)
    tokens = page.locator(".akl-token-view .akl-tok")
    tokens.first.wait_for(state="visible")
    assert tokens.count() > 0
    assert "w =" in (tokens.first.get_attribute("title") or "")
    charts = page.locator('[data-testid="stPlotlyChart"]')
    charts.nth(1).wait_for(state="visible")
    assert charts.count() == 2
    assert "Loss, head/tail gaps" in page.locator(".js-plotly-plot").first.inner_text()
    runs = [p for p in app_url["runs"].iterdir() if (p / "steps.jsonl").exists()]
    assert len(runs) == 1
    assert len((runs[0] / "steps.jsonl").read_text().splitlines()) == 3
    tokens.first.hover()
    page.screenshot(path=str(ARTIFACTS / "live_distillation.png"), full_page=True)
    charts.nth(1).scroll_into_view_if_needed()
    charts.nth(1).screenshot(path=str(ARTIFACTS / "live_topk.png"))
    # a long run: the page keeps updating while it trains, and Stop ends it early
    _set_number(page, "Steps", 5000)
    page.get_by_test_id("stSidebar").get_by_role("button", name="Run", exact=True).click()
    page.get_by_text(re.compile(r"step [1-9]\d* / 5000")).wait_for(state="visible")
    stop = page.get_by_test_id("stSidebar").get_by_role("button", name="Stop", exact=True)
    assert stop.is_enabled()
    stop.click()
    page.get_by_text("Stopped after").wait_for(state="visible")
    _no_exception(page)
    runs = sorted(p for p in app_url["runs"].iterdir() if (p / "steps.jsonl").exists())
    assert len(runs) == 2
    done = len((runs[-1] / "steps.jsonl").read_text().splitlines())
    assert 1 <= done < 5000
    assert f"Stopped after {done} steps" in page.get_by_text("Stopped after").inner_text()
