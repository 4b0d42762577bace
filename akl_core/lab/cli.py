"""The `akl` command: short distillations, evaluation, run tables and toy experiments.

    akl distill --loss akl --steps 50          train truncate:4 from the bundled teacher, save a run
    akl eval RUN                               evaluate a saved run's student by generation
    akl runs                                   table of the runs under ./runs
    akl toy fig3_long_tail                     the paper's toy experiments from the shell

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

    if source.startswith("bundled"):
        examples = data.load_bundled(source.partition(":")[2] or "test")
    else:
        if not Path(source).is_file():
            raise UsageError(f"no such evaluation file {source!r}")
        examples = data.load_jsonl(source)
    return examples[:n]


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


def cmd_distill(a: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from akl_core.lab import models, runs
    from akl_core.lab.distill import DistillConfig, distill
    from akl_core.lab.runs import Run

    config = DistillConfig(
        teacher=a.teacher, student=a.student, loss=a.loss, loss_params=dict(a.param),
        steps=a.steps, batch_size=a.batch_size, max_length=a.max_length, lr=a.lr,
        kd_ratio=a.kd_ratio, temperature=a.temperature, seed=a.seed,
        probe_every=a.probe_every, probe_topk=a.probe_topk, warmup_steps=a.warmup_steps,
        scheduler=a.scheduler, weight_decay=a.weight_decay, grad_clip=a.grad_clip,
        data=a.data, targets=a.targets, max_examples=a.max_examples,
        response_tokens=a.response_tokens,
    ).validate()
    for name in ("eval_examples", "eval_tokens"):
        if getattr(a, name) < 0 or (name == "eval_tokens" and a.eval_tokens < 1):
            raise UsageError(f"--{name.replace('_', '-')} must be positive, got "
                             f"{getattr(a, name)}")
    runs.run_folder_name(a.name, config.loss)  # a bad --name / --runs-dir fails before loading
    runs.ensure_root(a.runs_dir)
    say = None if a.quiet else _say
    teacher = models.load_teacher(config.teacher, device=a.device, progress=say,
                                  trust_remote_code=a.trust_remote_code)
    student = models.load_student(config.student, teacher, seed=config.seed, device=a.device,
                                  trust_remote_code=a.trust_remote_code)
    run = Run.create(a.runs_dir, name=a.name, loss=config.loss)
    _say(f"run folder: {run.path}")
    session = distill(config, teacher=teacher, student=student, run=run,
                      progress=_tqdm_progress(a.quiet))
    bar = tqdm(total=config.steps, desc=f"distill {config.loss}", file=sys.stderr,
               disable=a.quiet)
    try:
        for rec in session:
            bar.update(1)
            bar.set_postfix(loss=f"{rec.loss:.4f}", g_head=f"{rec.g_head:.3f}",
                            g_tail=f"{rec.g_tail:.3f}", tok_s=f"{rec.tokens_per_second:.0f}")
    except KeyboardInterrupt:
        session.close()
        bar.close()
        if run.discard_if_empty():
            _say("interrupted before the first step; no run folder was kept")
        else:
            _say(f"interrupted after {session.steps_done} steps; run kept at {run.path}")
        return EXIT_INTERRUPTED
    except BaseException:
        run.discard_if_empty()  # e.g. bad data: no empty folder is left behind
        raise
    finally:
        bar.close()
    if not a.no_save_student:
        student.model.save_pretrained(run.student_dir, safe_serialization=True)
        student.tokenizer.save_pretrained(run.student_dir)
    if a.eval_examples:
        result = _run_eval(student, teacher, a.eval_data, a.eval_examples, a.eval_tokens,
                           8, a.quiet)
        run.write_eval(result)
        _print_scores(result)
    from akl_core.lab.runs import load_run, summarize

    summary = summarize(load_run(run.path).steps)
    print(f"run {run.name}: {summary['steps_done']} steps, final loss "
          f"{summary.get('final_loss') or float('nan'):.4f}, saved in {run.path}")
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


COMMANDS = {"distill": cmd_distill, "eval": cmd_eval, "runs": cmd_runs, "toy": cmd_toy}


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
