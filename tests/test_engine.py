"""KDTrainer on its own, and the engine's exactness: gradient accumulation and two processes
(accelerate launch, gloo on CPU) equal one big batch; a run killed with SIGKILL resumes from
its checkpoint to the same records. Small models (conftest's small_pair, kd_folders)."""

from __future__ import annotations

import copy
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import akl_core
from akl_core.lab import cli
from akl_core.lab.distill import DistillConfig
from akl_core.lab.experiment import run_experiment
from akl_core.lab.runs import load_run
from tests import small_lm

ROOT = Path(__file__).resolve().parents[1]


def _env(**extra: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", **extra)
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT",
                "ACCELERATE_USE_CPU"):
        env.pop(key, None)
    return env


def _steps(run_dir: Path) -> list[dict]:
    return load_run(run_dir).steps


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(run_dir / "student" / "model.safetensors"))


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def _rows(tokenizer, n: int = 4) -> list[dict]:
    from akl_core.lab import data
    from akl_core.lab.engine import rows_from_encoded

    exs = small_lm.examples(n)
    enc = data.tokenize_for_kd(tokenizer, exs, [e.response for e in exs], max_length=48)
    return rows_from_encoded(enc)


# ----------------------------------------------------------------------------------------------
# KDTrainer in a user's script
# ----------------------------------------------------------------------------------------------


def test_kdtrainer_on_its_own(small_pair, tmp_path):
    """A plain Trainer set-up (rows, KDCollator, TrainingArguments): the first micro-batch's
    loss is distillation_loss over the valid shifted positions; logs carry the KD numbers."""
    from transformers import TrainingArguments

    from akl_core.lab.trainer import KDCollator, KDTrainer

    student = copy.deepcopy(small_pair[1].model)
    teacher = small_pair[0].model
    rows = _rows(small_pair[0].tokenizer)
    args = TrainingArguments(str(tmp_path), per_device_train_batch_size=2, max_steps=2,
                             learning_rate=1e-3, logging_steps=1, report_to="none",
                             use_cpu=True, disable_tqdm=True, save_strategy="no")
    trainer = KDTrainer(model=student, args=args, teacher_model=teacher, loss="akl",
                        loss_params={"mu": 0.6}, kd_ratio=0.5, train_dataset=rows,
                        data_collator=KDCollator(small_pair[0].tokenizer.pad_token_id))
    batch = KDCollator(small_pair[0].tokenizer.pad_token_id)(rows[:2])
    got = trainer.compute_loss(student, dict(batch))
    with torch.no_grad():
        s = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        t = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    labels = batch["labels"][:, 1:]
    kd = akl_core.distillation_loss(s[:, :-1], t[:, :-1], loss="akl", labels=labels, mu=0.6)
    valid = labels != -100
    ce = torch.nn.functional.cross_entropy(s[:, :-1][valid], labels[valid])
    assert float(got.detach()) == pytest.approx(float(0.5 * kd + 0.5 * ce), rel=1e-5)
    before = {k: v.clone() for k, v in student.state_dict().items()}
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "kd_loss" in entry]
    assert len(logs) == 2 and all(0 <= e["w"] <= 1 for e in logs)
    assert trainer.last_step["positions"] == int(
        (KDCollator(0)(rows[2:4])["labels"][:, 1:] != -100).sum())
    assert any(not torch.equal(before[k], v) for k, v in student.state_dict().items())
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    with pytest.raises(ValueError, match="loss must be one of"):
        KDTrainer(model=student, args=args, teacher_model=teacher, loss="kl")


# ----------------------------------------------------------------------------------------------
# Exactness of the step: accumulation, processes
# ----------------------------------------------------------------------------------------------


def _experiment(folders: Path, teacher, student, **cfg):
    base = dict(teacher=str(folders / "teacher"), student=str(folders / "student"),
                data=str(folders / "data.jsonl"), targets="gold", steps=3, max_length=48,
                lr=1e-2, probe_every=0, loss="akl")
    base.update(cfg)
    return run_experiment(DistillConfig(**base), teacher=teacher,
                          student=copy.deepcopy(student), save=False)


def _state(result) -> dict:
    return {k: v.detach().clone() for k, v in result.student.model.state_dict().items()}


def test_grad_accum_equals_double_batch(kd_folders, small_pair):
    big = _experiment(kd_folders, *small_pair, batch_size=4)
    acc = _experiment(kd_folders, *small_pair, batch_size=2, grad_accum=2)
    assert [r.grad_accum for r in acc.records] == [2, 2, 2]
    assert [r.tokens for r in acc.records] == [r.tokens for r in big.records]
    for a, b in zip(acc.records, big.records):
        for key in ("loss", "kd_loss", "lm_loss", "g_head", "w", "fkl"):
            assert getattr(a, key) == pytest.approx(getattr(b, key), rel=1e-4), key
    assert _max_diff(_state(acc), _state(big)) < 1e-4


def test_bf16_autocast_runs_close_to_float32(kd_folders, small_pair):
    f32 = _experiment(kd_folders, *small_pair, batch_size=2, steps=2)
    b16 = _experiment(kd_folders, *small_pair, batch_size=2, steps=2, bf16=True)
    assert b16.student.model.dtype == torch.float32  # autocast: weights stay float32
    for a, b in zip(b16.records, f32.records):
        assert a.loss == pytest.approx(b.loss, rel=2e-2) and a.loss != b.loss


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


DISTILL = ["distill", "--targets", "gold", "--steps", "3", "--max-length", "48",
           "--lr", "0.01", "--probe-every", "2", "--eval-examples", "0", "--quiet"]


def test_two_processes_equal_one_process_double_batch(kd_folders, tmp_path, capsys):
    """accelerate launch, 2 processes over gloo (loopback) x batch 2 == 1 process x batch 4:
    per-step losses within 1e-4 relative, final student weights within 1e-4."""
    bindir = Path(sys.executable).parent
    accelerate = shutil.which("accelerate", path=str(bindir)) or shutil.which("accelerate")
    akl = shutil.which("akl", path=str(bindir)) or shutil.which("akl")
    models = ["--teacher", str(kd_folders / "teacher"), "--student",
              str(kd_folders / "student"), "--data", str(kd_folders / "data.jsonl")]
    proc = subprocess.run(
        [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_ip",
         "127.0.0.1", "--main_process_port", str(_free_port()),
         akl, *DISTILL, *models, "--batch-size", "2",
         "--runs-dir", str(tmp_path), "--name", "two"],
        env=_env(ACCELERATE_USE_CPU="1"), capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["two"]  # one run folder (rank 0)
    code = cli.main([*DISTILL, *models, "--batch-size", "4", "--runs-dir", str(tmp_path),
                     "--name", "one"])
    assert code == 0, capsys.readouterr().err
    two, one = _steps(tmp_path / "two"), _steps(tmp_path / "one")
    assert [s["world_size"] for s in two] == [2, 2, 2]
    assert [s["world_size"] for s in one] == [1, 1, 1]
    assert [s["tokens"] for s in two] == [s["tokens"] for s in one]
    for a, b in zip(two, one):
        for key in ("loss", "kd_loss", "lm_loss", "g_head", "g_tail", "w"):
            assert a[key] == pytest.approx(b[key], rel=1e-4), (a["step"], key)
    assert [p["step"] for p in load_run(tmp_path / "two").probes] == [1, 2]
    assert _max_diff(_weights(tmp_path / "two"), _weights(tmp_path / "one")) < 1e-4


def test_cpu_launcher_that_starts_one_process_is_refused(monkeypatch, capsys):
    monkeypatch.setenv("ACCELERATE_USE_CPU", "True")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert cli.main(["distill", "--steps", "1"]) == 2
    assert "single process" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------
# Resume after SIGKILL
# ----------------------------------------------------------------------------------------------

KILLED = textwrap.dedent("""
    import os, signal, sys
    import torch
    torch.set_num_threads(1)
    from akl_core.lab.distill import DistillConfig
    from akl_core.lab.experiment import run_experiment
    config = DistillConfig.from_dict(__import__("json").loads(sys.argv[1]))
    def on_record(record):
        if record.step == 5:  # checkpoint-4 exists, step 5 is written: kill -9 now
            os.kill(os.getpid(), signal.SIGKILL)
    run_experiment(config, runs_dir=sys.argv[2], name="killed", on_record=on_record)
""")


def test_resume_after_sigkill_gives_the_uninterrupted_records(kd_folders, tmp_path, capsys):
    config = DistillConfig(
        teacher=str(kd_folders / "teacher"), student=str(kd_folders / "student"),
        data=str(kd_folders / "data.jsonl"), targets="gold", loss="taid", steps=7,
        batch_size=2, max_length=48, lr=1e-2, probe_every=2, save_every=2,
        scheduler="cosine", warmup_steps=2)
    proc = subprocess.run([sys.executable, "-c", KILLED, json.dumps(config.to_dict()),
                           str(tmp_path)], env=_env(), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == -9, proc.stderr[-3000:]
    killed = tmp_path / "killed"
    assert [s["step"] for s in _steps(killed)] == [1, 2, 3, 4, 5]
    assert load_run(killed).status == "interrupted"
    code = cli.main(["distill", "--resume", str(killed), "--eval-examples", "0", "--quiet"])
    assert code == 0, capsys.readouterr().err
    full = run_experiment(config, runs_dir=tmp_path, name="full")
    resumed = load_run(killed)
    assert resumed.status == "finished"
    assert [s["step"] for s in resumed.steps] == list(range(1, 8))
    assert [p["step"] for p in resumed.probes] == [1, 2, 4, 6]
    for a, b in zip(resumed.steps, full.records):
        for key in ("loss", "kd_loss", "lm_loss", "g_head", "w", "lr", "taid_t"):
            assert a[key] == pytest.approx(getattr(b, key), rel=1e-5), (a["step"], key)
    assert _max_diff(_weights(killed), _weights(full.run_dir)) < 1e-5
    with pytest.raises(ValueError, match="no complete checkpoint"):
        run_experiment(None, resume=_no_checkpoint_run(tmp_path, config))


def _no_checkpoint_run(tmp_path: Path, config: DistillConfig) -> Path:
    from akl_core.lab.runs import Run

    run = Run.create(tmp_path, name="no-checkpoint")
    run.write_config(config.to_dict())
    return run.path


def test_run_reopen_drops_the_records_after_the_checkpoint(tmp_path):
    from akl_core.lab.runs import Run

    run = Run.create(tmp_path, name="r")
    run.write_config({"loss": "akl"})
    for i in range(1, 6):
        run.append_step({"step": i, "loss": float(i)})
        if i % 2:
            run.append_probe({"step": i})
    with open(run.path / "steps.jsonl", "a") as f:
        f.write('{"step": 6, "lo')  # torn by the kill
    again = Run.reopen(run.path, keep_steps=3)
    again.append_step({"step": 4, "loss": 40.0})
    again.finish()
    data = load_run(run.path)
    assert [(s["step"], s["loss"]) for s in data.steps] == [(1, 1.0), (2, 2.0), (3, 3.0),
                                                          (4, 40.0)]
    assert [p["step"] for p in data.probes] == [1, 3]
    assert data.status == "finished" and data.summary["steps_done"] == 4
    with pytest.raises(ValueError, match="not a run folder"):
        Run.reopen(tmp_path, keep_steps=1)
