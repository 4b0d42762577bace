"""Public loss API: per-token divergences, masked reduction, temperature, chunking.

All functions take student and teacher logits of shape `[..., V]` (float16, bfloat16, float32
or float64; computed in float32, or float64 for float64 inputs), on any device. p is the
teacher distribution softmax(teacher / T), q the student's softmax(student / T). Gradients
flow to the student logits only; the teacher is detached.

Positions are processed in chunks of rows: each chunk's value and closed-form (or autograd)
gradient are computed in the forward pass, so peak extra memory is a few chunk-sized buffers
plus one gradient the size of the student logits.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.autograd.function import once_differentiable

from ._checks import (
    check_labels,
    check_logits,
    check_mask,
    check_num_items,
    check_position_mask,
    check_temperature,
    compute_dtype,
)
from ._dists import make_dists
from ._masking import check_masks
from .divergences import LOSSES, Kernel, get_loss
from .headtail import head_tail
from .sparse import SparseTeacher, sparse_per_row, sparse_per_token
from .stats import KDStats

_CHUNK_ELEMENTS = 1 << 20
REDUCTIONS = ("mean", "sum", "none")


def _rows_per_chunk(vocab: int) -> int:
    return max(1, _CHUNK_ELEMENTS // vocab)


class _ChunkRunner:
    """Computes one chunk of rows and writes its values (and gradient) into the outputs."""

    def __init__(
        self,
        student: torch.Tensor,
        teacher: torch.Tensor,
        kernel: Kernel,
        params: dict[str, Any],
        temperature: float,
        dtype: torch.dtype,
        values: torch.Tensor,
        grad: torch.Tensor | None,
    ) -> None:
        self.student, self.teacher, self.kernel, self.params = student, teacher, kernel, params
        self.temperature, self.dtype, self.values, self.grad = temperature, dtype, values, grad

    def __call__(self, index: slice | torch.Tensor, floored: bool) -> None:
        if isinstance(index, slice):
            s, t = self.student[index], self.teacher[index]
        else:
            s, t = self.student.index_select(0, index), self.teacher.index_select(0, index)
        d = make_dists(s, t, self.temperature, self.dtype, floored=floored)
        value, chunk_grad = self.kernel(d, self.grad is not None, **self.params)
        self.values[index] = value
        if self.grad is not None and chunk_grad is not None:
            if self.temperature != 1.0:
                chunk_grad = chunk_grad.div_(self.temperature)
            self.grad[index] = chunk_grad.to(self.grad.dtype)


class _ChunkedDivergence(torch.autograd.Function):
    """values[r] = kernel(student[r], teacher[r]) for rows r (all rows, or `rows` only; the
    other rows get 0 and a zero gradient). Gradient computed chunk by chunk in forward."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        student: torch.Tensor,
        teacher: torch.Tensor,
        kernel: Kernel,
        params: dict[str, Any],
        temperature: float,
        rows: torch.Tensor | None,
    ) -> torch.Tensor:
        need_grad = bool(ctx.needs_input_grad[0])
        n_rows, vocab = student.shape
        dtype = compute_dtype(student.dtype)
        values = torch.zeros(n_rows, dtype=dtype, device=student.device)
        grad = None
        if need_grad:
            grad = torch.empty_like(student) if rows is None else torch.zeros_like(student)
        count = n_rows if rows is None else rows.numel()
        step = _rows_per_chunk(vocab)
        chunks = (
            (slice(start, start + step) for start in range(0, count, step))
            if rows is None
            else (rows[start : start + step] for start in range(0, count, step))
        )
        run = _ChunkRunner(student, teacher, kernel, params, temperature, dtype, values, grad)
        for index in chunks:
            run(index, floored=False)
        # Rows whose fast value is not finite hold masked (-inf) vocabulary entries:
        # redo them with floored log-probabilities (0 * log 0 = 0, no NaN).
        bad = (~torch.isfinite(values)).nonzero().squeeze(-1)
        for start in range(0, bad.numel(), step):
            run(bad[start : start + step], floored=True)
        ctx.save_for_backward(grad)
        return values

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_values: torch.Tensor) -> tuple[Any, ...]:
        (grad,) = ctx.saved_tensors
        grad_student = grad * grad_values.unsqueeze(-1).to(grad.dtype)
        return grad_student, None, None, None, None, None


def _check_finite(values: torch.Tensor, name: str) -> None:
    if values.numel() and bool(torch.isnan(values).any()):
        raise ValueError(
            f"{name} produced NaN: the logits contain NaN or +inf values, or a position whose "
            f"logits are all -inf (masked vocabulary entries should be -inf or a large negative "
            f"number, with at least one entry left)"
        )


def _per_row(
    name: str,
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor | SparseTeacher,
    temperature: float,
    vocab_size: int | None,
    params: dict[str, Any],
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Validated per-position values `[...]`; `valid` (bool `[...]`) limits the work to those."""
    spec = get_loss(name)
    resolved = spec.resolve(params)
    temperature = check_temperature(temperature)
    if isinstance(teacher_logits, SparseTeacher):
        return sparse_per_row(spec, resolved, student_logits, teacher_logits, temperature,
                              vocab_size, valid)
    student_logits, teacher_logits = check_logits(student_logits, teacher_logits, vocab_size)
    shape = student_logits.shape[:-1]
    vocab = student_logits.shape[-1]
    s2 = student_logits.reshape(-1, vocab)
    t2 = teacher_logits.reshape(-1, vocab)
    rows = None
    if valid is not None:
        flat = valid.reshape(-1)
        if not bool(flat.all()):
            rows = flat.nonzero().squeeze(-1)
    check_masks([(spec.name, resolved)], s2, t2, rows, shape)
    values = _ChunkedDivergence.apply(s2, t2, spec.kernel, resolved, temperature, rows)
    _check_finite(values.detach(), name)
    return values.reshape(shape)


def divergence(
    name: str,
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor | SparseTeacher,
    *,
    temperature: float = 1.0,
    vocab_size: int | None = None,
    **params: Any,
) -> torch.Tensor:
    """Per-position divergence `name` between teacher p and student q, shape `logits.shape[:-1]`.

    Differentiable w.r.t. `student_logits`. `params` are the loss's parameters (see
    `akl_core.LOSSES[name].params`). `vocab_size` cuts both logits to their first entries
    (for padded output layers). No tau^2 factor is applied. `teacher_logits` may be an
    `akl_core.SparseTeacher` (top-k log-probs) instead.
    """
    return _per_row(name, student_logits, teacher_logits, temperature, vocab_size, params)


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor | SparseTeacher,
    *,
    loss: str = "akl",
    labels: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    temperature: float = 1.0,
    num_items: int | float | torch.Tensor | None = None,
    vocab_size: int | None = None,
    return_stats: bool = False,
    **params: Any,
) -> torch.Tensor | tuple[torch.Tensor, KDStats]:
    """The KD loss over `[..., V]` logits with masking and reduction.

    Valid positions: `labels != ignore_index` (labels `[...]`, already aligned with the
    logits) and/or `mask` (bool or 0/1 `[...]`); both given means both must hold.
    reduction="mean": sum over valid positions / their number, pooled over the whole batch
    (`num_items`, a finite number > 0, replaces that denominator, e.g. for gradient
    accumulation or multi-GPU; it is refused with "sum" and "none", where it would do nothing);
    "sum": the sum over valid positions; "none": per-position values `[...]`, 0 where masked.
    labels must be integer ids; a non-bool mask must hold exactly 0 or 1 (ValueError otherwise).
    With every position masked, "mean" and "sum" return 0 (never NaN).
    return_stats=True returns `(loss, stats)`, stats an `akl_core.KDStats` of detached
    per-position diagnostics (0 at masked positions).
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if not isinstance(student_logits, torch.Tensor):
        check_logits(student_logits, teacher_logits)
    num_items = check_num_items(num_items, reduction)
    positions = student_logits.shape[:-1]
    labels = check_labels(check_position_mask("labels", labels, positions))
    mask = check_mask(check_position_mask("mask", mask, positions))
    valid = None
    if labels is not None:
        valid = labels.to(student_logits.device) != ignore_index
    if mask is not None:
        m = mask.to(device=student_logits.device).bool()
        valid = m if valid is None else valid & m
    values = _per_row(loss, student_logits, teacher_logits, temperature, vocab_size, params, valid)
    result = _reduce(values, valid, reduction, num_items)
    if not return_stats:
        return result
    return result, _stats(loss, params, student_logits, teacher_logits, values, valid,
                          temperature, vocab_size)


def _reduce(
    values: torch.Tensor,
    valid: torch.Tensor | None,
    reduction: str,
    num_items: int | float | torch.Tensor | None,
) -> torch.Tensor:
    if reduction == "none":
        return values
    total = values.sum()
    if reduction == "sum":
        return total
    if num_items is not None:
        return total / num_items
    count = values.numel() if valid is None else int(valid.sum())
    return total / count if count > 0 else total * 0.0


@torch.no_grad()
def _stats(
    loss: str,
    params: dict[str, Any],
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    values: torch.Tensor,
    valid: torch.Tensor | None,
    temperature: float,
    vocab_size: int | None,
) -> KDStats:
    """Per-position diagnostics (a second pass over the logits)."""
    resolved = get_loss(loss).resolve(params)
    mu = float(resolved.get("mu", 0.5))
    boundary = str(resolved.get("boundary", "reference"))
    s = student_logits.detach()
    t = teacher_logits if isinstance(teacher_logits, SparseTeacher) else teacher_logits.detach()
    ht = head_tail(s, t, mu=mu, boundary=boundary, temperature=temperature,
                   vocab_size=vocab_size)
    divs = per_token_divergences(s, t, names=["fkl", "rkl"], temperature=temperature,
                                 vocab_size=vocab_size)
    if valid is None:
        valid = torch.ones(values.shape, dtype=torch.bool, device=values.device)
    fields = {"value": values.detach(), "fkl": divs["fkl"], "rkl": divs["rkl"], **ht.to_dict()}
    return KDStats(valid=valid, **{k: torch.where(valid, v, torch.zeros_like(v))
                                   for k, v in fields.items()})


@torch.no_grad()
def per_token_divergences(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor | SparseTeacher,
    *,
    names: list[str] | tuple[str, ...] | None = None,
    temperature: float = 1.0,
    vocab_size: int | None = None,
) -> dict[str, torch.Tensor]:
    """Every named divergence (default: the whole catalogue) at default parameters, per position.

    Returns {name: tensor `[...]`}; no gradients. The distributions are computed once per chunk.
    """
    specs = [get_loss(n) for n in (names if names is not None else list(LOSSES))]
    temperature = check_temperature(temperature)
    if isinstance(teacher_logits, SparseTeacher):
        return sparse_per_token(specs, student_logits, teacher_logits, temperature, vocab_size)
    student_logits, teacher_logits = check_logits(student_logits, teacher_logits, vocab_size)
    shape = student_logits.shape[:-1]
    vocab = student_logits.shape[-1]
    s2, t2 = student_logits.reshape(-1, vocab), teacher_logits.reshape(-1, vocab)
    dtype = compute_dtype(student_logits.dtype)
    check_masks([(spec.name, spec.defaults()) for spec in specs], s2, t2, None, shape)
    out = {spec.name: [] for spec in specs}
    step = _rows_per_chunk(vocab)
    for start in range(0, s2.shape[0], step):
        d = make_dists(
            s2[start : start + step], t2[start : start + step], temperature, dtype, floored=True
        )
        for spec in specs:
            out[spec.name].append(spec.kernel(d, False, **spec.defaults())[0])
    result = {}
    for name, chunks in out.items():
        values = torch.cat(chunks) if chunks else s2.new_zeros(0, dtype=dtype)
        _check_finite(values, name)
        result[name] = values.reshape(shape)
    return result
