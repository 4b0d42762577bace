"""Run folders: atomic writes, torn lines, list/load/compare, and a run killed mid-way."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from akl_core.lab import runs
from akl_core.lab.runs import (
    Run,
    atomic_write_json,
    compare,
    format_table,
    list_runs,
    load_run,
    read_jsonl,
    resolve_run,
    summarize,
)

ROOT = Path(__file__).resolve().parents[1]


def _step(i: int, loss: float) -> dict:
    return {"step": i, "loss": loss, "kd_loss": loss, "lm_loss": 2 * loss, "g_head": 0.1,
            "g_tail": 0.2, "tokens_per_second": 100.0, "elapsed": float(i)}


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path):
    path = tmp_path / "a" / "x.json"
    atomic_write_json(path, {"v": 1})
    atomic_write_json(path, {"v": 2, "nan": float("nan")})
    assert json.loads(path.read_text()) == {"v": 2, "nan": None}
    assert [p.name for p in path.parent.iterdir()] == ["x.json"]


def test_atomic_write_failure_keeps_old_file(tmp_path):
    path = tmp_path / "x.json"
    atomic_write_json(path, {"v": 1})
    with pytest.raises(TypeError):
        atomic_write_json(path, {"v": object()})
    assert json.loads(path.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_torn_last_line_is_ignored_but_corruption_is_not(tmp_path):
    path = tmp_path / "steps.jsonl"
    path.write_text('{"step": 1}\n{"step": 2}\n{"step": 3, "lo')
    assert read_jsonl(path) == [{"step": 1}, {"step": 2}]
    path.write_text('{"step": 1}\nxx\n{"step": 3}\n')
    with pytest.raises(ValueError, match="line 2"):
        read_jsonl(path)
    assert read_jsonl(tmp_path / "missing.jsonl") == []


def test_run_lifecycle_and_summary(tmp_path):
    with Run.create(tmp_path, loss="akl") as run:
        run.write_config({"loss": "akl", "steps": 3})
        assert load_run(run.path).summary["status"] == "running"
        assert load_run(run.path).status == "running"  # this process is alive
        for i, v in enumerate([3.0, 2.0, 1.0], start=1):
            run.append_step(_step(i, v))
        run.append_probe({"step": 3, "tokens": ["a"]})
        run.write_eval({"student": {"rougeL_teacher": 12.5, "distinct_2": 0.5}})
    data = load_run(run.path)
    assert run.name.endswith("-akl")
    assert data.status == "finished"
    assert [s["step"] for s in data.steps] == [1, 2, 3]
    assert data.probes == [{"step": 3, "tokens": ["a"]}]
    assert data.summary["steps_done"] == 3 and data.summary["final_loss"] == pytest.approx(2.0)
    assert data.summary["first_loss"] == 3.0
    assert data.eval["student"]["rougeL_teacher"] == 12.5


def test_failed_run_is_marked(tmp_path):
    with pytest.raises(RuntimeError):
        with Run.create(tmp_path, name="boom") as run:
            run.write_config({"loss": "fkl"})
            raise RuntimeError("bad thing")
    data = load_run(tmp_path / "boom")
    assert data.status == "failed" and "bad thing" in data.summary["error"]


def test_names_are_unique_and_safe(tmp_path):
    a = Run.create(tmp_path, name="my run/1")
    b = Run.create(tmp_path, name="my run/1")
    assert a.path.parent == tmp_path and a.name == "my-run-1" and b.name == "my-run-1-2"


def test_list_compare_and_table(tmp_path, monkeypatch):
    for name, loss, vals in [("r1", "fkl", [2.0, 1.0]), ("r2", "akl", [2.0, 0.5])]:
        with Run.create(tmp_path, name=name) as run:
            run.write_config({"loss": loss})
            for i, v in enumerate(vals, start=1):
                run.append_step(_step(i, v))
    (tmp_path / "not-a-run").mkdir()
    (tmp_path / "r3").mkdir()
    (tmp_path / "r3" / "config.json").write_text("{broken")  # listed as broken, not fatal
    found = list_runs(tmp_path)
    assert [r.name for r in found] == ["r1", "r2", "r3"] and found[2].broken
    rows = compare(found)
    assert [(r["run"], r["loss"], r["steps"], r["final_loss"]) for r in rows[:2]] == [
        ("r1", "fkl", 2, 1.5), ("r2", "akl", 2, 1.25)]
    assert rows[2]["status"] == "broken" and "config.json: not valid JSON" in rows[2]["problem"]
    rows = rows[:2]
    table = format_table(rows)
    assert "r2" in table and "akl" in table and "1.25" in table
    assert format_table([]) == "(no runs)"
    monkeypatch.setenv(runs.RUNS_ENV, str(tmp_path))
    assert [r.name for r in list_runs()] == ["r1", "r2", "r3"]
    assert resolve_run("r1") == tmp_path / "r1"
    with pytest.raises(ValueError, match="no run named"):
        resolve_run("zz")
    assert list_runs(tmp_path / "nothing") == []


def test_load_run_errors(tmp_path):
    with pytest.raises(ValueError, match="no run folder"):
        load_run(tmp_path / "missing")
    with pytest.raises(ValueError, match="not a run folder"):
        load_run(tmp_path)


def test_summarize_empty():
    assert summarize([]) == {"steps_done": 0}


def test_run_labels_are_unique_in_order(tmp_path):
    same = [runs.RunData(tmp_path / f"r{i}", config={"loss": "akl"}, steps=[{}, {}],
                         summary={"started": 0.0}) for i in range(3)]
    other = runs.RunData(tmp_path / "o", config={"loss": "fkl"}, steps=[{}],
                         summary={"started": 0.0})
    labels = runs.run_labels([same[0], other, same[1], same[2]])
    base = runs.run_label(same[0])
    assert base.startswith("akl - 2 steps - ")
    assert labels == [base, runs.run_label(other), f"{base} (2)", f"{base} (3)"]
    assert runs.numbered([]) == []


WRITER = textwrap.dedent(
    """
    import sys, time
    from akl_core.lab.runs import Run
    run = Run(sys.argv[1])
    run.write_config({"loss": "akl", "steps": 100000})
    i = 0
    while True:
        i += 1
        run.append_step({"step": i, "loss": 1.0 / i, "payload": "x" * 5000})
        if i % 3 == 0:
            run.append_probe({"step": i, "tokens": ["t"] * 500})
    """
)


def test_run_killed_mid_way_stays_readable(tmp_path):
    """SIGKILL a writer that appends as fast as it can; every finished step loads."""
    folder = tmp_path / "killed"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(folder)], env=env)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            steps = folder / "steps.jsonl"
            if steps.exists() and steps.read_bytes().count(b"\n") >= 20:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the writer produced no steps")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    data = load_run(folder)
    assert data.config == {"loss": "akl", "steps": 100000}
    assert len(data.steps) >= 20
    assert [s["step"] for s in data.steps] == list(range(1, len(data.steps) + 1))
    assert all(s["payload"] == "x" * 5000 for s in data.steps)
    assert data.status == "interrupted"
    assert compare([data])[0]["steps"] == len(data.steps)
