"""The published notebook results in docs/notebooks/ (written by `make notebooks`): present,
made at full settings from the notebooks as they are now (source hash), offline, consistent
with their verdict JSON; and, in headless Chromium with the network cut off, every figure
renders.

A failure of test_exports_match_the_notebooks means a notebook changed after its export: run
`make notebooks` (long: it executes all three at full settings) and commit docs/notebooks/.
"""

from __future__ import annotations

import html
import json
import os
import re
from pathlib import Path

import pytest

from akl_core.lab import publish

# AKL_EXPORT_DIR points the tests at another export folder (e.g. a trial `--small --out` run).
DOCS = Path(os.environ.get("AKL_EXPORT_DIR", publish.EXPORT_DIR))
CHROMIUM = Path("/usr/bin/chromium")


def _record(stem: str) -> dict:
    return json.loads((DOCS / f"{stem}.verdicts.json").read_text(encoding="utf-8"))


def test_exports_match_the_notebooks():
    problems = publish.stale_exports(DOCS)
    published = {k: v for k, v in problems.items() if v != "no export"}
    assert not published, f"stale exports (run `make notebooks`): {published}"
    missing = sorted(set(problems) - set(published))
    if missing:  # said, not hidden: a notebook whose full run has not been published yet
        pytest.skip(f"not published yet (run `make notebooks`): {missing}")


# Only the notebooks whose full-setting export has been published (all three once it is).
STEMS = [s for s in publish.NOTEBOOKS if (DOCS / f"{s}.html").exists()]


@pytest.mark.parametrize("stem", STEMS)
def test_export_is_offline_and_carries_its_verdicts(stem):
    page = DOCS / f"{stem}.html"
    if not page.exists():
        pytest.fail(f"{page} is missing: run `make notebooks`")
    text = page.read_text(encoding="utf-8")
    record = _record(stem)
    for pattern in (r'<script[^>]+src=["\']?(https?:)?//', r"<link[^>]+href=[\"']?https?://",
                    r"import[^;]*from\s*[\"']https?://"):
        assert not re.search(pattern, text), f"{stem}: network reference {pattern}"
    assert record["verdicts"], f"{stem}: no verdicts"
    keys = [v["key"] for v in record["verdicts"]]
    assert len(keys) == len(set(keys))
    plain = html.unescape(text)
    for v in record["verdicts"]:
        assert v["status"] in ("holds", "fails", "mixed")
        assert f"[{v['status'].upper()}] {v['claim']}: {v['reading']}" in plain, v["key"]
    assert int(re.search(r'name="akl-figures" content="(\d+)"', text).group(1)) >= 4


@pytest.mark.browser
@pytest.mark.parametrize("stem", STEMS)
def test_export_renders_its_figures_offline_in_chromium(stem, tmp_path):
    if not CHROMIUM.exists():
        pytest.skip("no system browser at /usr/bin/chromium (apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="the playwright package is not installed")
    page_path = DOCS / f"{stem}.html"
    if not page_path.exists():
        pytest.fail(f"{page_path} is missing: run `make notebooks`")
    expected = int(re.search(r'name="akl-figures" content="(\d+)"',
                             page_path.read_text(encoding="utf-8")).group(1))
    blocked: list[str] = []
    errors: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(60_000)

            def route(r):
                if r.request.url.startswith("file://"):
                    r.continue_()
                else:
                    blocked.append(r.request.url)
                    r.abort()

            page.route("**/*", route)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(page_path.as_uri())
            page.wait_for_function(
                f"document.querySelectorAll('.akl-figure .js-plotly-plot .main-svg').length "
                f">= {expected}")
            rendered = page.locator(".akl-figure .js-plotly-plot").count()
            with_data = page.evaluate(
                "Array.from(document.querySelectorAll('.akl-figure .js-plotly-plot'))"
                ".filter(d => d.data && d.data.length > 0 && d.querySelector('.main-svg'))"
                ".length")
            titles = page.evaluate("Array.from(document.querySelectorAll('.akl-figure .gtitle'))"
                                   ".map(e => e.textContent || '')")
            page.screenshot(path=str(tmp_path / f"{stem}.png"))
        finally:
            browser.close()
    assert rendered == expected and with_data == expected
    assert len([t for t in titles if t.strip()]) >= expected // 2
    assert not blocked, f"the page tried the network: {blocked[:3]}"
    assert not errors, errors[:3]
