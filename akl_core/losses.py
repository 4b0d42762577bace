"""Public loss API: per-token divergences, masked reduction, temperature, chunking, stats.

All functions take student and teacher logits of shape `[..., V]` (float16, bfloat16, float32
or float64; computed in float32, or float64 for float64 inputs), on any device. p is the
teacher distribution softmax(teacher / T), q the student's softmax(student / T). Gradients
flow to the student logits only; the teacher is detached.

How it runs (`run_chunks`): positions are processed in chunks of rows. Each chunk is a few
passes over four `[R, V]` buffers (lq, lp, q, p) allocated once per call and reused (on CPU
a fresh `[R, V]` tensor costs page faults, often more than the arithmetic): one log-softmax
per side, one exp for both, then the kernel (divergences.py), which writes its closed-form
gradient straight into the gradient's memory, the reduction's 1 / count included. Backward
hands that buffer on (autograd adopts it as `.grad`, no copy) or scales a copy. Host syncs
happen once per call, not per chunk: rows that need a second look (a masked -inf entry made
the fast value non-finite; an AKL head longer than 64 tokens) are found at the end and redone
exactly. `return_stats` adds the diagnostics from the same pass (the head split, FKL and RKL
are shared with the loss; the entropies cost one batched GEMM per chunk).

Chunk size (`chunk_rows`): as many rows as keep the chunk's buffers (`LossSpec.buffers`, plus
one when the gradient cannot be written in place) within _CHUNK_MEMORY = 0.45x the student
logits' bytes, so that peak extra memory with the gradient (1x) stays within 1.5x; but never
fewer than _CHUNK_ELEMENTS = 2^20 logits per chunk (small inputs run in one or a few chunks).
Fewer, larger chunks matter on a loaded machine: every multi-threaded tensor operation ends in
a barrier that waits for the slowest thread, so the operation count, not the arithmetic,
dominates there (and how long a thread spins at each barrier: see `akl_core._openmp`).
`chunk_size=` (positions per chunk) overrides the rule.

torch.compile: not used; eager is the one code path. Measured on real logits (N=1024,
V=49152, 2 threads, this 2-core machine): compiling these chunk functions as they are took
31 s on the first call and then ran 1.8x SLOWER than eager (the in-place / out= passes and the
batched GEMMs leave inductor nothing to fuse); compiling plain log_softmax + kl_div took 31 s
and then ran at 0.29x plain FKL, against 0.60x (fkl) and 0.81x (akl) for the eager kernels.
A fused rewrite could gain about 2x at steady state for long CPU runs, at the price of a
second set of kernels and a compile per shape family; the eager kernels already meet the
targets (<= 1x plain FKL, <= 1.5x memory), so we keep one path.
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
from ._dists import BUFFERS, Dists, make_dists, rowdot_two
from ._masking import check_masks
from .divergences import LOSSES, Kernel, LossSpec, get_loss, kl_pair
from .headtail import gaps_and_weight, head_tail
from .sparse import SparseTeacher, sparse_per_row, sparse_per_token
from .stats import KDStats

REDUCTIONS = ("mean", "sum", "none")
_CHUNK_ELEMENTS = 1 << 20  # smallest automatic chunk, in logits
_CHUNK_MEMORY = 0.45  # automatic chunks keep their buffers within this x the logits (1.5x in all)
STAT_FIELDS = ("fkl", "rkl", "w", "g_head", "g_tail", "head_size", "head_mass",
               "teacher_entropy", "student_entropy")


def check_chunk_size(chunk_size: int | None) -> int | None:
    """Return chunk_size, or raise unless it is None or a positive int (rows per chunk)."""
    if chunk_size is not None and (
        isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1
    ):
        raise ValueError(
            f"chunk_size must be a positive int (positions per chunk) or None (automatic), "
            f"got {chunk_size!r}"
        )
    return chunk_size


def chunk_rows(n_rows: int, vocab: int, itemsize: int, dtype: torch.dtype, buffers: int) -> int:
    """Automatic rows per chunk for `n_rows` x `vocab` logits of `itemsize` bytes, computed in
    `dtype` with `buffers` `[R, V]` buffers: within _CHUNK_MEMORY x the logits' bytes, and at
    least _CHUNK_ELEMENTS logits per chunk."""
    per_row = buffers * vocab * torch.finfo(dtype).bits // 8
    by_memory = int(_CHUNK_MEMORY * n_rows * vocab * itemsize) // per_row
    return max(1, min(n_rows, max(by_memory, _CHUNK_ELEMENTS // vocab)))


def _chunk_stats(d: Dists, mu: float, boundary: str) -> None:
    """The KDStats fields of a chunk into `d.found` (`[R]` each). Runs before the kernel, which
    then reuses them (the head split, FKL, RKL and the log-ratio) instead of recomputing."""
    gaps_and_weight(d, mu, boundary)
    kl_pair(d)
    # sum q log q and sum p log p, each directly: -(FKL + sum p log q) would save a read but
    # cancels where the teacher is confident (1% off at H(p) = 1e-3 on real rows)
    q_lq, p_lp = rowdot_two(d.q, d.lq, d.p, d.lp)
    d.found["student_entropy"], d.found["teacher_entropy"] = -q_lq, -p_lp


def _put(out: torch.Tensor, index: slice | torch.Tensor, value: torch.Tensor) -> None:
    if isinstance(index, slice):
        out[index] = value
    else:
        out.index_copy_(0, index, value.to(out.dtype))


def run_chunks(
    student: torch.Tensor,
    teacher: torch.Tensor,
    kernel: Kernel | None,
    params: dict[str, Any],
    *,
    temperature: float,
    kernel_buffers: int = BUFFERS,
    rows: torch.Tensor | None = None,
    chunk_size: int | None = None,
    need_grad: bool = False,
    stats: tuple[float, str] | None = None,
    floored: bool = False,
    grad_scale: float | torch.Tensor = 1.0,
    name: str = "loss",
) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, torch.Tensor] | None]:
    """The chunk loop over `[N, V]` logits: (values `[N]`, grad `[N, V]` w.r.t. the raw student
    logits or None, stats {field: `[N]`} or None).

    `rows` (int64 `[n]`) limits the work to those rows; the others get 0 (and zero gradient).
    `kernel=None` computes stats only. `stats=(mu, boundary)` adds the KDStats fields.
    `kernel_buffers`: the `[R, V]` buffers the kernel holds besides the gradient (LossSpec).
    `floored=True` uses floored log-probs from the start (diagnostics). The gradient is that
    of `grad_scale * values.sum()` (a reduction's 1 / count folded into the chunk pass).
    """
    n_rows, vocab = student.shape
    dtype = compute_dtype(student.dtype)
    device = student.device
    factor = grad_scale / temperature
    count = n_rows if rows is None else rows.numel()
    grad = None
    if need_grad:
        grad = torch.empty_like(student) if rows is None else torch.zeros_like(student)
    # the kernel writes the gradient in place into `grad` when it can, else into a spare buffer
    direct = grad is not None and rows is None and grad.dtype == dtype
    scratch = kernel_buffers > BUFFERS
    buffers_per_row = max(kernel_buffers, BUFFERS) + int(not direct)
    step = chunk_size or chunk_rows(n_rows, vocab, student.element_size(), dtype, buffers_per_row)
    step = max(1, min(step, count))
    values = torch.zeros(n_rows, dtype=dtype, device=device)
    out_stats = None
    if stats is not None:
        out_stats = {f: torch.zeros(n_rows, dtype=torch.long if f == "head_size" else dtype,
                                    device=device) for f in STAT_FIELDS}
    buffers = torch.empty((BUFFERS, step, vocab), dtype=dtype, device=device)
    work = torch.empty((step, vocab), dtype=dtype, device=device) if scratch else None
    spare: list[torch.Tensor] = []  # the gradient slot when not `direct`, made when needed
    open_rows = torch.zeros(n_rows, dtype=torch.bool, device=device)  # see `Dists.redo`
    value_open = torch.zeros(n_rows, dtype=torch.bool, device=device)  # values left open
    uses_head = []  # whether the kernel read the head split (then open rows redo their value)

    def rows_of(x: torch.Tensor, index: slice | torch.Tensor, stage: torch.Tensor) -> torch.Tensor:
        if isinstance(index, slice):
            return x[index]
        if x.dtype == stage.dtype:  # gather straight into the buffer the chunk starts from
            return torch.ops.aten.index.Tensor_out(x, [index], out=stage)  # x[index], no alloc
        return x[index]

    def run(index: slice | torch.Tensor, floored: bool, exact: bool, with_kernel: bool) -> None:
        r = index.stop - index.start if isinstance(index, slice) else index.numel()
        chunk_buffers = buffers[:, :r]
        s = rows_of(student, index, chunk_buffers[2])  # the q and p slots: free until the exp
        t = rows_of(teacher, index, chunk_buffers[3])
        d = make_dists(s, t, temperature, dtype, floored, buffers=chunk_buffers)
        in_place = direct and isinstance(index, slice)  # the kernel writes the final gradient
        if not in_place and not spare:
            spare.append(torch.empty((step, vocab), dtype=dtype, device=device))
        d.grad_out = grad[index] if in_place else spare[0][:r]  # type: ignore[index]
        d.grad_scale = factor
        d.work = None if work is None else work[:r]
        d.redo = None if exact else torch.zeros(r, dtype=torch.bool, device=device)
        if stats is not None:
            _chunk_stats(d, *stats)
            d.found.pop("head_used")
        if kernel is not None and with_kernel:
            # the kernel's own open rows, apart from those the stats left open
            stats_open = d.redo if stats is not None else None
            if stats_open is not None:
                d.redo = torch.zeros_like(stats_open)
            value, g = kernel(d, need_grad, **params)
            if not uses_head:  # the value of every open row is redone (AKL reads the head)
                uses_head.append(bool(d.found.get("head_used")))
            if d.redo is not None and d.found.get("value_open"):  # values left open (AB)
                _put(value_open, index, d.redo)
            if stats_open is not None:
                d.redo |= stats_open
            _put(values, index, value)
            if grad is not None and g is not None:
                if isinstance(d.grad_scale, torch.Tensor) or d.grad_scale != 1.0:
                    g = g.mul_(d.grad_scale)  # the kernel left the scaling to us
                if not in_place or g.data_ptr() != d.grad_out.data_ptr():
                    _put(grad, index, g)
        if out_stats is not None:
            for field, tensor in out_stats.items():
                _put(tensor, index, d.found[field])
            if d.redo is not None:  # finite loss, non-finite diagnostics: redo the stats
                f = d.found
                d.redo |= ~torch.isfinite(f["teacher_entropy"] + f["student_entropy"]
                                          + f["fkl"] + f["rkl"])
        if d.redo is not None:
            _put(open_rows, index, d.redo)

    for start in range(0, count, step):
        stop = min(start + step, count)
        run(slice(start, stop) if rows is None else rows[start:stop], floored, False, True)
    # One check at the end (host syncs): rows whose fast value is not finite (masked -inf
    # vocabulary entries) are redone floored (0 * log 0 = 0); rows the fast head search left
    # open are redone exactly, the loss too if it reads the head (AKL), else the stats only
    # (so the loss is bit-identical with and without return_stats).
    redo_all = ~torch.isfinite(values) | value_open
    if uses_head and uses_head[0]:
        redo_all |= open_rows
    for mask, with_kernel in ((redo_all, True), (open_rows & ~redo_all, False)):
        bad = mask.nonzero().squeeze(-1)
        for start in range(0, bad.numel(), step):
            run(bad[start : start + step], True, True, with_kernel)
        if with_kernel and bad.numel() and kernel is not None and bool(
            values.index_select(0, bad).isnan().any()
        ):
            raise ValueError(
                f"{name} produced NaN: the logits contain NaN or +inf values, or a position "
                f"whose logits are all -inf (masked vocabulary entries should be -inf or a "
                f"large negative number, with at least one entry left)"
            )
    return values, grad, out_stats


class _Job:
    """What `_ChunkedLoss` runs, and where it leaves the stats (a side output).

    denom: None returns per-position values; else the output is values.sum() / denom.
    """

    def __init__(self, spec: LossSpec, params: dict[str, Any], temperature: float,
                 rows: torch.Tensor | None, chunk_size: int | None,
                 stats: tuple[float, str] | None, denom: float | torch.Tensor | None) -> None:
        self.spec, self.params, self.temperature = spec, params, temperature
        self.rows, self.chunk_size, self.stats, self.denom = rows, chunk_size, stats, denom
        self.values: torch.Tensor | None = None
        self.stats_out: dict[str, torch.Tensor] | None = None


class _ChunkedLoss(torch.autograd.Function):
    """values[r] = kernel(student[r], teacher[r]) (or their sum / denom). The gradient is
    computed chunk by chunk in forward, the reduction's scale included; backward hands the
    saved buffer on unchanged when the incoming gradient is 1 (so autograd can adopt it as
    `.grad`, no copy), else scales a copy (retain_graph and repeated backward stay exact)."""

    @staticmethod
    def forward(ctx: Any, student: torch.Tensor, teacher: torch.Tensor, job: _Job) -> torch.Tensor:  # type: ignore[override]
        scale: float | torch.Tensor = 1.0
        if isinstance(job.denom, torch.Tensor):
            scale = 1.0 / job.denom.to(compute_dtype(student.dtype))
        elif job.denom is not None:
            scale = 1.0 / job.denom
        values, grad, job.stats_out = run_chunks(
            student, teacher, job.spec.kernel, job.params, temperature=job.temperature,
            kernel_buffers=job.spec.buffers, rows=job.rows, chunk_size=job.chunk_size, need_grad=bool(ctx.needs_input_grad[0]),
            stats=job.stats, grad_scale=scale, name=job.spec.name,
        )
        job.values = values
        ctx.save_for_backward(grad)
        return values if job.denom is None else values.sum() / job.denom

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[Any, ...]:
        (grad,) = ctx.saved_tensors
        if grad_out.dim() == 0 or grad_out.stride(-1) == 0:  # one number, maybe expanded
            factor = grad_out.reshape(-1)[:1]
            if factor.numel() == 0 or bool(factor == 1):
                return grad, None, None
            return grad * factor.to(grad.dtype), None, None
        return grad * grad_out.unsqueeze(-1).to(grad.dtype), None, None


def _per_row(
    name: str,
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor | SparseTeacher,
    temperature: float,
    vocab_size: int | None,
    params: dict[str, Any],
    valid: torch.Tensor | None = None,
    chunk_size: int | None = None,
    with_stats: bool = False,
    denom: float | torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor] | None]:
    """(output, per-position values `[...]`, stats or None), validated. The output is the values
    (denom None) or values.sum() / denom; `valid` (bool `[...]`) limits the work to those.
    A SparseTeacher goes to akl_core.sparse (its stats from a second, diagnostics pass)."""
    spec = get_loss(name)
    resolved = spec.resolve(params)
    temperature = check_temperature(temperature)
    chunk_size = check_chunk_size(chunk_size)
    if isinstance(teacher_logits, SparseTeacher):
        return _sparse_per_row(spec, resolved, student_logits, teacher_logits, temperature,
                               vocab_size, valid, with_stats, denom)
    student_logits, teacher_logits = check_logits(student_logits, teacher_logits, vocab_size)
    shape = student_logits.shape[:-1]
    vocab = student_logits.shape[-1]
    rows = None
    if valid is not None:
        rows = valid.reshape(-1).nonzero().squeeze(-1)
        if rows.numel() == valid.numel():
            rows = None
    check_masks([(spec.name, resolved)], student_logits.reshape(-1, vocab),
                teacher_logits.reshape(-1, vocab), rows, shape)
    stats = None
    if with_stats:
        stats = (float(resolved.get("mu", 0.5)), str(resolved.get("boundary", "reference")))
    job = _Job(spec, resolved, temperature, rows, chunk_size, stats, denom)
    out = _ChunkedLoss.apply(
        student_logits.reshape(-1, vocab), teacher_logits.reshape(-1, vocab), job
    )
    assert job.values is not None
    values = job.values.reshape(shape)
    if denom is None:
        out = out.reshape(shape)
    stats_out = None
    if job.stats_out is not None:
        stats_out = {k: v.reshape(shape) for k, v in job.stats_out.items()}
    return out, values, stats_out


def _sparse_per_row(
    spec: LossSpec,
    resolved: dict[str, Any],
    student_logits: torch.Tensor,
    teacher: SparseTeacher,
    temperature: float,
    vocab_size: int | None,
    valid: torch.Tensor | None,
    with_stats: bool,
    denom: float | torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor] | None]:
    """`_per_row` against a SparseTeacher: the loss on its bins (akl_core.sparse) and, when
    asked, the stats of the same bins (head_tail and fkl / rkl: a second pass, no gradient)."""
    values = sparse_per_row(spec, resolved, student_logits, teacher, temperature, vocab_size,
                            valid)
    out = values if denom is None else values.sum() / denom
    if not with_stats:
        return out, values, None
    with torch.no_grad():
        s = student_logits.detach()
        mu = float(resolved.get("mu", 0.5))
        boundary = str(resolved.get("boundary", "reference"))
        ht = head_tail(s, teacher, mu=mu, boundary=boundary, temperature=temperature,
                       vocab_size=vocab_size)
        divs = sparse_per_token([get_loss("fkl"), get_loss("rkl")], s, teacher, temperature,
                                vocab_size)
        fields = {"fkl": divs["fkl"], "rkl": divs["rkl"], **ht.to_dict()}
        if valid is not None:
            fields = {k: torch.where(valid, v, torch.zeros_like(v)) for k, v in fields.items()}
    return out, values, fields


def divergence(
    name: str,
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor | SparseTeacher,
    *,
    temperature: float = 1.0,
    vocab_size: int | None = None,
    chunk_size: int | None = None,
    **params: Any,
) -> torch.Tensor:
    """Per-position divergence `name` between teacher p and student q, shape `logits.shape[:-1]`.

    Differentiable w.r.t. `student_logits`. `params` are the loss's parameters (see
    `akl_core.LOSSES[name].params`). `vocab_size` cuts both logits to their first entries
    (for padded output layers). No tau^2 factor is applied. `chunk_size`: positions per chunk
    (None: automatic; see the module doc). `teacher_logits` may be an
    `akl_core.SparseTeacher` (top-k log-probs) instead.
    """
    return _per_row(name, student_logits, teacher_logits, temperature, vocab_size, params,
                    chunk_size=chunk_size)[0]


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
    chunk_size: int | None = None,
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
    `chunk_size`: positions per chunk (None: automatic; see the module doc).
    return_stats=True returns `(loss, stats)`, stats an `akl_core.KDStats` of detached
    per-position diagnostics (0 at masked positions) from the same chunk pass as the loss.
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
    denom = _denominator(reduction, valid, positions, num_items)
    result, values, stats = _per_row(loss, student_logits, teacher_logits, temperature,
                                     vocab_size, params, valid, chunk_size,
                                     with_stats=return_stats, denom=denom)
    if stats is None:
        return result
    if valid is None:
        valid = torch.ones(values.shape, dtype=torch.bool, device=values.device)
    return result, KDStats(value=values.detach(), valid=valid, **stats)


def _denominator(
    reduction: str,
    valid: torch.Tensor | None,
    positions: torch.Size,
    num_items: int | float | torch.Tensor | None,
) -> float | torch.Tensor | None:
    """What the summed loss is divided by: None for "none", 1 for "sum", else the count of
    valid positions (a tensor: no host sync; at least 1, so all-masked gives 0, never NaN) or
    `num_items`."""
    if reduction == "none":
        return None
    if reduction == "sum":
        return 1.0
    if num_items is not None:  # checked (check_num_items): a finite float > 0
        return float(num_items)
    if valid is None:
        return float(max(positions.numel(), 1))
    return valid.sum().clamp_min(1)


@torch.no_grad()
def per_token_divergences(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor | SparseTeacher,
    *,
    names: list[str] | tuple[str, ...] | None = None,
    temperature: float = 1.0,
    vocab_size: int | None = None,
    chunk_size: int | None = None,
) -> dict[str, torch.Tensor]:
    """Every named divergence (default: the whole catalogue) at default parameters, per position.

    Returns {name: tensor `[...]`}; no gradients. The distributions are computed once per chunk
    (floored log-probs) and shared by every divergence. `chunk_size`: positions per chunk.
    """
    specs = [get_loss(n) for n in (names if names is not None else list(LOSSES))]
    temperature = check_temperature(temperature)
    chunk_size = check_chunk_size(chunk_size)
    if isinstance(teacher_logits, SparseTeacher):
        return sparse_per_token(specs, student_logits, teacher_logits, temperature, vocab_size)
    student_logits, teacher_logits = check_logits(student_logits, teacher_logits, vocab_size)
    shape = student_logits.shape[:-1]
    vocab = student_logits.shape[-1]
    s2, t2 = student_logits.reshape(-1, vocab), teacher_logits.reshape(-1, vocab)
    dtype = compute_dtype(student_logits.dtype)
    check_masks([(spec.name, spec.defaults()) for spec in specs], s2, t2, None, shape)
    n_rows = s2.shape[0]
    per_row = max([BUFFERS + 1] + [spec.buffers + 1 for spec in specs])
    step = chunk_size or chunk_rows(n_rows, vocab, s2.element_size(), dtype, per_row)
    step = max(1, min(step, n_rows))
    out = {spec.name: torch.zeros(n_rows, dtype=dtype, device=s2.device) for spec in specs}
    buffers = torch.empty((BUFFERS, step, vocab), dtype=dtype, device=s2.device)
    spare = torch.empty((step, vocab), dtype=dtype, device=s2.device)
    work = torch.empty((step, vocab), dtype=dtype, device=s2.device)
    for start in range(0, n_rows, step):
        stop = min(start + step, n_rows)
        d = make_dists(s2[start:stop], t2[start:stop], temperature, dtype, floored=True,
                       buffers=buffers[:, : stop - start])
        d.grad_out, d.work = spare[: stop - start], work[: stop - start]
        for spec in specs:
            out[spec.name][start:stop] = spec.kernel(d, False, **spec.defaults())[0]
    for name, values in out.items():
        if values.numel() and bool(torch.isnan(values).any()):
            raise ValueError(
                f"{name} produced NaN: the logits contain NaN or +inf values, or a position "
                f"whose logits are all -inf"
            )
    return {name: values.reshape(shape) for name, values in out.items()}
