"""Train, save, evaluate: the one path every front-end (CLI, dashboard, notebooks) calls.

    result = run_experiment(DistillConfig(loss="akl", steps=50), runs_dir="runs")
    result.records      # one StepRecord per optimizer step (also in <run>/steps.jsonl)
    result.evaluation   # evaluate.evaluate's dict (also in <run>/eval.json), or None

Training runs on akl_core.lab.trainer.KDTrainer (akl_core.lab.engine). The run folder
(akl_core.lab.runs) receives config.json and one record per step as training goes, then the
student and eval.json. `on_record(record)` sees each step as it is written (the dashboard draws
it, the CLI moves its progress bar); `should_stop()` ends training between steps, after which
the student is still saved and evaluated unless `evaluate_after_stop=False`. `on_run(path)` is
told the run folder as soon as it exists. `progress(stage, done, total)` reports set-up stages
(done = total = 0 for a message). Under `accelerate launch` every process calls this; the main
process alone writes the run folder and evaluates. `resume=RUN_DIR` continues a run from its
last checkpoint (config.save_every > 0), dropping the records written after it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from akl_core.lab.distill import DistillConfig, StepRecord
from akl_core.lab.engine import Progress, say


@dataclass
class EvalSettings:
    """What to evaluate after training: `examples` (a list of data.Example) or the first `n`
    of `data` ("bundled:test" or a JSONL path); generation settings for evaluate.evaluate."""

    n: int = 16
    data: str = "bundled:test"
    examples: Sequence[Any] | None = None
    teacher_responses: Sequence[str] | None = None
    max_new_tokens: int | None = None
    batch_size: int = 8
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class ExperimentResult:
    """What one train-save-evaluate run produced."""

    config: DistillConfig
    records: list[StepRecord]
    evaluation: dict | None
    run_dir: Path | None
    student: Any
    teacher: Any
    stopped: bool


def load_eval_examples(source: str, n: int) -> list:
    """The first `n` examples of a bundled split ("bundled:test") or a JSONL file."""
    from akl_core.lab import data

    return data.load_source(source, default_split="test", limit=n)


def evaluate_student(
    student: Any, teacher: Any, settings: EvalSettings, progress: Progress | None = None
) -> dict:
    """Generate with the student (and the teacher's cached responses) and score them."""
    from akl_core.lab import data, evaluate

    examples = (
        list(settings.examples)
        if settings.examples is not None
        else load_eval_examples(settings.data, settings.n)
    )
    max_new = settings.max_new_tokens or data.DEFAULT_MAX_NEW_TOKENS
    t_resp = settings.teacher_responses
    if t_resp is None:
        def cb(done: int, total: int) -> None:
            if progress is not None:
                progress("teacher responses", done, total)

        t_resp = data.teacher_responses(teacher, examples, max_new_tokens=max_new, progress=cb)
    return evaluate.evaluate(student, examples, teacher_responses=t_resp,
                             max_new_tokens=max_new, batch_size=settings.batch_size,
                             progress=progress, **settings.extra)


def last_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint of a run (<run>/checkpoints/checkpoint-N holding the KD
    state file, written last), or None."""
    from akl_core.lab.trainer import KD_STATE_FILE

    folder = Path(run_dir) / "checkpoints"
    found = []
    for p in folder.glob("checkpoint-*") if folder.is_dir() else []:
        tail = p.name.partition("-")[2]
        if tail.isdigit() and (p / KD_STATE_FILE).is_file():
            found.append((int(tail), p))
    return max(found)[1] if found else None


def run_experiment(
    config: DistillConfig | None,
    *,
    teacher: Any = None,
    student: Any = None,
    examples: list | None = None,
    responses: list[str] | None = None,
    runs_dir: str | Path | None = None,
    name: str | None = None,
    save: bool = True,
    save_student: bool = True,
    evaluation: EvalSettings | None = None,
    evaluate_after_stop: bool = True,
    on_record: Callable[[StepRecord], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    progress: Progress | None = None,
    device: str | None = None,
    resume: str | Path | None = None,
    on_run: Callable[[Path], None] | None = None,
    trust_remote_code: bool = False,
    measure: Callable[[Any, int], dict] | None = None,
    callbacks: Sequence[Any] = (),
    meta: dict | None = None,
) -> ExperimentResult:
    """Train a student with `config`, save it into a run folder, evaluate it; see the module.

    teacher / student: ModelBundles (loaded from the config when None; a run with a
    teacher_cache loads no teacher for training). save=False writes no run folder (notebook
    smoke tests). evaluation=None skips evaluation. resume: a run folder (or a name under
    runs_dir) to continue; `config` is then None (the run's own is used). measure,
    callbacks, meta: passed to akl_core.lab.engine.train (a race's held-out metrics, its
    turn-taking callback, its race id in config.json).
    """
    from akl_core.lab import data, engine, models
    from akl_core.lab.runs import Run, load_run, resolve_run

    keep_steps, elapsed_offset, checkpoint, run_path = 0, 0.0, None, None
    if resume is not None:
        run_path = resolve_run(resume, runs_dir)
        saved = load_run(run_path)
        if config is None:
            config = DistillConfig.from_dict(saved.config)
        checkpoint = last_checkpoint(run_path)
        if checkpoint is None:
            raise ValueError(f"run {run_path.name} has no complete checkpoint to resume from "
                             "(run it with --save-every K)")
        keep_steps = int(checkpoint.name.partition("-")[2])
        kept = [s for s in saved.steps if s.get("step", 0) <= keep_steps]
        elapsed_offset = float(kept[-1].get("elapsed") or 0.0) if kept else 0.0
        say(progress, f"resuming {run_path.name} from step {keep_steps}")
    if config is None:
        raise ValueError("run_experiment needs a DistillConfig (or resume=RUN_DIR)")
    config.validate()
    state = engine.distributed_state(device)
    dev = device if device is not None else state.device
    cache = None
    if config.teacher_cache is not None:
        from akl_core.lab.teacher_cache import TeacherCache

        cache = TeacherCache.open(config.teacher_cache)
    if teacher is None and (cache is None or config.student.strip().lower().startswith(
            "truncate")):  # a truncate:K student starts from the teacher's weights
        teacher = models.load_teacher(config.teacher, device=dev,
                                      progress=lambda m: say(progress, m),
                                      trust_remote_code=trust_remote_code)
    if student is None:
        base = teacher if teacher is not None else cache.stand_in(device=dev)
        student = models.load_student(config.student, base, seed=config.seed, device=dev,
                                      trust_remote_code=trust_remote_code)
    # Data errors surface before a run folder exists.
    if examples is None:
        examples = engine.load_examples(config)
    probe_rows = None
    if cache is not None:
        rows = cache.rows_for(config, examples, student.tokenizer)
        probe_rows = cache.dense_rows(rows[0], vocab_size=len(student.tokenizer))
    else:
        if responses is None:
            responses = engine.training_responses(config, teacher, examples, progress)
        encoded = data.tokenize_for_kd(teacher.tokenizer, examples, responses,
                                       max_length=config.max_length)
        rows = engine.rows_from_encoded(encoded)

    run = None
    if save:
        path = None
        if state.is_main_process:
            if run_path is not None:
                run = Run.reopen(run_path, keep_steps=keep_steps)
            else:
                run = Run.create(runs_dir, name=name, loss=config.loss)
            path = str(run.path)
        if state.num_processes > 1:
            from accelerate.utils import broadcast_object_list

            box = [path]
            broadcast_object_list(box, from_process=0)
            path = box[0]
        if on_run is not None and state.is_main_process:
            on_run(Path(path))
        output_dir = Path(path) / "checkpoints"
    else:
        output_dir = None
    try:
        outcome = engine.train(
            config, teacher=teacher if cache is None else None, student=student, rows=rows,
            examples=examples, run=run,
            output_dir=output_dir, on_record=on_record, should_stop=should_stop,
            progress=progress, resume_from=checkpoint, elapsed_offset=elapsed_offset,
            device=device, probe_teacher_rows=probe_rows, measure=measure,
            callbacks=callbacks, meta=meta,
        )
    except BaseException:
        if run is not None and run_path is None:
            run.discard_if_empty()  # failed or interrupted before its first step
        raise
    discarded = False
    if run is not None and run_path is None and outcome.stopped and not outcome.records:
        discarded = run.discard_if_empty()  # stopped before its first step: nothing to keep
        run = None
    stopped = outcome.stopped
    if save and save_student and not discarded:
        say(progress, "saving the student")
        student_dir = Path(output_dir).parent / "student"
        outcome.trainer.save_model(str(student_dir))
        if state.is_main_process:
            student.tokenizer.save_pretrained(student_dir)
    result_eval = None
    if (state.is_main_process and evaluation is not None
            and (evaluate_after_stop or not stopped)):
        if teacher is None:
            teacher = models.load_teacher(config.teacher, device=dev,
                                          progress=lambda m: say(progress, m),
                                          trust_remote_code=trust_remote_code)
        result_eval = evaluate_student(student, teacher, evaluation, progress)
        if run is not None:
            run.write_eval(result_eval)
    return ExperimentResult(config=config, records=outcome.records, evaluation=result_eval,
                            run_dir=run.path if run is not None else None, student=student,
                            teacher=teacher, stopped=stopped)
