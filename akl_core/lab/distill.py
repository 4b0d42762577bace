"""The short-distillation engine (level 3 of DESIGN.md) and the level-2 real-position fit.

Level 3: a teacher LLM and a student network sharing its tokenizer, teacher-forced on
instruction data (prompt + response, labels -100 on prompt and padding). Per step:

    loss = (1 - kd_ratio) * CE(student, labels) + kd_ratio * distillation_loss(student, teacher)

with positions aligned as logits[:, :-1] against labels[:, 1:] (position t predicts token t+1).
p = teacher (forward under no_grad, detached), q = student. The KD term is the mean over valid
(label != -100) positions pooled over the batch. `distill(config)` yields one `StepRecord`
per optimizer step; every `probe_every` steps the record carries a `ProbeRecord` with
per-token diagnostics of one fixed example. Stop it by breaking out of the loop, by closing
it, or with `should_stop`. Same config and seed -> same records.

Level 2: `fit_real_positions` takes the teacher's next-token distributions at real positions
of real text and fits one free logit vector per position with the toy trainer.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

import akl_core
from akl_core.lab.data import DEFAULT_MAX_NEW_TOKENS

SCHEDULERS = ("constant", "linear", "cosine")
TARGETS = ("teacher", "gold")
BUNDLED_SPLITS = ("train", "validation", "test", "all")
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

        for name in ("steps", "batch_size", "max_length", "probe_topk", "response_tokens"):
            positive_int(name)
        for name in ("probe_every", "warmup_steps", "seed"):
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
        self._check_data()
        return self

    def _check_data(self) -> None:
        if not isinstance(self.data, str) or not self.data:
            raise ValueError(f"data must be 'bundled:<split>' or a JSONL path, got {self.data!r}")
        if self.data.startswith("bundled"):
            split = self.data.partition(":")[2] or "train"
            if split not in BUNDLED_SPLITS:
                raise ValueError(f"data: bundled split must be one of {BUNDLED_SPLITS}, "
                                 f"got {split!r}")
        elif not Path(self.data).is_file():
            raise ValueError(f"data: no such JSONL file {self.data!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> DistillConfig:
        """Build from a dict (e.g. a run's config.json); unknown keys are ignored."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def head_params(self) -> tuple[float, str]:
        """(mu, boundary) for the head/tail diagnostics: the loss's own for akl/akl_r."""
        params = akl_core.resolve_params(self.loss, **self.loss_params)
        return float(params.get("mu", 0.5)), str(params.get("boundary", "reference"))


# ----------------------------------------------------------------------------------------------
# Records
# ----------------------------------------------------------------------------------------------


@dataclass
class ProbeRecord:
    """Per-token diagnostics of the fixed probe example at one step (lists of length T).

    Taken after the step's optimizer update (the student as it leaves step `step`).
    Position i is the student predicting `tokens[i]` (a response token). w, g_head, g_tail,
    head_size, head_mass, teacher_entropy, student_entropy: akl_core.head_tail; loss_value: the
    chosen loss per token; fkl, rkl: those divergences per token; teacher_topk / student_topk:
    per position a list of [token_string, probability] pairs, most probable first.
    """

    step: int
    example_id: str
    prompt: str
    tokens: list[str]
    token_ids: list[int]
    w: list[float]
    g_head: list[float]
    g_tail: list[float]
    head_size: list[int]
    head_mass: list[float]
    teacher_entropy: list[float]
    student_entropy: list[float]
    loss_value: list[float]
    fkl: list[float]
    rkl: list[float]
    teacher_topk: list[list[list]]
    student_topk: list[list[list]]

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class StepRecord:
    """One optimizer step. Losses are the values at this step's forward pass (before the
    update); g_head / g_tail / w / head_size / entropies are means over the batch's valid
    tokens; tokens counts non-padding input tokens; elapsed is seconds since training began."""

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
    probe: ProbeRecord | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["probe"] = self.probe.to_dict() if self.probe is not None else None
        return d


# ----------------------------------------------------------------------------------------------
# Engine
# ----------------------------------------------------------------------------------------------


def set_seed(seed: int) -> None:
    """Seed Python's and torch's generators."""
    random.seed(seed)
    torch.manual_seed(seed)


def load_examples(config: DistillConfig) -> list:
    """The examples named by ``config.data`` (cut to ``max_examples``)."""
    from akl_core.lab import data

    if config.data.startswith("bundled"):
        examples = data.load_bundled(config.data.partition(":")[2] or "train")
    else:
        examples = data.load_jsonl(config.data)
    if config.max_examples is not None:
        examples = examples[: config.max_examples]
    if not examples:
        raise ValueError(f"data: {config.data!r} holds no examples")
    return examples


def _lr_factor(step: int, config: DistillConfig) -> float:
    """Multiplier of the base lr for 0-based optimizer step `step`."""
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


def _shift(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Align position t's logits with token t+1: logits[:, :-1], labels[:, 1:]."""
    return logits[:, :-1], labels[:, 1:]


def _token_text(tokenizer: Any, token_id: int) -> str:
    return tokenizer.decode([int(token_id)])


class DistillSession:
    """The iterator returned by :func:`distill`; also exposes teacher, student, examples.

    Models and data are loaded on the first ``next()`` (or an explicit ``setup()``).
    """

    def __init__(
        self,
        config: DistillConfig,
        *,
        teacher: Any = None,
        student: Any = None,
        examples: list | None = None,
        responses: list[str] | None = None,
        should_stop: Callable[[], bool] | None = None,
        run: Any = None,
        progress: Callable[[str, int, int], None] | None = None,
    ):
        self.config = config.validate()
        self.teacher = teacher
        self.student = student
        self.examples = examples
        self.responses = responses
        self.should_stop = should_stop
        self.run = run
        self.progress = progress
        self.vocab_size: int | None = None
        self.encoded: dict[str, torch.Tensor] | None = None
        self.steps_done = 0
        self.stopped = False
        self._gen: Iterator[StepRecord] | None = None

    # -- set-up ----------------------------------------------------------------------------
    def setup(self) -> DistillSession:
        """Load models, data and teacher responses; tokenise. Idempotent."""
        if self.encoded is not None:
            return self
        from akl_core.lab import data, models

        cfg = self.config
        if self.responses is not None and self.examples is None:
            raise ValueError("responses were given without examples")
        if self.teacher is None:
            self.teacher = models.load_teacher(cfg.teacher)
        if self.student is None:
            set_seed(cfg.seed)
            self.student = models.load_student(cfg.student, self.teacher, seed=cfg.seed)
        self.vocab_size = models.shared_vocab_size(self.teacher, self.student)
        if self.examples is None:
            self.examples = load_examples(cfg)
        if self.responses is None:
            if cfg.targets == "gold":
                missing = [ex.id for ex in self.examples if not ex.response]
                if missing:
                    raise ValueError(f"targets='gold' but {len(missing)} examples have no "
                                     f"response (first: {missing[0]!r})")
                self.responses = [ex.response for ex in self.examples]
            else:
                cb = None
                if self.progress is not None:
                    def cb(done: int, total: int) -> None:
                        self.progress("teacher responses", done, total)
                self.responses = data.teacher_responses(
                    self.teacher, self.examples, max_new_tokens=cfg.response_tokens, progress=cb
                )
        if len(self.responses) != len(self.examples):
            raise ValueError(f"{len(self.responses)} responses for {len(self.examples)} examples")
        self.encoded = data.tokenize_for_kd(
            self.teacher.tokenizer, self.examples, self.responses, max_length=cfg.max_length
        )
        if int((self.encoded["labels"][:, 1:] != -100).sum()) == 0:
            raise ValueError("no response tokens to train on: raise max_length or check the data")
        return self

    # -- iterator protocol -----------------------------------------------------------------
    def __iter__(self) -> DistillSession:
        return self

    def __next__(self) -> StepRecord:
        if self._gen is None:
            self._gen = self._loop()
        return next(self._gen)

    def close(self) -> None:
        """Stop now (between steps); a run being written is finished with status 'stopped'."""
        if self._gen is None:
            self._gen = iter(())
        else:
            self._gen.close()

    # -- the loop --------------------------------------------------------------------------
    def _batches(self) -> Iterator[tuple[int, dict[str, torch.Tensor]]]:
        """Endless seeded batches (akl_core.lab.data.iterate_batches) with their epoch number."""
        from akl_core.lab import data

        assert self.encoded is not None
        n = int(self.encoded["input_ids"].shape[0])
        bs = self.config.batch_size
        for i, batch in enumerate(
            data.iterate_batches(self.encoded, bs, seed=self.config.seed, shuffle=True)
        ):
            yield (i * bs) // n, batch

    def _loop(self) -> Iterator[StepRecord]:
        self.setup()
        cfg = self.config
        teacher, student = self.teacher, self.student
        device = student.device
        run = self.run
        if run is not None:
            run.write_config({**cfg.to_dict(), "meta": {
                "teacher_name": teacher.name, "student_name": student.name,
                "vocab_size": self.vocab_size, "examples": len(self.examples),
                "device": str(device), "akl_core": getattr(akl_core, "__version__", "?")}})
        set_seed(cfg.seed)
        params = akl_core.resolve_params(cfg.loss, **cfg.loss_params)
        schedule = None
        if cfg.loss == "taid" and "t" not in cfg.loss_params:
            schedule = akl_core.TAIDSchedule()
        mu, boundary = cfg.head_params()
        model = student.model
        model.train()
        teacher.model.eval()
        trainable = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s, cfg))
        probe_batch = self._probe_batch()
        status = "finished"
        start = time.perf_counter()
        batches = self._batches()
        try:
            for step in range(1, cfg.steps + 1):
                if self.should_stop is not None and self.should_stop():
                    status = "stopped"
                    self.stopped = True
                    break
                epoch, batch = next(batches)
                t0 = time.perf_counter()
                if schedule is not None:
                    params["t"] = float(schedule.t)
                rec = self._step(batch, opt, params, mu, boundary, device)
                lr = opt.param_groups[0]["lr"]
                sched.step()
                if schedule is not None:
                    schedule.update(rec["kd_loss"], step - 1, cfg.steps)
                step_time = time.perf_counter() - t0
                probe = None
                if cfg.probe_every and (step % cfg.probe_every == 0 or step == 1):
                    probe = self.probe(probe_batch, step=step, params=params, mu=mu,
                                       boundary=boundary)
                    model.train()
                record = StepRecord(
                    step=step,
                    lr=lr,
                    step_time=step_time,
                    tokens_per_second=rec["tokens"] / max(step_time, 1e-9),
                    elapsed=time.perf_counter() - start,
                    epoch=epoch,
                    taid_t=params.get("t") if cfg.loss == "taid" else None,
                    probe=probe,
                    **rec,
                )
                self.steps_done = step
                if run is not None:
                    d = record.to_dict()
                    probe_d = d.pop("probe")
                    run.append_step(d)
                    if probe_d is not None:
                        run.append_probe(probe_d)
                yield record
        except GeneratorExit:
            status = "stopped"
            self.stopped = True
            raise
        except KeyboardInterrupt:
            status = "stopped"
            self.stopped = True
            raise
        except BaseException as e:
            status = "failed"
            if run is not None:
                run.finish(status, error=f"{type(e).__name__}: {e}")
                run = None
            raise
        finally:
            model.eval()
            if run is not None:
                run.finish(status)

    def _forward(self, batch: dict[str, torch.Tensor], device: torch.device):
        ids = batch["input_ids"].to(device)
        attn = batch["attention_mask"].to(device)
        labels = batch["labels"].to(device)
        with torch.no_grad():
            t_logits = self.teacher.model(
                input_ids=ids.to(self.teacher.device), attention_mask=attn.to(self.teacher.device)
            ).logits.to(device)
        s_logits = self.student.model(input_ids=ids, attention_mask=attn).logits
        s, lab = _shift(s_logits, labels)
        t, _ = _shift(t_logits, labels)
        return s, t, lab, attn

    def _step(self, batch, opt, params, mu, boundary, device) -> dict[str, Any]:
        cfg = self.config
        V = self.vocab_size
        s, t, lab, attn = self._forward(batch, device)
        if self.steps_done and not bool(torch.isfinite(s).all()):  # the last update diverged
            raise ValueError(f"the student's logits became non-finite at step "
                             f"{self.steps_done + 1}: the learning rate {cfg.lr:g} is too high")
        kd = akl_core.distillation_loss(
            s, t, loss=cfg.loss, labels=lab, temperature=cfg.temperature, vocab_size=V, **params
        )
        valid = lab != -100
        s_v = s[valid]  # [N, Vs]
        if cfg.kd_ratio < 1.0:
            lm = F.cross_entropy(s_v.float(), lab[valid])
        else:
            with torch.no_grad():
                lm = F.cross_entropy(s_v.detach().float(), lab[valid])
        loss = cfg.kd_ratio * kd + (1.0 - cfg.kd_ratio) * lm if cfg.kd_ratio < 1.0 else kd
        if not torch.isfinite(loss):
            raise ValueError(f"loss became non-finite ({float(loss)}) at step "
                             f"{self.steps_done + 1}; lower lr (now {cfg.lr})")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.student.model.parameters(), cfg.grad_clip)
        opt.step()
        ht = akl_core.head_tail(
            s_v.detach(), t[valid], mu=mu, boundary=boundary, temperature=cfg.temperature,
            vocab_size=V,
        )
        divs = akl_core.per_token_divergences(
            s_v.detach()[..., :V], t[valid][..., :V], names=["fkl", "rkl"],
            temperature=cfg.temperature,
        )
        return {
            "loss": float(loss.detach()),
            "kd_loss": float(kd.detach()),
            "lm_loss": float(lm.detach()),
            "g_head": float(ht.g_head.mean()),
            "g_tail": float(ht.g_tail.mean()),
            "w": float(ht.w.mean()),
            "head_size": float(ht.head_size.float().mean()),
            "teacher_entropy": float(ht.teacher_entropy.mean()),
            "student_entropy": float(ht.student_entropy.mean()),
            "fkl": float(divs["fkl"].mean()),
            "rkl": float(divs["rkl"].mean()),
            "tokens": int(attn.sum()),
        }

    def _probe_batch(self) -> dict[str, torch.Tensor]:
        """The fixed probe example (the first training example), padding trimmed."""
        assert self.encoded is not None
        used = max(2, int(self.encoded["attention_mask"][0].sum()))
        return {k: v[:1, :used] for k, v in self.encoded.items()}

    @torch.no_grad()
    def probe(
        self,
        batch: dict[str, torch.Tensor] | None = None,
        *,
        step: int | None = None,
        params: dict | None = None,
        mu: float | None = None,
        boundary: str | None = None,
    ) -> ProbeRecord:
        """Per-token diagnostics of one example (default: the first training example)."""
        self.setup()
        cfg = self.config
        if batch is None:
            batch = self._probe_batch()
        if params is None:
            params = akl_core.resolve_params(cfg.loss, **cfg.loss_params)
        if mu is None or boundary is None:
            mu, boundary = cfg.head_params()
        self.student.model.eval()
        s, t, lab, _ = self._forward(batch, self.student.device)
        valid = lab[0] != -100
        s, t, ids = s[0][valid], t[0][valid], lab[0][valid]  # [T, V], [T]
        V = self.vocab_size
        s, t = s[..., :V].float(), t[..., :V].float()
        T = cfg.temperature
        ht = akl_core.head_tail(s, t, mu=mu, boundary=boundary, temperature=T)
        value = akl_core.distillation_loss(s, t, loss=cfg.loss, reduction="none", temperature=T,
                                           **params)
        divs = akl_core.per_token_divergences(s, t, names=["fkl", "rkl"], temperature=T)
        tok = self.teacher.tokenizer
        k = min(cfg.probe_topk, V)

        def topk(logits: torch.Tensor) -> list[list[list]]:
            probs, idx = torch.softmax(logits / T, dim=-1).topk(k, dim=-1)
            return [[[_token_text(tok, i), float(p)] for p, i in zip(pr, ix)]
                    for pr, ix in zip(probs.tolist(), idx.tolist())]

        ex_index = 0
        ex = self.examples[ex_index] if self.examples else None
        return ProbeRecord(
            step=int(step if step is not None else self.steps_done),
            example_id=str(getattr(ex, "id", ex_index)),
            prompt=str(getattr(ex, "instruction", "")),
            tokens=[_token_text(tok, i) for i in ids.tolist()],
            token_ids=[int(i) for i in ids.tolist()],
            w=ht.w.tolist(),
            g_head=ht.g_head.tolist(),
            g_tail=ht.g_tail.tolist(),
            head_size=[int(x) for x in ht.head_size.tolist()],
            head_mass=ht.head_mass.tolist(),
            teacher_entropy=ht.teacher_entropy.tolist(),
            student_entropy=ht.student_entropy.tolist(),
            loss_value=value.float().tolist(),
            fkl=divs["fkl"].float().tolist(),
            rkl=divs["rkl"].float().tolist(),
            teacher_topk=topk(t),
            student_topk=topk(s),
        )


def distill(
    config: DistillConfig,
    *,
    teacher: Any = None,
    student: Any = None,
    examples: list | None = None,
    responses: list[str] | None = None,
    should_stop: Callable[[], bool] | None = None,
    run: Any = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> DistillSession:
    """Run a short distillation; iterate the result for one `StepRecord` per step.

    teacher / student: ModelBundles (loaded from config.teacher / config.student when None; the
    student is trained in place). examples / responses: override config.data and the teacher's
    responses. should_stop: checked before every step; True ends the loop. run: an
    akl_core.lab.runs.Run that receives config.json, steps.jsonl, probes.jsonl and the summary.
    progress(stage, done, total): set-up progress (teacher responses).
    The config is validated now (ValueError); models and data load on the first step.
    """
    return DistillSession(
        config,
        teacher=teacher,
        student=student,
        examples=examples,
        responses=responses,
        should_stop=should_stop,
        run=run,
        progress=progress,
    )


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
        nxt += [_token_text(tok, t) for t in ids[0, 1:].tolist()]
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
