"""Real-browser test of the dashboard: `streamlit run` on a free local port, driven by
Playwright with the system Chromium (never `playwright install`). Runs a short toy experiment
and a short live distillation on small random models, checks that the charts and the per-token
view are in the DOM, runs the default race of the Live page (FKL, RKL, AKL) and saves
screenshots to $AKL_TEST_ARTIFACTS (default test-artifacts/); the paths are printed.

Skips with a reason when /usr/bin/chromium (apt-get install chromium) or playwright is missing.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.app_server import free_port, streamlit_command, wait_healthy

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(os.environ.get("AKL_TEST_ARTIFACTS") or ROOT / "test-artifacts")

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    if not CHROMIUM.exists():
        pytest.skip("no system browser at /usr/bin/chromium (apt-get install -y chromium)")
    pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    from tests.small_lm import save_bundle, small_teacher

    base = tmp_path_factory.mktemp("browser")
    teacher_dir = save_bundle(small_teacher(), base / "teacher")
    port = free_port()
    env = {
        **os.environ,
        "AKL_APP_TEACHER": str(teacher_dir),
        "AKL_APP_STUDENT": "truncate:1",
        "AKL_APP_RUNS_DIR": str(base / "runs"),
        "AKL_CACHE_DIR": str(base / "cache"),
    }
    cmd = streamlit_command(port)
    log = open(base / "streamlit.log", "wb")  # noqa: SIM115 - closed in the finally below
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc)
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
    box = _single(page, label)
    box.fill(str(value))
    box.press("Enter")
    page.wait_for_timeout(300)


def _token_view(page):
    """The clickable token view (a plotly chart titled 'Tokens coloured by ...')."""
    return page.locator('[data-testid="stPlotlyChart"]').filter(has_text="Tokens coloured by")


def _token_cells(page):
    """The token view's cells: the bars of its first trace, one per token."""
    return _token_view(page).locator(".barlayer .trace").first.locator("g.point")


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
    page.get_by_test_id("stSidebar").get_by_text("Single run").click()
    page.wait_for_timeout(500)
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
    tokens = _token_cells(page)
    tokens.first.wait_for(state="visible")
    assert tokens.count() > 0
    charts = page.locator('[data-testid="stPlotlyChart"]')
    charts.nth(2).wait_for(state="visible")
    assert charts.count() == 3  # curves, token view, top-k bars
    assert "Training loss, head/tail gaps" in page.locator(".js-plotly-plot").first.inner_text()
    runs = [p for p in app_url["runs"].iterdir() if (p / "steps.jsonl").exists()]
    assert len(runs) == 1
    assert len((runs[0] / "steps.jsonl").read_text().splitlines()) == 3
    tokens.first.hover(force=True)  # plotly's drag layer takes the pointer: a real hover
    page.screenshot(path=str(ARTIFACTS / "live_distillation.png"), full_page=True)
    charts.nth(2).scroll_into_view_if_needed()
    charts.nth(2).screenshot(path=str(ARTIFACTS / "live_topk.png"))
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


def _shot(page, name: str, **kw) -> None:
    path = ARTIFACTS / name
    page.screenshot(path=str(path), **kw)
    print(f"screenshot: {path}")


def _single(page, label: str):
    """The one input labelled `label`, once a rerun's stale copy of the sidebar is gone."""
    field = page.get_by_label(label, exact=True)
    for _ in range(150):
        if field.count() == 1:
            return field
        page.wait_for_timeout(200)
    raise AssertionError(f"{field.count()} inputs labelled {label!r} after 30 s")


def test_live_race_in_the_browser(app_url, browser_page):
    page = browser_page
    page.set_viewport_size({"width": 1280, "height": 720})
    # in-app navigation (same session): away to the Toy lab and back
    nav = page.get_by_test_id("stSidebarNav")
    nav.get_by_text("Toy lab").click()
    page.locator('[data-testid="stPlotlyChart"]').first.wait_for(state="visible")
    nav.get_by_text("Live distillation").click()
    for _ in range(100):  # until the Toy lab's elements are gone
        if page.get_by_label("Max examples (0 = all)", exact=True).count() == 1 and \
                page.get_by_label("Steps", exact=True).count() == 1:
            break
        page.wait_for_timeout(200)
    sidebar = page.get_by_test_id("stSidebar")
    run = sidebar.get_by_role("button", name="Run", exact=True)
    run.wait_for(state="visible")
    sidebar.get_by_text("Race", exact=True).click()
    page.wait_for_timeout(1000)
    run.wait_for(state="visible")
    # Run sits at the top: visible without scrolling on a 1280 x 720 screen
    box = run.bounding_box()
    assert box is not None and box["y"] + box["height"] < 720
    _shot(page, "live_race_start_1280x720.png")
    # the settings are kept from the single run above
    assert _single(page, "Max examples (0 = all)").input_value() == "4"
    assert _single(page, "Probe every k steps (0 = never)").input_value() == "1"
    _set_number(page, "Steps", 3)
    for loss in ("fkl", "rkl", "akl"):
        assert sidebar.get_by_text(loss, exact=True).count() >= 1
    page.set_viewport_size({"width": 1500, "height": 1100})
    run.click()
    page.get_by_text("Finished 3 steps").wait_for(state="visible")
    _no_exception(page)
    assert page.get_by_text(re.compile(r"Last run: Race: fkl vs rkl vs akl")).count() == 1
    assert page.get_by_text(re.compile(r"s per step")).count() >= 1
    charts = page.locator('[data-testid="stPlotlyChart"]')
    charts.nth(3).wait_for(state="visible")
    assert charts.count() == 4  # common curves, own losses, token view, top-k bars
    text = page.locator(".js-plotly-plot").first.inner_text()
    assert "Common metrics on one fixed held-out batch" in text
    for name in ("fkl", "rkl", "akl"):
        assert name in text
    tokens = _token_cells(page)
    tokens.first.wait_for(state="visible")
    # a click on a token picks it: the top-k bars follow
    page.get_by_text(re.compile(r"fkl, position 0 ")).first.wait_for(state="visible")
    tokens.nth(2).click(force=True)  # at its centre, through plotly's drag layer
    page.get_by_text(re.compile(r"fkl, position 2 ")).first.wait_for(state="visible")
    _no_exception(page)
    strip_fkl = _token_view(page).inner_html()
    _shot(page, "live_race_finished.png", full_page=True)
    # the token view switches racers
    combo = page.get_by_role("combobox", name="Racer")
    combo.click()
    combo.fill("rkl")
    combo.press("Enter")
    page.wait_for_timeout(1500)
    _no_exception(page)
    assert _token_view(page).inner_html() != strip_fkl
    charts.first.scroll_into_view_if_needed()
    charts.first.screenshot(path=str(ARTIFACTS / "live_race_curves.png"))
    print(f"screenshot: {ARTIFACTS / 'live_race_curves.png'}")
    runs = [p for p in app_url["runs"].iterdir() if p.name.startswith("race-")]
    assert len(runs) == 3
    assert all(len((p / "steps.jsonl").read_text().splitlines()) == 3 for p in runs)
