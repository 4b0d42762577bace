"""The `akl` command end to end, on tiny model folders (fast) and a killed subprocess."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from akl_core.lab import cli
from akl_core.lab.runs import load_run
from tests import small_lm

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("AKL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("AKL_RUNS_DIR", raising=False)


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    """Saved tiny teacher / student folders and a small JSONL data file."""
    base = tmp_path_factory.mktemp("models")
    teacher = small_lm.small_teacher()
    small_lm.save_bundle(teacher, base / "teacher")
    small_lm.save_bundle(small_lm.small_student(teacher), base / "student")
    small_lm.write_jsonl(base / "data.jsonl", small_lm.examples(6))
    return base


def _call(argv, capsys) -> tuple[int, str, str]:
    try:
        code = cli.main(argv)
    except SystemExit as e:  # argparse: --help (0) and usage errors (2)
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("no subcommands")


def test_help_documents_every_option(capsys):
    code, out, _ = _call(["--help"], capsys)
    assert code == 0
    for name in ("distill", "eval", "runs", "toy"):
        assert name in out
    for name, sub in _subparsers(cli.build_parser()).items():
        code, out, _ = _call([name, "--help"], capsys)
        assert code == 0
        flat = " ".join(out.split())
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help and action.help != argparse.SUPPRESS, (name, action.dest)
            for opt in action.option_strings:
                assert opt in out, (name, opt)
            assert " ".join(action.help.split())[:30] in flat, (name, action.dest)


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["distill", "--steps", "0"], "steps"),
        (["distill", "--loss", "nope"], "loss"),
        (["distill", "--param", "mu=3"], "mu"),
        (["distill", "--param", "mu"], "KEY=VALUE"),
        (["distill", "--kd-ratio", "2"], "kd_ratio"),
        (["distill", "--data", "no/such.jsonl"], "no/such.jsonl"),
        (["distill", "--bogus"], "--bogus"),
        (["distill", "--steps", "x"], "invalid int"),
        (["eval", "no-such-run"], "no run named"),
        (["toy", "nope"], "nope"),
        (["toy", "fig2_bimodal", "--losses", "fkl,zz", "--steps", "2"], "zz"),
        (["toy", "fig2_bimodal", "--at", "5", "--steps", "2"], "--at"),
    ],
)
def test_errors_are_one_line_exit_2(argv, fragment, capsys, tmp_path):
    code, out, err = _call(argv + (["--runs-dir", str(tmp_path)] if argv[0] == "eval" else []),
                           capsys)
    assert code == 2
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("akl") and "error" in lines[0]
    assert fragment in lines[0]
    assert "Traceback" not in err


def test_runs_empty(capsys, tmp_path):
    code, out, _ = _call(["runs", "--runs-dir", str(tmp_path / "none")], capsys)
    assert code == 0 and "no runs" in out


def test_distill_runs_eval_end_to_end(model_dirs, tmp_path, capsys):
    runs_dir = tmp_path / "runs"
    data = str(model_dirs / "data.jsonl")
    code, out, err = _call([
        "distill", "--teacher", str(model_dirs / "teacher"),
        "--student", str(model_dirs / "student"), "--data", data, "--targets", "gold",
        "--loss", "akl", "--param", "mu=0.6", "--steps", "3", "--batch-size", "2",
        "--max-length", "64", "--lr", "0.01", "--probe-every", "2", "--runs-dir", str(runs_dir),
        "--name", "e2e", "--eval-examples", "2", "--eval-data", data, "--eval-tokens", "4",
        "--quiet",
    ], capsys)
    assert code == 0, err
    run = load_run(runs_dir / "e2e")
    assert run.status == "finished" and len(run.steps) == 3
    assert run.config["loss_params"] == {"mu": 0.6} and run.config["targets"] == "gold"
    assert [p["step"] for p in run.probes] == [1, 2]
    assert run.has_student
    assert run.eval["n_examples"] == 2 and "rougeL_teacher" in run.eval["student"]
    assert "rougeL_teacher" in out and "e2e" in out

    code, out, _ = _call(["runs", "--runs-dir", str(runs_dir)], capsys)
    assert code == 0 and "e2e" in out and "akl" in out and "finished" in out
    code, out, _ = _call(["runs", "--runs-dir", str(runs_dir), "--json"], capsys)
    rows = json.loads(out)
    assert rows[0]["run"] == "e2e" and rows[0]["steps"] == 3

    (runs_dir / "e2e" / "eval.json").unlink()
    code, out, err = _call(["eval", "e2e", "--runs-dir", str(runs_dir), "--data", data,
                            "--examples", "3", "--max-new-tokens", "4", "--quiet"], capsys)
    assert code == 0, err
    assert load_run(runs_dir / "e2e").eval["n_examples"] == 3


def test_distill_on_teacher_responses_without_student_saving(model_dirs, tmp_path, capsys):
    code, _, err = _call([
        "distill", "--teacher", str(model_dirs / "teacher"), "--student", "tiny:1",
        "--data", str(model_dirs / "data.jsonl"), "--response-tokens", "6", "--loss", "rkl",
        "--steps", "2", "--batch-size", "3", "--max-length", "64", "--probe-every", "0",
        "--runs-dir", str(tmp_path), "--name", "t", "--no-save-student", "--eval-examples", "0",
        "--quiet",
    ], capsys)
    assert code == 0, err
    run = load_run(tmp_path / "t")
    assert len(run.steps) == 2 and not run.has_student and run.eval is None
    code, _, err = _call(["eval", str(tmp_path / "t")], capsys)
    assert code == 2 and "no saved student" in err


def test_toy_command(tmp_path, capsys):
    out_json = tmp_path / "toy.json"
    code, out, err = _call(["toy", "fig2_bimodal", "--losses", "fkl,rkl,akl", "--steps", "30",
                            "--at", "0,30", "--json", str(out_json)], capsys)
    assert code == 0, err
    assert "fig2_bimodal" in out and "g_head" in out
    hist = json.loads(out_json.read_text())
    assert set(hist) == {"fkl", "rkl", "akl"}
    assert hist["fkl"]["fkl"][-1] < hist["fkl"]["fkl"][0]
    code, out, err = _call(["toy", "classic", "--losses", "fkl,rkl", "--steps", "20"], capsys)
    assert code == 0, err
    assert "mean" in out and "rkl" in out


def test_killed_distill_leaves_a_readable_run(model_dirs, tmp_path):
    """SIGKILL `python -m akl_core.lab.cli distill` mid-run: every finished step loads."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1",
               AKL_CACHE_DIR=str(tmp_path / "cache"))
    folder = tmp_path / "runs" / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "akl_core.lab.cli", "distill", "--teacher",
         str(model_dirs / "teacher"), "--student", str(model_dirs / "student"),
         "--data", str(model_dirs / "data.jsonl"), "--targets", "gold", "--steps", "100000",
         "--batch-size", "2", "--max-length", "64", "--probe-every", "1",
         "--runs-dir", str(tmp_path / "runs"), "--name", "killed", "--quiet"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            steps = folder / "steps.jsonl"
            if steps.exists() and steps.read_bytes().count(b"\n") >= 3:
                break
            time.sleep(0.1)
        else:
            pytest.fail(f"distill wrote no steps (exit {proc.poll()})")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    run = load_run(folder)
    assert run.config["steps"] == 100000
    assert len(run.steps) >= 3
    assert [s["step"] for s in run.steps] == list(range(1, len(run.steps) + 1))
    assert all(isinstance(s["loss"], float) for s in run.steps)
    assert len(run.probes) >= len(run.steps) - 1
    assert run.status == "interrupted"


def test_distill_tears_the_process_group_down(tmp_path):
    # every rank leaves `akl distill` with its process group destroyed (after a barrier)
    import torch.distributed as dist

    from akl_core.lab.cli import end_process_group

    end_process_group()  # no group: nothing to do
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0,
                            world_size=1)
    try:
        assert dist.is_initialized()
        end_process_group()
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
