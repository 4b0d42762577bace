"""What a short distillation is (its config and records) and the level-2 real-position fit.

Level 3 (the engine: akl_core.lab.engine on akl_core.lab.trainer.KDTrainer, called through
akl_core.lab.experiment.run_experiment): a teacher LLM and a student network sharing its
tokenizer, teacher-forced on instruction data (prompt + response, labels -100 on prompt and
padding). Per optimizer step:

    loss = (1 - kd_ratio) * CE(student, labels) + kd_ratio * distillation_loss(student, teacher)

with positions aligned as logits[:, :-1] against labels[:, 1:] (position t predicts token t+1).
p = teacher (forward under no_grad, detached), q = student. Both terms are means over the
valid (label != -100) positions of the whole step (all micro-batches, all processes). A
:class:`DistillConfig` defines a run; the engine streams one :class:`StepRecord` per optimizer
step, every `probe_every` steps with a :class:`ProbeRecord` of one fixed example. Same config
and seed -> same records.

Level 2: `fit_real_positions` takes the teacher's next-token distributions at real positions
of real text and fits one free logit vector per position with the toy trainer.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch

import akl_core
from akl_core.lab.data import DEFAULT_MAX_NEW_TOKENS
from akl_core.lab.diagnostics import PositionDiagnostics

SCHEDULERS = ("constant", "linear", "cosine")
TARGETS = ("teacher", "gold")
MAX_PROBE_TOPK = 100  # probes store top-k tokens per position: keep probes.jsonl small


# ----------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------


@dataclass
class DistillConfig:
    """Everything that defines a short distillation run (JSON-serialisable via to_dict()).

    teacher: model spec for akl_core.lab.models.load_teacher (None = the bundled SmolLM2-135M).
    student: "truncate:K", "tiny", or a model name / folder (akl_core.lab.models.load_student).
    loss, loss_params: a name of akl_core.LOSSES and its parameters (validated, defaults filled).
    kd_ratio: weight of the KD term; (1 - kd_ratio) goes to the LM cross-entropy on the labels.
    data: "bundled:<split>" (train / validation / test) or a path to a Dolly-style JSONL file.
    targets: "teacher" = train on the teacher's own greedy responses (cached); "gold" = on the
        data's reference responses.
    probe_every: every k steps, per-token diagnostics of one fixed example (0 = never).
    scheduler: constant / linear / cosine decay after `warmup_steps` linear warm-up steps.
    batch_size: sequences per micro-batch on each process; one optimizer step sees
        batch_size x grad_accum x processes sequences.
    bf16: bfloat16 autocast (accelerate's mixed precision). save_every: a checkpoint (student,
        optimizer, scheduler, RNG, TAID state) every k steps into <run>/checkpoints (0 = never),
        for `akl distill --resume`. teacher_cache: a folder made by `akl teacher-cache`; the
        run then reads the teacher's top-k from it instead of running the teacher.
    """

    teacher: str | None = None
    student: str = "truncate:4"
    loss: str = "akl"
    loss_params: dict = field(default_factory=dict)
    steps: int = 50
    batch_size: int = 8
    max_length: int = 128
    lr: float = 5e-4
    kd_ratio: float = 1.0
    temperature: float = 1.0
    seed: int = 0
    probe_every: int = 10
    probe_topk: int = 5
    warmup_steps: int = 0
    scheduler: str = "constant"
    weight_decay: float = 0.0
    grad_clip: float | None = 1.0
    data: str = "bundled:train"
    targets: str = "teacher"
    max_examples: int | None = None
    response_tokens: int = DEFAULT_MAX_NEW_TOKENS
    grad_accum: int = 1
    bf16: bool = False
    save_every: int = 0
    teacher_cache: str | None = None

    def validate(self) -> DistillConfig:
        """Raise ValueError naming the field on any bad value; returns self."""

        def positive_int(name: str, allow_zero: bool = False) -> None:
            v = getattr(self, name)
            ok = isinstance(v, int) and not isinstance(v, bool) and (v >= 0 if allow_zero else v > 0)
            if not ok:
                kind = "a non-negative" if allow_zero else "a positive"
                raise ValueError(f"{name} must be {kind} integer, got {v!r}")

        def number(name: str, low: float, high: float | None = None, low_open=True) -> float:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"{name} must be a finite number, got {v!r}")
            if (v <= low if low_open else v < low) or (high is not None and v > high):
                rng = f"{'(' if low_open else '['}{low}, {high if high is not None else 'inf'}"
                raise ValueError(f"{name} must be in {rng}{']' if high is not None else ')'}, "
                                 f"got {v!r}")
            return float(v)

        for name in ("steps", "batch_size", "max_length", "probe_topk", "response_tokens",
                     "grad_accum"):
            positive_int(name)
        for name in ("probe_every", "warmup_steps", "seed", "save_every"):
            positive_int(name, allow_zero=True)
        if self.probe_topk > MAX_PROBE_TOPK:
            raise ValueError(f"probe_topk must be at most {MAX_PROBE_TOPK} (top-k tokens stored "
                             f"per probe position), got {self.probe_topk}")
        if self.max_length < 8:
            raise ValueError(f"max_length must be at least 8 tokens, got {self.max_length}")
        number("lr", 0.0)
        number("kd_ratio", 0.0, 1.0, low_open=False)
        number("temperature", 0.0)
        number("weight_decay", 0.0, low_open=False)
        if self.grad_clip is not None:
            number("grad_clip", 0.0)
        if self.max_examples is not None:
            positive_int("max_examples")
        if self.scheduler not in SCHEDULERS:
            raise ValueError(f"scheduler must be one of {SCHEDULERS}, got {self.scheduler!r}")
        if self.targets not in TARGETS:
            raise ValueError(f"targets must be one of {TARGETS}, got {self.targets!r}")
        if not isinstance(self.student, str) or not self.student.strip():
            raise ValueError(f"student must be a non-empty model spec, got {self.student!r}")
        if self.teacher is not None and (not isinstance(self.teacher, str) or not self.teacher):
            raise ValueError(f"teacher must be a model spec or None, got {self.teacher!r}")
        if self.loss not in akl_core.LOSSES:
            raise ValueError(f"loss must be one of {sorted(akl_core.LOSSES)}, got {self.loss!r}")
        if not isinstance(self.loss_params, dict):
            raise ValueError(f"loss_params must be a dict, got {type(self.loss_params).__name__}")
        try:
            akl_core.resolve_params(self.loss, **self.loss_params)
        except (ValueError, TypeError) as e:
            raise ValueError(f"loss_params for {self.loss!r}: {e}") from None
        if not isinstance(self.bf16, bool):
            raise ValueError(f"bf16 must be true or false, got {self.bf16!r}")
        if self.teacher_cache is not None and (not isinstance(self.teacher_cache, str)
                                               or not self.teacher_cache):
            raise ValueError(f"teacher_cache must be a folder or None, got "
                             f"{self.teacher_cache!r}")
        from akl_core.lab.data import parse_source

        parse_source(self.data)
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DistillConfig:
        """Build from a mapping (e.g. a run's config.json); unknown keys are ignored."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> DistillConfig:
        """The one way front-ends build a config: field name -> value (the CLI's parsed
        options, the Live page's widgets). Unknown names raise ValueError (a typo must not be
        silently dropped); missing ones keep their defaults. Validated."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown DistillConfig fields: {', '.join(unknown)}")
        return cls(**dict(values)).validate()

    @classmethod
    def field_names(cls) -> list[str]:
        """The config's field names, in order."""
        return [f.name for f in fields(cls)]

    def head_params(self) -> tuple[float, str]:
        """(mu, boundary) for the head/tail diagnostics: the loss's own for akl/akl_r."""
        params = akl_core.resolve_params(self.loss, **self.loss_params)
        return float(params.get("mu", 0.5)), str(params.get("boundary", "reference"))


# ----------------------------------------------------------------------------------------------
# Records
# ----------------------------------------------------------------------------------------------


@dataclass
class ProbeRecord(PositionDiagnostics):
    """Per-token diagnostics of the fixed probe example at one step (lists of length T), as
    akl_core.lab.diagnostics.PositionDiagnostics, plus where it comes from.

    Taken after the step's optimizer update (the student as it leaves step `step`).
    Position i is the student predicting `tokens[i]` (a response token).
    """

    step: int = 0
    example_id: str = ""
    prompt: str = ""


@dataclass
class StepRecord:
    """One optimizer step. Losses are the values at this step's forward pass (before the
    update); g_head / g_tail / w / head_size / entropies are means over the step's valid
    tokens (all micro-batches and processes); tokens counts non-padding input tokens of the
    step; step_time: wall seconds from the end of the previous step's record (data loading
    included, probes not); elapsed: seconds since training began (across a resume);
    world_size: processes; grad_accum: micro-batches per process and step; heldout: metrics
    measured after the step on a fixed held-out batch (a race, akl_core.lab.race), or None."""

    step: int
    loss: float
    kd_loss: float
    lm_loss: float
    g_head: float
    g_tail: float
    w: float
    head_size: float
    teacher_entropy: float
    student_entropy: float
    fkl: float
    rkl: float
    lr: float
    tokens: int
    tokens_per_second: float
    step_time: float
    elapsed: float
    epoch: int
    taid_t: float | None = None
    world_size: int = 1
    grad_accum: int = 1
    probe: ProbeRecord | None = None
    heldout: dict | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["probe"] = self.probe.to_dict() if self.probe is not None else None
        return d


# ----------------------------------------------------------------------------------------------
# Level 2: free student logits on the teacher's real next-token distributions
# ----------------------------------------------------------------------------------------------


@dataclass
class RealPositions:
    """Teacher next-token logits at real positions: logits [N, V] (float32), with context."""

    logits: torch.Tensor
    text_index: list[int]
    position: list[int]
    next_token: list[str]


@torch.no_grad()
def teacher_positions(
    teacher: Any,
    texts: Sequence[str],
    *,
    positions: int = 256,
    seed: int = 0,
    max_length: int = 256,
) -> RealPositions:
    """The teacher's next-token logits at `positions` positions sampled (seeded, without
    replacement) from all positions of `texts` (each tokenised, cut to `max_length`)."""
    if isinstance(texts, str) or not texts:
        raise ValueError("texts must be a non-empty list of strings")
    if not isinstance(positions, int) or positions <= 0:
        raise ValueError(f"positions must be a positive integer, got {positions!r}")
    tok = teacher.tokenizer
    rows, where, nxt = [], [], []
    teacher.model.eval()
    for i, text in enumerate(texts):
        ids = tok(text, return_tensors="pt", truncation=True, max_length=max_length)["input_ids"]
        if ids.shape[1] < 2:
            continue
        logits = teacher.model(input_ids=ids.to(teacher.device)).logits[0, :-1].float().cpu()
        rows.append(logits)
        where += [(i, j) for j in range(ids.shape[1] - 1)]
        nxt += [tok.decode([int(t)]) for t in ids[0, 1:].tolist()]
    if not rows:
        raise ValueError("texts are too short: every text has fewer than 2 tokens")
    all_logits = torch.cat(rows)
    n = all_logits.shape[0]
    if positions < n:
        gen = torch.Generator().manual_seed(int(seed))
        pick = torch.randperm(n, generator=gen)[:positions].sort().values
    else:
        pick = torch.arange(n)
    vocab = getattr(teacher, "vocab_size", None) or all_logits.shape[-1]
    sel = pick.tolist()
    return RealPositions(
        logits=all_logits[pick][:, :vocab].contiguous(),
        text_index=[where[k][0] for k in sel],
        position=[where[k][1] for k in sel],
        next_token=[nxt[k] for k in sel],
    )


def fit_real_positions(
    teacher: Any,
    texts: Sequence[str],
    losses: Sequence[str] = ("fkl", "rkl", "akl"),
    *,
    positions: int = 256,
    steps: int = 100,
    lr: float = 0.1,
    seed: int = 0,
    max_length: int = 256,
    progress: Callable[[str, int, int], None] | None = None,
    **train_kwargs: Any,
) -> dict[str, Any]:
    """Level 2: fit free student logits [positions, V] to the teacher's real next-token
    distributions with each loss (akl_core.lab.toy.train_free_logits, target_type='logits').

    Returns {loss: TrainResult}; the positions themselves under the key "positions"
    (a RealPositions). Extra keyword arguments go to train_free_logits (e.g. record_every).
    """
    from akl_core.lab import toy

    if isinstance(losses, str) or not losses:
        raise ValueError("losses must be a non-empty list of loss names")
    for name in losses:
        if name not in akl_core.LOSSES:
            raise ValueError(f"unknown loss {name!r}; choose one of {sorted(akl_core.LOSSES)}")
    pos = teacher_positions(teacher, texts, positions=positions, seed=seed, max_length=max_length)
    out: dict[str, Any] = {"positions": pos}
    for name in losses:
        cb = None
        if progress is not None:
            def cb(done: int, total: int, _name: str = name) -> None:
                progress(_name, done, total)
        out[name] = toy.train_free_logits(
            pos.logits, name, steps=steps, lr=lr, seed=seed, target_type="logits",
            progress=cb or False, **train_kwargs,
        )
    return out
