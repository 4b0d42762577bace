"""The loss benchmark's harness runs end to end (a smoke run on tiny random inputs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CASES = ["akl_core akl", "akl_core akl +stats", "fused akl"]


def test_quick_benchmark_runs_each_case_in_a_subprocess(tmp_path):
    out = tmp_path / "bench.md"
    cmd = [sys.executable, str(REPO / "benchmarks" / "bench_losses.py"), "--quick", "--data",
           "random", "--n", "32", "--v", "300", "--h", "16", "--conditions", "1",
           "--cache", str(tmp_path), "--out", str(out), "--cases", *CASES]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    text = out.read_text()
    assert "random inputs: N=32 positions, V=300, H=16" in text
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ")
            for line in text.splitlines() if line.startswith("| ")}
    for name in ["torch fkl", *CASES]:
        cells = rows[name]
        assert float(cells[1]) >= 0.0, cells  # the loss value
        float(cells[2]), float(cells[3].rstrip(" |"))  # time ratio and memory multiple
    assert rows["torch fkl"][2] == "1.00"
    # the same loss from logits and from hidden states (teacher logits = its hidden @ weight.T)
    assert abs(float(rows["akl_core akl"][1]) - float(rows["fused akl"][1])) <= 2e-4
    assert "[1 thread] return_stats on akl:" in text
    assert (tmp_path / "random_n32_v300_h16.safetensors").exists()
    # every case is timed interleaved with the baseline in its own process; the table's ratio
    # is that in-process ratio
    results = json.loads(out.with_suffix(".json").read_text())["1 thread"]
    assert "base_time" not in results["torch fkl"]
    for name in CASES:
        res = results[name]
        assert len(res["times"]) == 1 and res["base_time"] > 0
        assert abs(res["ratio"] - res["time"] / res["base_time"]) < 1e-12
        assert rows[name][2] == f"{res['ratio']:.2f}"
    # return_stats is also timed against the loss alone, in the same process
    stats = results["akl_core akl +stats"]
    assert stats["versus"] == "akl_core akl" and stats["versus_ratio"] > 0
    assert f"return_stats on akl: {stats['versus_ratio'] - 1:+.0%}" in text


def test_contention_jobs_start_and_stop():
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import bench_losses
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    jobs = bench_losses.start_contention(1)
    try:
        assert jobs[0].poll() is None  # looping
    finally:
        bench_losses.stop_contention(jobs)
    assert jobs[0].poll() is not None


def test_stats_passes_benchmark_sums_its_passes(tmp_path):
    out = tmp_path / "passes.md"
    cmd = [sys.executable, str(REPO / "benchmarks" / "bench_stats_passes.py"), "--data", "random",
           "--n", "256", "--v", "4096", "--rounds", "1", "--conditions", "1", "--cache",
           str(tmp_path), "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    text = out.read_text()
    assert "one chunk of 256 x 4096" in text and "### 1 thread" in text
    ms = {}
    for line in text.splitlines():
        if line.startswith("| ") and not line.startswith("| pass"):
            cells = [c.strip(" *") for c in line.strip("|").split("|")]
            if cells[1] and cells[1][0].isdigit():
                ms[cells[0]] = float(cells[1])
    for group in ("loss", "stats"):
        parts = [t for name, t in ms.items() if name.startswith(f"{group}: ")]
        assert len(parts) == 5
        assert abs(sum(parts) - ms[f"{group} passes"]) <= 0.005 * (len(parts) + 1)  # rounding
    assert "Floor: 6 separate reads at row-sum speed +" in text
