"""A race of 2-4 distillation losses on the one engine, in lockstep, on common metrics.

    result = run_race(["fkl", "rkl", "akl"], DistillConfig(steps=12, batch_size=2),
                      teacher=teacher, on_step=print)
    result.curves()        # {racer label: {"step": [...], "kl_pq": [...], ...}}

Every racer trains a copy of the SAME student initialisation (built once, then deep-copied)
with its own loss through :func:`akl_core.lab.experiment.run_experiment` (KDTrainer, the
engine's seeded batch stream: every racer reads the same rows at every step), in its own
thread and run folder. The racers take turns one optimizer step at a time (a turn token handed
on by a TrainerCallback at the end of each step), so exactly one racer computes at any moment
and the torch threads are never oversubscribed.

After each of its steps a racer is measured on ONE FIXED held-out batch (:class:`HeldOut`: the
first `batch_size` examples of ``bundled:validation`` by default; the teacher's logits on it are
computed once at race start) with one ``akl_core.distillation_loss(..., return_stats=True)``
call (no second model pass): see :class:`RaceStep` for the metrics. Each step's metrics are
also stored in the racer's ``steps.jsonl`` (``heldout``); the run folders are named
``<race id>-<label>`` and carry ``meta.race`` in their config.json, so they can be grouped.

Stop: ``should_stop()`` is asked before each forward and after each backward (and while a
racer waits for its turn), so it takes effect within one forward/backward; finished steps are
kept (racers later in the turn order may have one step fewer).

Threads: torch's intra-op thread count is process-wide; :func:`auto_threads` picks it (every
core up to 4; see there for the measurements); ``threads=`` overrides it.
"""

from __future__ import annotations

import copy
import os
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

import akl_core
from akl_core.lab.distill import DistillConfig, StepRecord
from akl_core.lab.engine import Progress, say

MIN_RACERS, MAX_RACERS = 2, 4
#: Head mass and boundary of the common head/tail metrics (the paper's default split).
HEAD_MU, HEAD_BOUNDARY = 0.5, "reference"
#: Names of the held-out metrics (RaceStep fields and keys of StepRecord.heldout).
METRICS = ("kl_pq", "kl_qp", "g_head", "g_tail", "w", "head_acc", "own_loss")
METRIC_LABELS = {
    "kl_pq": "KL(p||q) held-out",
    "kl_qp": "KL(q||p) held-out",
    "g_head": "head gap g_head held-out",
    "g_tail": "tail gap g_tail held-out",
    "w": "mean AKL weight w held-out",
    "head_acc": "head-token accuracy held-out",
    "own_loss": "own loss on the held-out batch",
    "train_loss": "own training loss (its batch)",
}


# ----------------------------------------------------------------------------------------------
# Threads
# ----------------------------------------------------------------------------------------------


def auto_threads(cpu_count: int | None = None) -> int:
    """The torch thread count of a run: every core, at most 4 (a truncate:4 student on 2 x 64
    tokens gains little from more; the cap is not measured here, this machine has 2 cores).

    Not fewer when other work shares the cores: measured on the 2-core development machine
    (quick lecture preset, a race of FKL, RKL and AKL, after the app stopped its per-rerun
    full garbage collections), 2 threads beat 1 in every condition:
      the app in Chromium, quiet: finish 59.8 s with 2 threads, 70.3 s with 1;
      the app beside two 2-thread matmul jobs: 145 s with 2, 180 s with 1;
      a bare process beside the same jobs, 4 rounds, alternating: 43.7 and 55.5 s with 2,
      61.7 and 63.9 s with 1.
    An earlier rule (the cores left idle by the load average) picked 1 thread whenever the
    browser or the app's own start kept the load above 1, i.e. nearly always on a laptop.
    """
    cpus = int(cpu_count if cpu_count is not None else (os.cpu_count() or 1))
    return max(1, min(cpus, 4))


def resolve_threads(threads: int | str | None) -> int:
    """``None`` / ``"auto"`` -> :func:`auto_threads`; a positive int as is; else ValueError."""
    if threads is None or threads == "auto":
        return auto_threads()
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive integer or 'auto', got {threads!r}")
    return threads


# ----------------------------------------------------------------------------------------------
# Racers, records, results
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RacerSpec:
    """One racer: a loss of akl_core.LOSSES, its parameters, and a label (default: the loss
    name; labels must be unique within a race and name the run folders)."""

    loss: str
    params: Mapping[str, Any] = field(default_factory=dict)
    label: str | None = None

    @property
    def name(self) -> str:
        return self.label or self.loss


@dataclass
class RaceStep:
    """One racer after one optimizer step, measured on the race's fixed held-out batch.

    Over the held-out response positions (p = teacher, q = student after the step's update,
    both at the config's temperature): kl_pq = mean KL(p||q), kl_qp = mean
    KL(q||p); g_head / g_tail = mean head / tail L1 gaps and w = mean AKL weight, with the
    common head split (mu = HEAD_MU = 0.5, boundary "reference") for every racer; head_acc =
    head-token accuracy: the fraction of positions where the student's most probable token is
    in the teacher's head (the smallest set of top tokens holding mass 0.5, always including
    the teacher's top-1; so it is at least the top-1 agreement); own_loss = the racer's own
    loss (its params) on the held-out batch. train_loss = its own loss on its training batch
    (StepRecord.loss, measured before the update). step_time: seconds of the step (held-out
    measure excluded); record: the engine's full StepRecord (its probe too).
    """

    racer: str
    loss: str
    step: int
    kl_pq: float
    kl_qp: float
    g_head: float
    g_tail: float
    w: float
    head_acc: float
    own_loss: float
    train_loss: float
    step_time: float
    measure_time: float
    record: StepRecord

    def to_dict(self) -> dict:
        """The numbers (no record)."""
        return {k: getattr(self, k) for k in ("racer", "loss", "step", *METRICS, "train_loss",
                                              "step_time", "measure_time")}


@dataclass
class RacerResult:
    """One racer's outcome: its steps, run folder (None without save), whether it stopped
    early, its error (a message; the other racers go on) and the trained student."""

    spec: RacerSpec
    steps: list[RaceStep] = field(default_factory=list)
    run_dir: Path | None = None
    stopped: bool = False
    error: str | None = None
    student: Any = None


@dataclass
class RaceResult:
    """A race: its id, the racers in turn order, whether Stop ended it, the torch threads used
    and the wall seconds."""

    race_id: str
    racers: list[RacerResult]
    stopped: bool
    threads: int
    elapsed: float

    def curves(self) -> dict[str, dict[str, list[float]]]:
        """{label: history} for akl_core.lab.viz: 'step', every METRICS key and 'train_loss'."""
        return race_curves({r.spec.name: r.steps for r in self.racers})


def race_curves(steps: Mapping[str, Sequence[RaceStep]]) -> dict[str, dict[str, list[float]]]:
    """{label: [RaceStep, ...]} -> {label: {'step': [...], metric: [...], 'train_loss': [...]}}."""
    return {label: {"step": [s.step for s in rows],
                    **{k: [getattr(s, k) for s in rows] for k in (*METRICS, "train_loss")}}
            for label, rows in steps.items()}


def rounds_done(steps: Mapping[str, Sequence[Any]], failed: Collection[str] = ()) -> int:
    """Lockstep rounds finished: the fewest steps of any racer not in `failed` (those that
    stopped with an error no longer hold the others back); 0 when none is left."""
    counts = [len(rows) for label, rows in steps.items() if label not in failed]
    return min(counts, default=0)


def parse_racers(losses: Sequence[str | RacerSpec | tuple[str, Mapping[str, Any]]]) -> list[RacerSpec]:
    """RacerSpecs from names, (name, params) pairs or RacerSpecs; ValueError for a count
    outside 2-4, an unknown loss, bad parameters or a duplicate label."""
    if isinstance(losses, (str, bytes)) or not isinstance(losses, Sequence):
        raise ValueError(f"losses must be a list of {MIN_RACERS}-{MAX_RACERS} loss names, got "
                         f"{losses!r}")
    specs = []
    for item in losses:
        if isinstance(item, RacerSpec):
            spec = item
        elif isinstance(item, str):
            spec = RacerSpec(item.strip().lower())
        elif isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], Mapping):
            spec = RacerSpec(str(item[0]).strip().lower(), dict(item[1]))
        else:
            raise ValueError(f"a racer must be a loss name, (name, params) or RacerSpec, got "
                             f"{item!r}")
        if spec.loss not in akl_core.LOSSES:
            raise ValueError(f"unknown loss {spec.loss!r}: choose from "
                             f"{', '.join(akl_core.LOSSES)}")
        try:
            akl_core.resolve_params(spec.loss, **dict(spec.params))
        except (TypeError, ValueError) as e:
            raise ValueError(f"racer {spec.name!r}: {e}") from None
        specs.append(spec)
    if not MIN_RACERS <= len(specs) <= MAX_RACERS:
        raise ValueError(f"a race needs {MIN_RACERS} to {MAX_RACERS} losses, got {len(specs)}")
    names = [s.name for s in specs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"each loss may race once (or give racers distinct labels); repeated: "
                         f"{', '.join(dupes)}")
    return specs


# ----------------------------------------------------------------------------------------------
# The fixed held-out batch
# ----------------------------------------------------------------------------------------------


@dataclass
class HeldOut:
    """The race's fixed held-out batch and the teacher's part of the metrics, computed once.

    input_ids / attention_mask: [B, T]; valid: [B, T-1] bool, the response positions
    (labels[:, 1:] != -100); teacher_logits: [N, V] at those positions (N = valid.sum(), V =
    the shared vocabulary); head: [N, V] bool, the teacher's head (mu 0.5, "reference");
    source / ids: where the examples come from.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    valid: torch.Tensor
    teacher_logits: torch.Tensor
    head: torch.Tensor
    vocab_size: int
    temperature: float
    source: str
    ids: list[str]

    @classmethod
    @torch.no_grad()
    def build(cls, teacher: Any, config: DistillConfig, *, source: str = "bundled:validation",
              n: int | None = None, examples: Sequence[Any] | None = None,
              responses: Sequence[str] | None = None) -> HeldOut:
        """The first `n` (default config.batch_size) examples of `source` (or `examples`),
        with the config's targets (teacher responses or gold), tokenised as for training
        (config.max_length); one teacher forward."""
        from akl_core.lab import data, engine

        if teacher is None:
            raise ValueError("a race needs the teacher model for its held-out batch")
        n = int(n if n is not None else config.batch_size)
        if examples is None:
            examples = data.load_source(source, default_split="validation", limit=n)
        examples = list(examples)[:n]
        if not examples:
            raise ValueError(f"no held-out examples in {source}")
        if responses is None:
            responses = engine.training_responses(replace(config, data=source), teacher,
                                                  examples)
        enc = data.tokenize_for_kd(teacher.tokenizer, examples, list(responses)[:n],
                                   max_length=config.max_length)
        valid = enc["labels"][:, 1:] != -100
        if not bool(valid.any()):
            raise ValueError("the held-out batch has no response tokens: raise max_length")
        vocab = len(teacher.tokenizer)
        dev = next(teacher.model.parameters()).device
        teacher.model.eval()
        out = teacher.model(input_ids=enc["input_ids"].to(dev),
                            attention_mask=enc["attention_mask"].to(dev))
        t = out.logits[:, :-1][valid.to(dev)][:, :vocab].float().cpu()
        from akl_core.headtail import head_mask

        head = head_mask(t, mu=HEAD_MU, boundary=HEAD_BOUNDARY, temperature=config.temperature)
        return cls(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                   valid=valid, teacher_logits=t, head=head, vocab_size=vocab,
                   temperature=float(config.temperature), source=source,
                   ids=[str(getattr(e, "id", i)) for i, e in enumerate(examples)])

    @torch.no_grad()
    def student_logits(self, model: Any) -> torch.Tensor:
        """The student's logits [N, V] at the held-out positions (eval mode, no grad; the
        model's train/eval mode is restored)."""
        was_training = model.training
        model.eval()
        try:
            dev = next(model.parameters()).device
            out = model(input_ids=self.input_ids.to(dev),
                        attention_mask=self.attention_mask.to(dev))
            return out.logits[:, :-1][self.valid.to(dev)][:, : self.vocab_size].float().cpu()
        finally:
            model.train(was_training)

    def metrics(self, student_logits: torch.Tensor, loss: str,
                params: Mapping[str, Any]) -> dict[str, float]:
        """The held-out metrics (RaceStep's) of student logits [N, V]; one
        distillation_loss(return_stats=True) call (two only when the racer's own head split
        differs from the common one: then the second, loss-only, gives the common split)."""
        s, t = student_logits, self.teacher_logits
        params = dict(params)
        own, stats = akl_core.distillation_loss(s, t, loss=loss, temperature=self.temperature,
                                                return_stats=True, **params)
        resolved = akl_core.resolve_params(loss, **params)
        if loss in ("akl", "akl_r") and (float(resolved.get("mu", HEAD_MU)) != HEAD_MU or
                                        resolved.get("boundary", HEAD_BOUNDARY) != HEAD_BOUNDARY):
            _, stats = akl_core.distillation_loss(s, t, loss="akl", mu=HEAD_MU,
                                                  boundary=HEAD_BOUNDARY,
                                                  temperature=self.temperature,
                                                  return_stats=True)
        summary = stats.summary()
        top = s.argmax(dim=-1)
        acc = float(self.head[torch.arange(s.shape[0]), top].double().mean())
        return {"kl_pq": summary["fkl"], "kl_qp": summary["rkl"], "g_head": summary["g_head"],
                "g_tail": summary["g_tail"], "w": summary["w"], "head_acc": acc,
                "own_loss": float(own)}


# ----------------------------------------------------------------------------------------------
# Lockstep
# ----------------------------------------------------------------------------------------------


class _Baton:
    """The turn token: racer `turn` may compute; the others wait. Racers that end leave."""

    def __init__(self, n: int) -> None:
        self.cond = threading.Condition()
        self.turn = 0
        self.active = list(range(n))

    def _next(self, i: int) -> int:
        later = [j for j in self.active if j > i]
        return later[0] if later else (self.active[0] if self.active else -1)

    def wait(self, i: int, stop: Callable[[], bool]) -> None:
        with self.cond:
            while self.turn != i and not stop():
                self.cond.wait(0.05)

    def pass_on(self, i: int) -> None:
        with self.cond:
            if self.turn == i:
                self.turn = self._next(i)
            self.cond.notify_all()

    def leave(self, i: int) -> None:
        with self.cond:
            if i in self.active:
                nxt = self._next(i)
                self.active.remove(i)
                if self.turn == i:
                    self.turn = nxt if nxt != i else -1
            self.cond.notify_all()


class _TurnCallback(TrainerCallback):
    """Waits for the racer's turn before each step; hands the turn on after it (registered
    after the engine's recorder, so the step's record and held-out metrics come first)."""

    def __init__(self, baton: _Baton, index: int, stop: Callable[[], bool]) -> None:
        self.baton, self.index, self.stop = baton, index, stop

    def on_step_begin(self, args, state, control, **kwargs):
        self.baton.wait(self.index, self.stop)

    def on_step_end(self, args, state, control, **kwargs):
        self.baton.pass_on(self.index)


# ----------------------------------------------------------------------------------------------
# The race
# ----------------------------------------------------------------------------------------------


def new_race_id() -> str:
    """race-<timestamp>, the prefix of the racers' run folders."""
    return f"race-{time.strftime('%Y%m%d-%H%M%S')}"


def run_race(
    losses: Sequence[str | RacerSpec | tuple[str, Mapping[str, Any]]],
    config: DistillConfig,
    *,
    teacher: Any,
    student: Any = None,
    runs_dir: str | Path | None = None,
    save: bool = True,
    save_student: bool = True,
    on_step: Callable[[RaceStep], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    threads: int | str | None = "auto",
    heldout: HeldOut | None = None,
    heldout_source: str = "bundled:validation",
    examples: Sequence[Any] | None = None,
    race_id: str | None = None,
    progress: Progress | None = None,
    on_run: Callable[[str, Path], None] | None = None,
    on_error: Callable[[str, str], None] | None = None,
) -> RaceResult:
    """Race `losses` (2-4 names, (name, params) pairs or RacerSpecs) from one student
    initialisation on the same batches in lockstep; see the module.

    config: the shared settings (its loss / loss_params are replaced per racer; a
    teacher_cache is used for training as in run_experiment). teacher: a ModelBundle (needed:
    the held-out batch's teacher logits; also the base of a truncate:K student). student: a
    ModelBundle to start from (deep-copied per racer, not trained), default built from
    config.student with config.seed. on_step(RaceStep): called in the racer's thread, inside
    its turn. should_stop(): see the module. threads: torch's thread count ("auto":
    :func:`auto_threads`; set process-wide). heldout: a prepared :class:`HeldOut` (default:
    built from `heldout_source`). on_run(label, folder): each run folder as it is created.
    Raises ValueError for bad racers before anything runs; a racer's own failure is reported
    in its RacerResult.error (and to on_error(label, message) in its thread, at once) while
    the others finish.
    """
    from akl_core.lab import models
    from akl_core.lab.experiment import run_experiment

    specs = parse_racers(losses)
    config.validate()
    n_threads = resolve_threads(threads)
    torch.set_num_threads(n_threads)
    race_id = race_id or new_race_id()
    t0 = time.perf_counter()
    if heldout is None:
        say(progress, "held-out batch (one teacher pass)")
        heldout = HeldOut.build(teacher, config, source=heldout_source)
    if student is None:
        say(progress, f"building the student {config.student}")
        student = models.load_student(config.student, teacher, seed=config.seed)
    if examples is None:
        from akl_core.lab import engine

        examples = engine.load_examples(config)
    configs = [replace(config, loss=s.loss, loss_params=dict(s.params)).validate() for s in specs]

    stop_event = threading.Event()

    def stopping() -> bool:
        if not stop_event.is_set() and should_stop is not None and should_stop():
            stop_event.set()
        return stop_event.is_set()

    baton = _Baton(len(specs))
    results = [RacerResult(spec=s) for s in specs]
    meta_race = {"id": race_id, "racers": [s.name for s in specs], "heldout": heldout.source,
                 "heldout_ids": heldout.ids, "threads": n_threads}

    def racer(i: int) -> None:
        spec, cfg, res = specs[i], configs[i], results[i]
        bundle = models.ModelBundle(copy.deepcopy(student.model), student.tokenizer,
                                    f"{student.name} ({spec.name})", student.device)
        last_end = [time.perf_counter()]

        def measure(trainer: Any, step: int) -> dict:
            t = time.perf_counter()
            logits = heldout.student_logits(trainer.model)
            out = heldout.metrics(logits, spec.loss, trainer.current_params())
            out["measure_time"] = time.perf_counter() - t
            return out

        def on_record(record: StepRecord) -> None:
            h = record.heldout or {}
            now = time.perf_counter()
            step = RaceStep(racer=spec.name, loss=spec.loss, step=record.step,
                            **{k: float(h[k]) for k in METRICS}, train_loss=float(record.loss),
                            step_time=max(now - last_end[0] - h.get("measure_time", 0.0), 0.0),
                            measure_time=float(h.get("measure_time", 0.0)), record=record)
            last_end[0] = now
            res.steps.append(step)
            if on_step is not None:
                on_step(step)

        def got_run(path: Path) -> None:
            res.run_dir = Path(path)
            if on_run is not None:
                on_run(spec.name, Path(path))

        class _Clock(TrainerCallback):
            def on_step_begin(self, args, state, control, **kwargs):
                last_end[0] = time.perf_counter()  # the wait for the turn is not step time

        try:
            out = run_experiment(
                cfg, teacher=teacher, student=bundle, examples=list(examples),
                runs_dir=runs_dir, name=f"{race_id}-{spec.name}", save=save,
                save_student=save_student, evaluation=None, on_record=on_record,
                should_stop=stopping, on_run=got_run, measure=measure,
                callbacks=[_TurnCallback(baton, i, stopping), _Clock()],
                meta={"race": {**meta_race, "racer": spec.name}},
            )
            res.stopped, res.student = out.stopped, out.student
        except Exception as e:  # noqa: BLE001 - one racer failing does not end the race
            res.error = str(e) if isinstance(e, ValueError) else f"{type(e).__name__}: {e}"
            if on_error is not None:
                on_error(spec.name, res.error)
        finally:
            baton.leave(i)

    say(progress, "training")
    workers = [threading.Thread(target=racer, args=(i,), name=f"akl-race-{s.name}", daemon=True)
               for i, s in enumerate(specs)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return RaceResult(race_id=race_id, racers=results, stopped=stop_event.is_set(),
                      threads=n_threads, elapsed=time.perf_counter() - t0)
