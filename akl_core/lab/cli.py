"""The `akl` command: short distillations, evaluation, run tables and toy experiments.

    akl distill --loss akl --steps 50          train truncate:4 from the bundled teacher, save a run
    akl eval RUN                               evaluate a saved run's student by generation
    akl runs                                   table of the runs under ./runs
    akl toy fig3_long_tail                     the paper's toy experiments from the shell
    akl teacher-cache --k 64 --out DIR         the teacher's top-k once; distill --teacher-cache

Errors are one line on stderr (`akl: error: ...`) with exit status 2.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """A user error reported as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line (no usage dump) with exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows "(default: X)" only for meaningful defaults (not None, False or [])."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, False, []) or action.default is argparse.SUPPRESS:
            return action.help or ""
        return super()._get_help_string(action)


def _param(text: str) -> tuple[str, Any]:
    """KEY=VALUE; VALUE is parsed as JSON (numbers, true/false) or kept as a string."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        parsed = value
    return key.strip(), parsed


def _optional_float(text: str) -> float | None:
    if text.lower() in ("none", "off", "0"):
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'none', got {text!r}") from None


def _device(text: str) -> str:
    """--device: checked now (unknown name, meta, no such GPU) so errors come before loading."""
    from akl_core.lab.models import resolve_device

    try:
        resolve_device(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def _model_spec(text: str) -> str | None:
    """--teacher: empty (or blank) means the bundled teacher, as in the dashboard."""
    return text.strip() or None


def _loss_help() -> str:
    try:
        import akl_core

        parts = []
        for name, spec in akl_core.LOSSES.items():
            ps = ", ".join(f"{p}={s.default}" for p, s in spec.params.items())
            parts.append(f"{name}({ps})" if ps else name)
        return "loss name, one of: " + "; ".join(parts)
    except Exception:  # pragma: no cover - help must never fail
        return "loss name (see akl_core.LOSSES)"


def build_parser() -> argparse.ArgumentParser:
    from akl_core.lab.distill import DistillConfig

    d = DistillConfig()
    p = _Parser(prog="akl", description=__doc__.split("\n\n")[0],
                formatter_class=argparse.RawDescriptionHelpFormatter,
                epilog="Run `akl COMMAND --help` for the options of a command.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    # ---- distill ----------------------------------------------------------------------------
    ds = sub.add_parser(
        "distill", help="run a short distillation and save it as a run folder",
        description="Teacher-forced distillation of a student from a teacher on instruction "
        "data; writes config.json, steps.jsonl, probes.jsonl, eval.json, summary.json and the "
        "trained student to a run folder.",
        formatter_class=_Formatter,
    )
    g = ds.add_argument_group("models")
    g.add_argument("--teacher", default=d.teacher, metavar="SPEC", type=_model_spec,
                   help="teacher: 'bundled' (SmolLM2-135M-Instruct, the default when omitted "
                   "or empty), a hub name (online) or a local model folder")
    g.add_argument("--student", default=d.student, metavar="SPEC",
                   help="student: truncate:K (teacher's first K layers), tiny, tiny:L, a hub "
                   "name or a folder; must share the teacher's tokenizer")
    g.add_argument("--device", default=None, type=_device,
                   help="torch device (default: cuda if available)")
    g.add_argument("--trust-remote-code", action="store_true",
                   help="allow custom model code from the hub (off by default)")
    g = ds.add_argument_group("loss")
    g.add_argument("--loss", default=d.loss, help=_loss_help())
    g.add_argument("--param", action="append", type=_param, default=[], metavar="KEY=VALUE",
                   dest="loss_params",
                   help="a loss parameter, repeatable (e.g. --param mu=0.5 --param "
                   "boundary=paper)")
    g.add_argument("--kd-ratio", type=float, default=d.kd_ratio,
                   help="weight of the KD term; 1 - kd_ratio goes to the LM cross-entropy")
    g.add_argument("--temperature", type=float, default=d.temperature,
                   help="softmax temperature of both teacher and student")
    g = ds.add_argument_group("optimisation")
    g.add_argument("--steps", type=int, default=d.steps, help="optimizer steps")
    g.add_argument("--batch-size", type=int, default=d.batch_size, help="sequences per step")
    g.add_argument("--max-length", type=int, default=d.max_length,
                   help="max tokens per sequence (prompt + response)")
    g.add_argument("--lr", type=float, default=d.lr, help="AdamW learning rate")
    g.add_argument("--weight-decay", type=float, default=d.weight_decay, help="AdamW decay")
    g.add_argument("--scheduler", choices=["constant", "linear", "cosine"], default=d.scheduler,
                   help="learning-rate schedule after warm-up")
    g.add_argument("--warmup-steps", type=int, default=d.warmup_steps,
                   help="linear warm-up steps")
    g.add_argument("--grad-clip", type=_optional_float, default=d.grad_clip,
                   help="max gradient norm, or 'none'")
    g.add_argument("--seed", type=int, default=d.seed, help="seed for student init and batches")
    g.add_argument("--grad-accum", type=int, default=d.grad_accum,
                   help="micro-batches of --batch-size per optimizer step and process")
    g.add_argument("--bf16", action="store_true",
                   help="bfloat16 mixed precision (accelerate autocast)")
    g.add_argument("--save-every", type=int, default=d.save_every,
                   help="save a checkpoint every K steps into <run>/checkpoints (0 = never)")
    g.add_argument("--resume", default=None, metavar="RUN_DIR",
                   help="continue a run from its last checkpoint with its own config (the "
                   "other config options are ignored); records after the checkpoint are "
                   "redone")
    g = ds.add_argument_group("data")
    g.add_argument("--data", default=d.data,
                   help="bundled:train / bundled:validation / bundled:test or a Dolly-style "
                   "JSONL file (instruction, optional context, response)")
    g.add_argument("--targets", choices=["teacher", "gold"], default=d.targets,
                   help="train on the teacher's greedy responses or the data's responses")
    g.add_argument("--max-examples", type=int, default=d.max_examples,
                   help="use only the first N examples")
    g.add_argument("--response-tokens", type=int, default=d.response_tokens,
                   help="max new tokens of the teacher's responses")
    g.add_argument("--teacher-cache", default=None, metavar="DIR",
                   help="train from a teacher cache made by `akl teacher-cache` (the teacher "
                   "is not run; it must match the data and tokenizer)")
    g = ds.add_argument_group("diagnostics and output")
    g.add_argument("--probe-every", type=int, default=d.probe_every,
                   help="per-token probe diagnostics every K steps (0 = never)")
    g.add_argument("--probe-topk", type=int, default=d.probe_topk,
                   help="top-k teacher/student tokens stored per probe position (at most 100)")
    g.add_argument("--runs-dir", default=None,
                   help="root folder of runs (default: $AKL_RUNS_DIR or ./runs)")
    g.add_argument("--name", default=None,
                   help="run folder name (default: <timestamp>-<loss>)")
    g.add_argument("--no-save-student", action="store_true",
                   help="do not save the trained student (then `akl eval` cannot run later)")
    g.add_argument("--eval-examples", type=int, default=16,
                   help="evaluate on the first N test examples after training (0 = skip)")
    g.add_argument("--eval-data", default="bundled:test",
                   help="evaluation data (bundled split or JSONL)")
    g.add_argument("--eval-tokens", type=int, default=d.response_tokens,
                   help="max new tokens when generating for evaluation")
    g.add_argument("--quiet", action="store_true", help="no progress bar")

    # ---- teacher-cache ----------------------------------------------------------------------
    tc = sub.add_parser(
        "teacher-cache", help="store the teacher's top-k log-probs for training without it",
        description="Run the teacher once over the training rows (the same settings as "
        "`akl distill`: data, targets, max length, response tokens) and store its top-k "
        "log-probs per response token, plus the mass outside them, in safetensors shards with "
        "a manifest; `akl distill --teacher-cache DIR` then trains without the teacher.",
        formatter_class=_Formatter,
    )
    tc.add_argument("--teacher", default=d.teacher, metavar="SPEC",
                    help="teacher: 'bundled' (the default when omitted), a hub name or a folder")
    tc.add_argument("--data", default=d.data, help="bundled:<split> or a Dolly-style JSONL file")
    tc.add_argument("--targets", choices=["teacher", "gold"], default=d.targets,
                    help="the teacher's greedy responses or the data's responses")
    tc.add_argument("--max-length", type=int, default=d.max_length,
                    help="max tokens per sequence (prompt + response)")
    tc.add_argument("--response-tokens", type=int, default=d.response_tokens,
                    help="max new tokens of the teacher's responses")
    tc.add_argument("--max-examples", type=int, default=d.max_examples,
                    help="use only the first N examples")
    tc.add_argument("--k", type=int, default=64, help="log-probs kept per token")
    tc.add_argument("--quantization", choices=["u8", "f16", "f32"], default="u8",
                    help="u8: 3 bytes per entry (uint16 id + 8-bit log-prob); f16: 4; f32: 6")
    tc.add_argument("--out", required=True, metavar="DIR", help="the cache folder to write")
    tc.add_argument("--batch-size", type=int, default=8, help="sequences per teacher forward")
    tc.add_argument("--device", default=None, help="torch device (default: cuda if available)")
    tc.add_argument("--trust-remote-code", action="store_true",
                    help="allow custom model code from the hub (off by default)")
    tc.add_argument("--quiet", action="store_true", help="no progress bar")

    # ---- eval -------------------------------------------------------------------------------
    ev = sub.add_parser(
        "eval", help="evaluate a run's saved student by generation",
        description="Generate greedy responses with the run's student on test prompts and "
        "score them: Rouge-L against the teacher's responses and gold references, distinct-1/2; "
        "writes eval.json into the run folder.",
        formatter_class=_Formatter,
    )
    ev.add_argument("run", metavar="RUN", help="run folder, or a run name under --runs-dir")
    ev.add_argument("--runs-dir", default=None, help="root folder of runs")
    ev.add_argument("--examples", type=int, default=16, help="number of test examples")
    ev.add_argument("--data", default="bundled:test", help="bundled split or JSONL file")
    ev.add_argument("--max-new-tokens", type=int, default=d.response_tokens,
                    help="max new tokens per response")
    ev.add_argument("--batch-size", type=int, default=8, help="prompts per generate call")
    ev.add_argument("--device", default=None, type=_device, help="torch device")
    ev.add_argument("--quiet", action="store_true", help="no progress bar")

    # ---- runs -------------------------------------------------------------------------------
    rn = sub.add_parser(
        "runs", help="table of saved runs",
        description="List the runs under the runs root with their final losses, gaps and "
        "evaluation scores.",
        formatter_class=_Formatter,
    )
    rn.add_argument("--runs-dir", default=None,
                    help="root folder of runs (default: $AKL_RUNS_DIR or ./runs)")
    rn.add_argument("--json", action="store_true", help="print JSON rows instead of a table")

    # ---- toy --------------------------------------------------------------------------------
    ty = sub.add_parser(
        "toy", help="the paper's toy experiments (free logits on 1-D targets)",
        description="Fit free student logits to a toy target with several losses and print "
        "the divergences and head/tail gaps at chosen steps. 'classic' fits one Gaussian to a "
        "Gaussian mixture instead (the mode-seeking folklore demo).",
        formatter_class=_Formatter,
    )
    ty.add_argument("target", nargs="?", default="fig3_long_tail",
                    help="fig2_bimodal, fig2_unimodal, fig3_long_tail or classic")
    ty.add_argument("--losses", default="fkl,rkl,akl", help="comma-separated loss names")
    ty.add_argument("--steps", type=int, default=None,
                    help="optimizer steps (default: the paper's setting for the target)")
    ty.add_argument("--lr", type=float, default=None, help="Adam lr (default: the paper's)")
    ty.add_argument("--seed", type=int, default=1, help="seed of the U(0,1) initial logits")
    ty.add_argument("--mu", type=float, default=0.5, help="head mass for the head/tail split")
    ty.add_argument("--at", default=None,
                    help="comma-separated steps to report (default: the paper's snapshots)")
    ty.add_argument("--json", default=None, metavar="FILE",
                    help="also write the histories to this JSON file")
    return p


# ----------------------------------------------------------------------------------------------
# Commands
# ----------------------------------------------------------------------------------------------


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _tqdm_progress(quiet: bool):
    """A progress(stage, done, total) callback drawing one tqdm bar per stage."""
    from tqdm.auto import tqdm

    bars: dict[str, Any] = {}

    def cb(stage: str, done: int, total: int) -> None:
        if quiet:
            return
        if total <= 0:  # a message
            _say(stage)
            return
        bar = bars.get(stage)
        if bar is None:
            bar = bars[stage] = tqdm(total=total, desc=stage, file=sys.stderr, leave=False)
        bar.n = done
        bar.refresh()
        if done >= total:
            bar.close()

    return cb


def _load_eval_examples(source: str, n: int) -> list:
    from akl_core.lab import data

    return data.load_source(source, default_split="test", limit=n)


def _run_eval(student, teacher, source: str, n: int, max_new_tokens: int, batch_size: int,
              quiet: bool) -> dict:
    from akl_core.lab import data, evaluate

    examples = _load_eval_examples(source, n)
    if not examples:
        raise UsageError(f"no evaluation examples in {source!r}")
    progress = _tqdm_progress(quiet)
    t_resp = data.teacher_responses(
        teacher, examples, max_new_tokens=max_new_tokens,
        progress=lambda done, total: progress("teacher responses", done, total),
    )
    return evaluate.evaluate(student, examples, teacher_responses=t_resp,
                             max_new_tokens=max_new_tokens, batch_size=batch_size,
                             progress=progress)


def _print_scores(result: dict) -> None:
    rows = []
    for who in ("student", "teacher"):
        s = result.get(who)
        if s:
            rows.append({"model": who, "rougeL_teacher": s.get("rougeL_teacher"),
                         "rougeL_gold": s.get("rougeL_gold"), "distinct_1": s.get("distinct_1"),
                         "distinct_2": s.get("distinct_2"), "mean_words": s.get("mean_words")})
    from akl_core.lab.runs import format_table

    print(format_table(rows))


def _check_launcher() -> None:
    """`accelerate launch --cpu --num_processes N` (N > 1) starts ONE process unless mpirun
    runs it (accelerate's simple launcher; MASTER_ADDR is set only when N > 1): refuse instead
    of silently training one process."""
    import os

    env = os.environ
    if (env.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
            and "MASTER_ADDR" in env and "WORLD_SIZE" not in env
            and not any(k in env for k in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE",
                                           "MV2_COMM_WORLD_SIZE"))):
        raise UsageError(
            "accelerate launch --cpu started a single process (several CPU processes need "
            "mpirun); use `accelerate launch --multi_gpu --num_processes N` (torchrun; on a "
            "machine with GPUs add ACCELERATE_USE_CPU=1 to stay on the CPU)")


def config_from_args(a: argparse.Namespace) -> Any:
    """The DistillConfig of `akl distill`'s options: one mapping, option dest = field name."""
    from akl_core.lab.distill import DistillConfig

    values = {name: getattr(a, name) for name in DistillConfig.field_names() if hasattr(a, name)}
    values["loss_params"] = dict(values.get("loss_params") or [])
    return DistillConfig.from_mapping(values)


def cmd_distill(a: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from akl_core.lab import runs
    from akl_core.lab.distill import DistillConfig
    from akl_core.lab.engine import distributed_state
    from akl_core.lab.experiment import EvalSettings, run_experiment
    from akl_core.lab.runs import load_run, resolve_run, summarize

    for name in ("eval_examples", "eval_tokens"):
        if getattr(a, name) < 0 or (name == "eval_tokens" and a.eval_tokens < 1):
            raise UsageError(f"--{name.replace('_', '-')} must be positive, got "
                             f"{getattr(a, name)}")
    _check_launcher()
    if a.resume:
        config = None
        total = DistillConfig.from_dict(load_run(resolve_run(a.resume, a.runs_dir)).config).steps
    else:
        config = config_from_args(a)
        total = config.steps
    if not a.resume:  # a bad --name / --runs-dir fails before any model loads
        runs.run_folder_name(a.name, config.loss)
        runs.ensure_root(a.runs_dir)
    main = distributed_state(a.device).is_main_process
    quiet = a.quiet or not main
    if quiet:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    bar = tqdm(total=total, desc=f"distill {config.loss if config else 'resume'}",
               file=sys.stderr, disable=quiet)
    where: list = []

    def on_run(path: Path) -> None:
        where.append(path)
        _say(f"run folder: {path}")

    def on_record(rec: Any) -> None:
        bar.n = rec.step
        bar.set_postfix(loss=f"{rec.loss:.4f}", g_head=f"{rec.g_head:.3f}",
                        g_tail=f"{rec.g_tail:.3f}", tok_s=f"{rec.tokens_per_second:.0f}")

    evaluation = (EvalSettings(n=a.eval_examples, data=a.eval_data,
                               max_new_tokens=a.eval_tokens) if a.eval_examples else None)
    try:
        result = run_experiment(
            config, runs_dir=a.runs_dir, name=a.name, save_student=not a.no_save_student,
            evaluation=evaluation, on_record=on_record, progress=_tqdm_progress(quiet),
            device=a.device, resume=a.resume, on_run=on_run,
            trust_remote_code=a.trust_remote_code,
        )
    except KeyboardInterrupt:
        bar.close()
        if where and where[0].exists():
            _say(f"interrupted; run kept at {where[0]}")
        else:
            _say("interrupted before the first step; no run folder was kept")
        return EXIT_INTERRUPTED
    finally:
        bar.close()
    end_process_group()
    if not main:
        return 0
    if result.evaluation is not None:
        _print_scores(result.evaluation)
    summary = summarize(load_run(result.run_dir).steps)
    print(f"run {result.run_dir.name}: {summary['steps_done']} steps, final loss "
          f"{summary.get('final_loss') or float('nan'):.4f}, saved in {result.run_dir}")
    return 0


def end_process_group() -> None:
    """Under `accelerate launch`: wait for every process, then tear the process group down.
    A process that exits with its group alive (the other ranks return as soon as training
    ends, while rank 0 still saves) can abort in gloo's threads at interpreter exit
    ("terminate called without an active exception", seen once in CI)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def cmd_teacher_cache(a: argparse.Namespace) -> int:
    from akl_core.lab import models, teacher_cache
    from akl_core.lab.distill import DistillConfig

    if a.batch_size < 1:
        raise UsageError(f"--batch-size must be positive, got {a.batch_size}")
    config = DistillConfig.from_mapping({
        "teacher": a.teacher, "data": a.data, "targets": a.targets, "max_length": a.max_length,
        "response_tokens": a.response_tokens, "max_examples": a.max_examples})
    progress = _tqdm_progress(a.quiet)
    teacher = models.load_teacher(config.teacher, device=a.device,
                                  progress=None if a.quiet else _say,
                                  trust_remote_code=a.trust_remote_code)
    manifest = teacher_cache.build(teacher, config, a.out, k=a.k, quantization=a.quantization,
                                   batch_size=a.batch_size, progress=progress)
    print(f"teacher cache {a.out}: {teacher_cache.describe(manifest)}")
    return 0


def cmd_eval(a: argparse.Namespace) -> int:
    from akl_core.lab import models
    from akl_core.lab.runs import load_run, resolve_run

    if a.examples < 1 or a.max_new_tokens < 1 or a.batch_size < 1:
        raise UsageError("--examples, --max-new-tokens and --batch-size must be positive")
    data = load_run(resolve_run(a.run, a.runs_dir))
    if "config.json" in data.problems:
        raise UsageError(f"run {data.name}: {data.path / 'config.json'} is damaged "
                         f"({data.problems['config.json']}); cannot tell its teacher")
    if not data.has_student:
        raise UsageError(f"run {data.name} has no saved student (it was run with "
                         "--no-save-student or did not finish)")
    say = None if a.quiet else _say
    teacher = models.load_teacher(data.config.get("teacher"), device=a.device, progress=say)
    student = models.load_student(str(data.path / "student"), teacher, device=a.device)
    result = _run_eval(student, teacher, a.data, a.examples, a.max_new_tokens, a.batch_size,
                       a.quiet)
    from akl_core.lab.runs import atomic_write_json

    atomic_write_json(data.path / "eval.json", result)
    _print_scores(result)
    return 0


def cmd_runs(a: argparse.Namespace) -> int:
    from akl_core.lab.runs import compare, default_root, dumps, format_table, list_runs

    runs = list_runs(a.runs_dir)
    rows = compare(runs)
    if a.json:
        print(dumps(rows, indent=2))  # strict JSON: no bare NaN
    elif not rows:
        print(f"no runs under {a.runs_dir or default_root()}")
    else:
        print(format_table([{k: v for k, v in r.items() if k != "problem"} for r in rows]))
        for r in rows:
            if r["problem"]:
                print(f"broken run {r['run']}: {r['problem']}")
    return 0


def cmd_toy(a: argparse.Namespace) -> int:
    import numpy as np

    from akl_core.lab import toy
    from akl_core.lab.runs import dumps, format_table

    losses = [s.strip() for s in a.losses.split(",") if s.strip()]
    if not losses:
        raise UsageError("--losses is empty")
    if a.steps is not None and a.steps < 1:
        raise UsageError(f"--steps must be a positive integer, got {a.steps}")
    if a.lr is not None and not (math.isfinite(a.lr) and a.lr > 0):
        raise UsageError(f"--lr must be a finite number > 0, got {a.lr}")
    if a.json:
        out = Path(a.json)
        if out.is_dir():
            raise UsageError(f"--json {a.json}: is a folder; give a file name to write")
        if not out.parent.is_dir():
            raise UsageError(f"--json {a.json}: no folder {out.parent} to write it in")
    if a.target == "classic":
        mixture = toy.classic_mixture()
        kw = {k: v for k, v in (("steps", a.steps), ("lr", a.lr)) if v is not None}
        rows, hist = [], {}
        for name in losses:
            fit = toy.fit_gaussian(mixture, name, seed=a.seed, **kw)
            rows.append({"loss": name, "mean": fit.mean, "std": fit.std,
                         "final_loss": float(fit.history["loss"][-1])})
            hist[name] = {k: v for k, v in fit.history.items()}
        print(f"one Gaussian fitted to a mixture (means {mixture.means}, weights "
              f"{tuple(round(w, 3) for w in mixture.weights)})")
        print(format_table(rows))
    else:
        if a.target not in toy.PRESETS:
            raise UsageError(f"unknown toy target {a.target!r}; choose one of "
                             f"{sorted(toy.PRESETS)} or classic")
        settings = dict(toy.PAPER_SETTINGS[a.target])
        steps = a.steps if a.steps is not None else settings["steps"]
        lr = a.lr if a.lr is not None else settings["lr"]
        if a.at:
            try:
                at = sorted({int(s) for s in a.at.split(",") if s.strip()})
            except ValueError:
                raise UsageError(f"--at must be comma-separated integers, got {a.at!r}") from None
        else:
            at = sorted({s for s in settings["snapshot_steps"] if s <= steps} | {steps})
        bad = [s for s in at if s < 0 or s > steps]
        if bad:
            raise UsageError(f"--at steps must lie in [0, {steps}], got {bad}")
        results = toy.compare_losses(toy.make_target(a.target), losses, steps=steps, lr=lr,
                                     seed=a.seed, mu=a.mu)
        rows = []
        for s in at:
            for name, r in results.items():
                rows.append({"step": s, "loss": name, "fkl": r.at(s, "fkl"),
                             "rkl": r.at(s, "rkl"), "g_head": r.at(s, "g_head"),
                             "g_tail": r.at(s, "g_tail"), "w": r.at(s, "w")})
        print(f"{a.target}: free logits, Adam lr {lr}, {steps} steps, seed {a.seed}, "
              f"head mass mu {a.mu}")
        print(format_table(rows))
        hist = {name: {k: np.asarray(v) for k, v in r.history.items()}
                for name, r in results.items()}
    if a.json:
        try:
            Path(a.json).write_text(dumps({k: {kk: vv for kk, vv in v.items()}
                                           for k, v in hist.items()}))
        except OSError as e:
            raise UsageError(f"--json {a.json}: cannot write it ({e.strerror or e})") from None
        _say(f"histories written to {a.json}")
    return 0


COMMANDS = {"distill": cmd_distill, "eval": cmd_eval, "runs": cmd_runs, "toy": cmd_toy,
            "teacher-cache": cmd_teacher_cache}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `akl` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return EXIT_USAGE
    try:
        return COMMANDS[args.command](args)
    except (UsageError, ValueError, OSError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"akl {args.command}: error: {msg}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"akl {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
