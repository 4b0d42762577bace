"""Time to first step and to finish of the dashboard's default race, driven in a real browser.

    python benchmarks/bench_app_race.py                  # quiet, then 2 matmul jobs beside
    python benchmarks/bench_app_race.py --conditions quiet --out race.json

Starts the real app (`streamlit run app/Home.py` on 127.0.0.1, the bundled teacher, its
teacher cache built beforehand so nothing is built while timed, runs into a temporary folder),
opens the Live distillation page in Chromium (/usr/bin/chromium through playwright), waits for
the teacher to load and presses Run on the default race (the quick lecture preset: FKL, RKL,
AKL, 10 steps of 2 x 64 tokens, automatic thread count). Per condition it measures, from the
click as the browser sees it (the page polls twice a second: up to 0.5 s is poll latency):
  first point: the first curve point drawn (the first racer's step 1; after that the curves
               update once per lockstep round);
  first step:  "step 1 / N" (every racer has done step 1);
  finish:      "Finished N steps".
Conditions, in ONE invocation and one browser session: quiet; then while `--contention` other
processes each loop a 2-thread torch matmul (bench_losses.py's job). Targets (issue 11):
first step <= 5 s and finish <= 60 s quiet; <= 2x those under contention. The machine's load
average is printed with each condition: on a shared machine the figures are noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(HERE)]
from tests.app_server import free_port, streamlit_command, wait_healthy  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
TARGETS = {"quiet": (5.0, 60.0), "contention": (10.0, 120.0)}


def warm_cache(steps: int) -> None:
    """Build (once) the teacher cache of the page's default race settings, outside the timing."""
    from akl_core.lab import teacher_cache
    from akl_core.lab.distill import DistillConfig
    from akl_core.lab.models import load_teacher

    teacher = load_teacher(None, device="cpu")
    config = DistillConfig(steps=steps, batch_size=2, max_length=64)
    print(f"teacher cache: {teacher_cache.ensure(teacher, config)}", flush=True)


def one_race(page, steps: int, timeout_s: float) -> dict:
    """Press Run; the times from the click to the first point, step 1, and the finish."""
    sidebar = page.get_by_test_id("stSidebar")
    run = sidebar.get_by_role("button", name="Run", exact=True)
    run.wait_for(state="visible")
    page.wait_for_timeout(500)
    t0 = time.perf_counter()
    run.click()
    out: dict = {}
    page.get_by_text(re.compile(r"^Running: Race")).first.wait_for(state="visible",
                                                                   timeout=timeout_s * 1000)
    # the empty panels are drawn before Run: wait for a plotted point in them
    page.locator(".js-plotly-plot").first.locator(".scatterlayer .point").first.wait_for(
        state="attached", timeout=timeout_s * 1000)
    out["first_point_s"] = time.perf_counter() - t0
    page.get_by_text(re.compile(rf"step [1-9]\d* / {steps}")).first.wait_for(
        state="visible", timeout=timeout_s * 1000)
    out["first_step_s"] = time.perf_counter() - t0
    page.get_by_text(f"Finished {steps} steps").wait_for(state="visible",
                                                         timeout=timeout_s * 1000)
    out["finish_s"] = time.perf_counter() - t0
    caption = page.get_by_text(re.compile(r"first step after")).first.inner_text()
    m = re.search(r"first step after ([\d.]+) s", caption)
    out["server_first_record_s"] = float(m.group(1)) if m else None
    m = re.search(r"(\d+) torch thread", caption)
    out["threads"] = int(m.group(1)) if m else None
    status = page.get_by_text(re.compile(r"s per step")).first.inner_text()
    m = re.search(r"([\d.]+) s per step", status)
    out["s_per_step"] = float(m.group(1)) if m else None
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--conditions", default="quiet,contention",
                        help="comma-separated: quiet, contention (default both, in order)")
    parser.add_argument("--contention", type=int, default=2, help="matmul jobs beside")
    parser.add_argument("--steps", type=int, default=10, help="the page's default steps")
    parser.add_argument("--timeout", type=float, default=400.0, help="per race, seconds")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument("--screenshots", type=Path, help="a folder for a screenshot per race")
    args = parser.parse_args()
    if not CHROMIUM.exists():
        print("no /usr/bin/chromium (apt-get install -y chromium)", file=sys.stderr)
        return 2
    from bench_losses import start_contention, stop_contention
    from playwright.sync_api import sync_playwright

    warm_cache(args.steps)
    runs = Path(tempfile.mkdtemp(prefix="akl-bench-race-"))
    port = free_port()
    env = {**os.environ, "AKL_APP_RUNS_DIR": str(runs), "PYTHONPATH": str(ROOT)}
    for key in ("AKL_APP_TEACHER", "AKL_APP_STUDENT"):
        env.pop(key, None)
    cmd = streamlit_command(port)
    log = open(runs / "streamlit.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    results = []
    try:
        wait_healthy(url, proc, timeout=120.0)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM),
                                        args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            page.set_default_timeout(args.timeout * 1000)
            page.goto(f"{url}/Live_distillation")
            page.get_by_text(re.compile(r"layers, .* parameters")).wait_for(state="visible")
            for cond in [c.strip() for c in args.conditions.split(",") if c.strip()]:
                if cond not in TARGETS:
                    raise SystemExit(f"unknown condition {cond!r}")
                jobs = start_contention(args.contention) if cond == "contention" else []
                try:
                    time.sleep(2.0 if jobs else 0.0)
                    load = os.getloadavg()
                    r = one_race(page, args.steps, args.timeout)
                finally:
                    stop_contention(jobs)
                first_t, finish_t = TARGETS[cond]
                r.update(condition=cond, loadavg_before=[round(x, 2) for x in load],
                         jobs=len(jobs), first_ok=r["first_step_s"] <= first_t,
                         finish_ok=r["finish_s"] <= finish_t)
                results.append(r)
                print(json.dumps(r), flush=True)
                if args.screenshots:
                    args.screenshots.mkdir(parents=True, exist_ok=True)
                    page.screenshot(path=str(args.screenshots / f"race_{cond}.png"))
                time.sleep(3.0)
            browser.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
    print("\n| condition | load before | threads | first point | first step (all racers) | "
          "finish | s per step | targets |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        first_t, finish_t = TARGETS[r["condition"]]
        name = r["condition"] + (f" ({r['jobs']} x 2-thread matmul)" if r["jobs"] else "")
        ok = ("met" if r["first_ok"] and r["finish_ok"] else
              f"missed (<= {first_t:g} s / <= {finish_t:g} s)")
        print(f"| {name} | {r['loadavg_before'][0]} | {r['threads']} | "
              f"{r['first_point_s']:.1f} s | {r['first_step_s']:.1f} s | {r['finish_s']:.1f} s "
              f"| {r['s_per_step']} | {ok} |")
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
    print(f"run folders: {runs}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
