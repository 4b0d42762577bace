"""The explorer's runs on KDTrainer: data as a seeded stream, TrainingArguments from a
DistillConfig, one StepRecord per optimizer step through a TrainerCallback.

    outcome = train(config, teacher=teacher, student=student, run=run, on_record=print)

Front-ends call akl_core.lab.experiment.run_experiment (train, save, evaluate), which calls
:func:`train`. Batches: the tokenised examples in an endless seeded order (a fresh permutation
each epoch, as akl_core.lab.data.iterate_batches), read sequentially, so one optimizer step
always takes the next batch_size x grad_accum x processes rows of the stream: 2 processes x
batch b, 2 accumulation steps x b and 1 process x 2b see the same rows. Rows are padded per
micro-batch (KDCollator). The probe is the first example of the data, diagnosed after the
update by akl_core.lab.diagnostics (the teacher's part computed once).

Multi-process (``accelerate launch``): every process runs the same call; only the main process
writes the run folder and calls ``on_record``; ``should_stop`` must be given to every process
alike (None, or a callable; the main process's answer is broadcast).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback, TrainingArguments

from akl_core.lab.distill import DistillConfig, ProbeRecord, StepRecord
from akl_core.lab.trainer import SPARSE_KEYS, KDCollator, KDTrainer, _PhaseStop

# The one progress-callback shape of the explorer: progress(stage, done, total); a stage
# without a count (a message) comes with done = total = 0.
Progress = Callable[[str, int, int], None]

# accelerate keeps one process-wide state that TrainingArguments resets; runs in threads of
# one process (the dashboard) build their Trainers one at a time, and reuse the state while
# another run trains.
_STATE_LOCK = threading.Lock()
_ACTIVE_RUNS = 0


def say(progress: Progress | None, message: str) -> None:
    """Send a message-only stage to a progress callback."""
    if progress is not None:
        progress(message, 0, 0)


def lr_factor(step: int, config: DistillConfig) -> float:
    """Multiplier of the base lr for 0-based optimizer step `step`: linear warm-up from
    1/warmup_steps, then constant, linear decay to 0 or cosine decay to 0 at `steps`."""
    warm = config.warmup_steps
    if warm and step < warm:
        return (step + 1) / warm
    if config.scheduler == "constant":
        return 1.0
    span = max(1, config.steps - warm)
    frac = min(1.0, (step - warm) / span)
    if config.scheduler == "linear":
        return max(0.0, 1.0 - frac)
    return 0.5 * (1.0 + math.cos(math.pi * frac))


# ----------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------


def load_examples(config: DistillConfig) -> list:
    """The examples named by ``config.data`` (cut to ``max_examples``)."""
    from akl_core.lab import data

    return data.load_source(config.data, limit=config.max_examples)


def training_responses(config: DistillConfig, teacher: Any, examples: Sequence[Any],
                       progress: Progress | None = None) -> list[str]:
    """The training targets: the data's gold responses, or the teacher's greedy responses
    (committed / cached, generated only when missing)."""
    from akl_core.lab import data

    if config.targets == "gold":
        missing = [ex.id for ex in examples if not ex.response]
        if missing:
            raise ValueError(f"targets='gold' but {len(missing)} examples have no response "
                             f"(first: {missing[0]!r})")
        return [ex.response for ex in examples]
    if teacher is None:
        raise ValueError("targets='teacher' needs the teacher (or a teacher cache)")

    def cb(done: int, total: int) -> None:
        if progress is not None:
            progress("teacher responses", done, total)

    return data.teacher_responses(teacher, examples, max_new_tokens=config.response_tokens,
                                  progress=cb)


def rows_from_encoded(encoded: dict[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
    """Per-example rows (input_ids, labels) of tokenize_for_kd's padded tensors, unpadded."""
    rows = []
    for i in range(encoded["input_ids"].shape[0]):
        n = int(encoded["attention_mask"][i].sum())
        rows.append({"input_ids": encoded["input_ids"][i, :n].clone(),
                     "labels": encoded["labels"][i, :n].clone()})
    return rows


class StreamDataset(torch.utils.data.Dataset):
    """Item i = row ``order[i]`` of an endless seeded stream: successive permutations of the
    rows drawn from one ``torch.Generator(seed)`` (akl_core.lab.data.iterate_batches' order),
    cut to `length` items."""

    def __init__(self, rows: Sequence[dict[str, Any]], length: int, seed: int) -> None:
        if not rows:
            raise ValueError("no rows to train on")
        self.rows = list(rows)
        self.length = int(length)
        generator = torch.Generator().manual_seed(int(seed))
        order: list[int] = []
        while len(order) < self.length:
            order += torch.randperm(len(self.rows), generator=generator).tolist()
        self.order = order[: self.length]

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.rows[self.order[i]]


# ----------------------------------------------------------------------------------------------
# Records
# ----------------------------------------------------------------------------------------------


class RecordCallback(TrainerCallback):
    """One StepRecord per optimizer step (KDTrainer.last_step + lr, timing, probe): written to
    the run folder and passed to ``on_record`` on the main process; ``should_stop()`` ends
    training after the step (``control.should_training_stop``)."""

    def __init__(
        self,
        trainer_ref: list,
        config: DistillConfig,
        *,
        n_examples: int,
        probe: Callable[[int], ProbeRecord] | None,
        run: Any = None,
        on_record: Callable[[StepRecord], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        elapsed_offset: float = 0.0,
        measure: Callable[[Any, int], dict] | None = None,
    ) -> None:
        self.measure = measure
        self.trainer_ref = trainer_ref
        self.config = config
        self.n_examples = n_examples
        self.probe = probe
        self.run = run
        self.on_record = on_record
        self.should_stop = should_stop
        self.elapsed_offset = elapsed_offset
        self.records: list[StepRecord] = []
        self.stopped = False
        self._lr = float(config.lr)
        self._t0 = self._t_prev = time.perf_counter()

    def on_train_begin(self, args, state, control, **kwargs):
        self._t0 = self._t_prev = time.perf_counter()

    def on_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
        if optimizer is not None:
            self._lr = float(optimizer.param_groups[0]["lr"])

    def on_step_end(self, args, state, control, **kwargs):
        trainer: KDTrainer = self.trainer_ref[0]
        last = trainer.last_step
        if last is None:
            return
        now = time.perf_counter()
        step = int(state.global_step)
        step_time = now - self._t_prev
        world = int(args.world_size)
        per_step = args.per_device_train_batch_size * args.gradient_accumulation_steps * world
        probe = None
        cfg = self.config
        if self.probe is not None and cfg.probe_every and (step % cfg.probe_every == 0
                                                           or step == 1):
            probe = self.probe(step)
        heldout = self.measure(trainer, step) if self.measure is not None else None
        record = StepRecord(
            step=step, loss=last["loss"], kd_loss=last["kd_loss"], lm_loss=last["lm_loss"],
            g_head=last["g_head"], g_tail=last["g_tail"], w=last["w"],
            head_size=last["head_size"], teacher_entropy=last["teacher_entropy"],
            student_entropy=last["student_entropy"], fkl=last["fkl"], rkl=last["rkl"],
            lr=self._lr, tokens=last["tokens"],
            tokens_per_second=last["tokens"] / max(step_time, 1e-9), step_time=step_time,
            elapsed=self.elapsed_offset + now - self._t0,
            epoch=((step - 1) * per_step) // max(self.n_examples, 1),
            taid_t=last["taid_t"] if cfg.loss == "taid" else None,
            world_size=world, grad_accum=int(args.gradient_accumulation_steps), probe=probe,
            heldout=heldout,
        )
        self.records.append(record)
        if state.is_world_process_zero:
            if self.run is not None:
                d = record.to_dict()
                probe_d = d.pop("probe")
                self.run.append_step(d)
                if probe_d is not None:
                    self.run.append_probe(probe_d)
            if self.on_record is not None:
                self.on_record(record)
        if self.should_stop is not None:
            stop = bool(self.should_stop()) if state.is_world_process_zero else False
            if world > 1:
                from accelerate.utils import broadcast_object_list

                flag = [stop]
                broadcast_object_list(flag, from_process=0)
                stop = bool(flag[0])
            if stop and step < state.max_steps:
                control.should_training_stop = True
                self.stopped = True
        self._t_prev = time.perf_counter()


def make_probe(trainer_ref: list, config: DistillConfig, row: dict[str, torch.Tensor],
               example: Any, teacher: Any, tokenizer: Any, vocab_size: int | None,
               teacher_rows: torch.Tensor | None = None) -> Callable[[int], ProbeRecord]:
    """probe(step) -> ProbeRecord of `row` (the fixed probe example) with the current student.

    The teacher's logits at the response positions are computed once (or `teacher_rows`
    [n, V], e.g. rebuilt from a teacher cache, are used)."""
    from akl_core.lab.diagnostics import _logits, model_diagnostics

    ids = row["input_ids"]
    predict = row["labels"][1:] != -100
    cache: dict[str, torch.Tensor] = {}
    if teacher_rows is not None:
        cache["t"] = teacher_rows

    def probe(step: int) -> ProbeRecord:
        trainer: KDTrainer = trainer_ref[0]
        if "t" not in cache:
            cache["t"] = _logits(teacher, ids)[predict]
        diag = model_diagnostics(
            None, ids, student=trainer.model_wrapped, predict=predict, tokenizer=tokenizer,
            teacher_logits=cache["t"], loss=config.loss, loss_params=trainer.current_params(),
            temperature=config.temperature, topk=config.probe_topk, vocab_size=vocab_size,
        )
        return ProbeRecord(step=step, example_id=str(getattr(example, "id", 0)),
                           prompt=str(getattr(example, "instruction", "")), **diag.to_dict())

    return probe


# ----------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------


@dataclass
class TrainOutcome:
    """What :func:`train` produced: the records (every process keeps them), whether Stop ended
    it early, the trainer (its ``model`` is the trained student) and the processes."""

    records: list[StepRecord]
    stopped: bool
    trainer: KDTrainer
    world_size: int = 1
    checkpoints: list[str] = field(default_factory=list)


def use_cpu(device: str | torch.device | None) -> bool:
    """Whether the Trainer must stay on the CPU (asked for, or no accelerator present)."""
    if device is not None:
        return torch.device(device).type == "cpu"
    return not torch.cuda.is_available()


def training_arguments(config: DistillConfig, output_dir: str | Path, *,
                       device: str | torch.device | None = None,
                       configured_state: bool = False) -> TrainingArguments:
    """TrainingArguments for a run: the config's optimisation settings, no Trainer logging,
    progress bars or reporting (the records are the log), checkpoints every save_every."""
    return TrainingArguments(
        output_dir=str(output_dir),
        max_steps=config.steps,
        per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum,
        learning_rate=config.lr,
        weight_decay=config.weight_decay,
        max_grad_norm=config.grad_clip if config.grad_clip is not None else 0.0,
        seed=config.seed,
        data_seed=config.seed,
        bf16=config.bf16,
        use_cpu=use_cpu(device),
        # fused AdamW: one kernel per step instead of a loop over the parameters; on the CPU
        # 0.036 s against 0.23 s per step for a truncate:4 student's 42M parameters (2 threads)
        optim="adamw_torch_fused",
        logging_strategy="no",
        save_strategy="steps" if config.save_every else "no",
        save_steps=config.save_every or 500,
        save_total_limit=2 if config.save_every else None,
        report_to="none",
        disable_tqdm=True,
        remove_unused_columns=False,
        train_sampling_strategy="sequential",
        dataloader_pin_memory=False,
        ddp_find_unused_parameters=False,
        log_level="warning",
        log_level_replica="error",
        accelerator_config={"use_configured_state": configured_state},
    )


def distributed_state(device: str | torch.device | None = None) -> Any:
    """accelerate's process state (process_index, num_processes, device), initialised on
    first use (under ``accelerate launch``: the process group)."""
    from accelerate import PartialState

    return PartialState(cpu=use_cpu(device))


def train(
    config: DistillConfig,
    *,
    teacher: Any,
    student: Any,
    rows: Sequence[dict[str, Any]] | None = None,
    examples: Sequence[Any] | None = None,
    responses: Sequence[str] | None = None,
    run: Any = None,
    output_dir: str | Path | None = None,
    on_record: Callable[[StepRecord], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    progress: Progress | None = None,
    resume_from: str | Path | None = None,
    elapsed_offset: float = 0.0,
    device: str | torch.device | None = None,
    probe_teacher_rows: torch.Tensor | None = None,
    measure: Callable[[Any, int], dict] | None = None,
    callbacks: Sequence[TrainerCallback] = (),
    meta: dict | None = None,
) -> TrainOutcome:
    """Train `student` (a ModelBundle, trained in place) from `teacher` (a ModelBundle, or None
    with `rows` carrying a sparse teacher) with `config` on KDTrainer; see the module.

    rows: tokenised rows (input_ids, labels[, teacher_topk_*]); default: from `examples` /
    `responses` (default: config.data and the config's targets). run: an akl_core.lab.runs.Run
    (main process) that receives config.json, each record and the final status. output_dir:
    where checkpoints go (default: <run>/checkpoints, or none). resume_from: a checkpoint
    folder. Ctrl-C ends the run with status "stopped" and re-raises. measure(trainer, step):
    a dict stored as each StepRecord's ``heldout`` (e.g. a race's held-out metrics).
    callbacks: more TrainerCallbacks, after the recorder. meta: merged into config.json's meta.
    In one process, ``should_stop`` is also asked before each forward and after each backward
    (KDTrainer.stop_check): Stop waits for at most one forward/backward; the interrupted step
    is dropped, the finished ones are kept.
    """
    global _ACTIVE_RUNS
    from akl_core.lab import data, models

    config.validate()
    tokenizer = (teacher or student).tokenizer
    vocab = (models.shared_vocab_size(teacher, student) if teacher is not None
             else len(tokenizer))
    if rows is None:
        if examples is None:
            examples = load_examples(config)
        if responses is None:
            responses = training_responses(config, teacher, examples, progress)
        if len(responses) != len(examples):
            raise ValueError(f"{len(responses)} responses for {len(examples)} examples")
        encoded = data.tokenize_for_kd(tokenizer, examples, responses,
                                       max_length=config.max_length)
        rows = rows_from_encoded(encoded)
    if not any(bool((r["labels"][1:] != -100).any()) for r in rows):
        raise ValueError("no response tokens to train on: raise max_length or check the data")
    if teacher is None and not all(k in rows[0] for k in SPARSE_KEYS):
        raise ValueError("no teacher: the rows must carry a sparse teacher (a teacher cache)")

    if output_dir is None:
        output_dir = (Path(run.path) / "checkpoints") if run is not None else \
            Path(models.cache_dir()) / "trainer-scratch"
    trainer_ref: list = []
    example0 = examples[0] if examples else None
    probe = None
    if config.probe_every:
        probe = make_probe(trainer_ref, config, rows[0], example0, teacher, tokenizer, vocab,
                           teacher_rows=probe_teacher_rows)
    recorder = RecordCallback(trainer_ref, config, n_examples=len(rows), probe=probe, run=run,
                              on_record=on_record, should_stop=should_stop,
                              elapsed_offset=elapsed_offset, measure=measure)
    main = distributed_state(device).is_main_process
    status, error, counted = "finished", None, False
    try:
        with _STATE_LOCK:
            args = training_arguments(config, output_dir, device=device,
                                      configured_state=_ACTIVE_RUNS > 0)
            world = int(args.world_size)
            length = config.steps * config.batch_size * config.grad_accum * world
            pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else \
                tokenizer.eos_token_id
            try:
                trainer = KDTrainer(
                    model=student.model, args=args,
                    teacher_model=teacher.model if teacher else None, loss=config.loss,
                    loss_params=config.loss_params, kd_ratio=config.kd_ratio,
                    temperature=config.temperature, vocab_size=vocab,
                    lr_lambda=lambda s: lr_factor(s, config),
                    train_dataset=StreamDataset(rows, length, config.seed),
                    data_collator=KDCollator(pad or 0), callbacks=[recorder, *callbacks],
                )
            except ValueError as e:
                if "already been initialized" in str(e):
                    raise ValueError("another run in this process trains with other device "
                                     "or precision settings; wait for it to finish") from None
                raise
            _ACTIVE_RUNS += 1
            counted = True
        trainer_ref.append(trainer)
        if world == 1 and should_stop is not None:
            trainer.stop_check = should_stop
        student.device = args.device
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)
        if run is not None and main and resume_from is None:
            run.write_config({**config.to_dict(), "meta": {
                "teacher_name": getattr(teacher, "name", None), "student_name": student.name,
                "vocab_size": vocab, "examples": len(rows), "device": str(args.device),
                "world_size": world, "akl_core": _version(), **(meta or {})}})
        say(progress, "training")
        trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
        if recorder.stopped:
            status = "stopped"
    except _PhaseStop:
        status = "stopped"
        recorder.stopped = True
    except KeyboardInterrupt:
        status = "stopped"
        raise
    except BaseException as e:
        status, error = "failed", f"{type(e).__name__}: {e}"
        raise
    finally:
        if counted:
            with _STATE_LOCK:
                _ACTIVE_RUNS -= 1
        student.model.eval()
        if run is not None and main:
            if error is not None:
                run.finish(status, error=error)
            else:
                run.finish(status)
    return TrainOutcome(records=recorder.records, stopped=recorder.stopped, trainer=trainer,
                        world_size=world)


def _version() -> str:
    import akl_core

    return getattr(akl_core, "__version__", "?")
