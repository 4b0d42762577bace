"""Train, save, evaluate: the one path every front-end (CLI, dashboard, notebooks) calls.

    result = run_experiment(DistillConfig(loss="akl", steps=50), runs_dir="runs")
    result.records      # one StepRecord per optimizer step (also in <run>/steps.jsonl)
    result.evaluation   # evaluate.evaluate's dict (also in <run>/eval.json), or None

The run folder (akl_core.lab.runs) receives config.json and one record per step as training
goes, then the student (save_student) and eval.json. `on_record(record)` sees each step as it
is written (the dashboard draws it, the CLI moves its progress bar); `should_stop()` ends
training between steps, after which the student is still saved and evaluated unless
`evaluate_after_stop=False`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from akl_core.lab.distill import DistillConfig, StepRecord, distill

Progress = Callable[[str, int, int], None]


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

    if source.startswith("bundled"):
        examples = data.load_bundled(source.partition(":")[2] or "test")
    else:
        if not Path(source).is_file():
            raise ValueError(f"no such evaluation file {source!r}")
        examples = data.load_jsonl(source)
    examples = examples[:n]
    if not examples:
        raise ValueError(f"no evaluation examples in {source!r}")
    return examples


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


def run_experiment(
    config: DistillConfig,
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
) -> ExperimentResult:
    """Train a student with `config`, save it into a run folder, evaluate it; see the module.

    teacher / student: ModelBundles (loaded from the config when None). save=False writes no
    run folder (notebook smoke tests). evaluation=None skips evaluation.
    """
    from akl_core.lab import models
    from akl_core.lab.runs import Run

    config.validate()
    if teacher is None:
        teacher = models.load_teacher(config.teacher, device=device, progress=None)
    if student is None:
        student = models.load_student(config.student, teacher, seed=config.seed, device=device)
    run = Run.create(runs_dir, name=name, loss=config.loss) if save else None
    session = distill(config, teacher=teacher, student=student, examples=examples,
                      responses=responses, should_stop=should_stop, run=run, progress=progress)
    records: list[StepRecord] = []
    try:
        for record in session:
            records.append(record)
            if on_record is not None:
                on_record(record)
    except KeyboardInterrupt:
        session.close()
        raise
    stopped = bool(session.stopped)
    if run is not None and save_student:
        student.model.save_pretrained(run.student_dir, safe_serialization=True)
        student.tokenizer.save_pretrained(run.student_dir)
    result_eval = None
    if evaluation is not None and (evaluate_after_stop or not stopped):
        result_eval = evaluate_student(student, teacher, evaluation, progress)
        if run is not None:
            run.write_eval(result_eval)
    return ExperimentResult(config=config, records=records, evaluation=result_eval,
                            run_dir=run.path if run is not None else None, student=student,
                            teacher=teacher, stopped=stopped)
