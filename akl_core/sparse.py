"""Top-k teachers: `SparseTeacher`, and every divergence of the catalogue against one.

Teachers are often stored as their top-k log-probabilities per position (offline caches:
DistillKit, Axolotl, NeMo). A `SparseTeacher(indices, logprobs, tail=...)` stands wherever
teacher logits do (`divergence`, `distillation_loss`, `per_token_divergences`, `head_tail`).
p is the teacher, q the student softmax(student_logits / T); the student keeps its full
vocabulary, so its mass outside the teacher's k tokens is known exactly.

tail="bucket" (default): k + 1 bins. The teacher's k log-probs plus one bucket holding its
    missing mass 1 - sum(top-k), against the student's probabilities at the same k tokens plus
    its remaining mass (a logsumexp over the other V - k logits: exact, no 1 - sum q
    cancellation). Every divergence is then computed exactly on these k + 1 bins, so it is
    never negative; for the f-divergences (fkl, rkl, jsd, tvd, skl, srkl) it is a lower bound
    of the full-vocabulary value (data-processing inequality), and k = V gives the dense value.
    The bucket is never in AKL's head: the head is taken among the top-k bins (all of them when
    their mass is below mu).
tail="renormalize": the DistillKit convention. The teacher renormalised over its top-k, the
    student renormalised over the same k tokens; its mass elsewhere is ignored (no gradient
    pushes it down). Biased: neither a bound nor consistent as k grows below V (README table).

Details of the bucket:
- The teacher's missing mass is computed in float64 from the given log-probs. Below one unit
  in the last place of 1 in the log-probs' dtype (finfo(dtype).eps / 2: 6e-8 for float32,
  3.9e-3 for bfloat16) it cannot be told from rounding noise and is taken as that amount (so a
  top-k that rounds to mass 1 never makes RKL-type losses infinite). Where the student's
  remaining mass is exactly 0 (it masks every token outside the top-k), a missing mass within
  the rounding tolerance (`mass_tolerance`) is taken as 0: the bucket is empty on both sides
  and contributes 0. With k = V the bucket is always empty (the dense result).
- Temperature T divides the student's logits before binning (exact), and the teacher's k + 1
  log-masses as if the bucket were one token: its tempered mass is m^(1/T) instead of the
  unknown sum of the tail's p_j^(1/T). At T = 1 (and for k = V) this is exact.
- Log-probs are taken as logits of the bins: their softmax renormalises any rounding.
Masked entries (see akl_core._masking): a teacher log-prob of -inf is a zero-probability token;
student logits -inf or <= finfo.min are masked. One-sided zeros make some losses infinite
there, which raises a ValueError like the dense path.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import torch

from ._checks import FLOAT_DTYPES, compute_dtype
from ._dists import make_dists
from ._masking import check_masks, is_masked
from .divergences import Kernel, LossSpec
from .headtail import HeadTail, check_boundary, check_mu, gaps_and_weight

TAILS = ("bucket", "renormalize")
_CHUNK_ELEMENTS = 1 << 21


def mass_tolerance(dtype: torch.dtype) -> float:
    """How far the top-k mass may exceed 1 (rounding of stored log-probs): 2e-2 for 16-bit
    dtypes, 1e-3 otherwise (float32 log-softmax over a large vocabulary is off by ~1e-5)."""
    return 2e-2 if dtype in (torch.float16, torch.bfloat16) else 1e-3


def _position(flat: int, shape: tuple[int, ...]) -> str:
    if len(shape) <= 1:
        return str(flat)
    index = torch.unravel_index(torch.tensor(flat), shape)
    return "(" + ", ".join(str(int(i)) for i in index) + ")"


class SparseTeacher:
    """A teacher given by its top-k tokens per position: `indices` (integer `[..., k]`) and
    their log-probabilities `logprobs` (float `[..., k]`, at temperature 1), plus how to treat
    the rest of the vocabulary: `tail` = "bucket" (exact k + 1 bins, default) or "renormalize"
    (DistillKit's convention, biased). See the module doc.

    Checked on construction (ValueError): shapes, k >= 1, integer indices >= 0 and unique per
    position, log-probs without NaN / +inf, <= 0 and summing to at most 1 + mass_tolerance
    (rounding), not all -inf. `validate=False` skips the data checks (slices of a checked
    teacher). Attributes: indices (int64), logprobs (detached), tail, shape (the positions'
    shape), k. Indexing and reshaping act on the positions and return a SparseTeacher.
    """

    def __init__(
        self,
        indices: torch.Tensor,
        logprobs: torch.Tensor,
        tail: str = "bucket",
        *,
        validate: bool = True,
    ) -> None:
        if tail not in TAILS:
            raise ValueError(f"tail must be one of {TAILS}, got {tail!r}")
        for label, tensor in (("indices", indices), ("logprobs", logprobs)):
            if not isinstance(tensor, torch.Tensor):
                raise ValueError(f"SparseTeacher {label} must be a torch.Tensor, "
                                 f"got {type(tensor).__name__}")
        if indices.dtype.is_floating_point or indices.dtype.is_complex or indices.dtype == torch.bool:
            raise ValueError(f"SparseTeacher indices must be integer token ids, got {indices.dtype}")
        if logprobs.dtype not in FLOAT_DTYPES:
            raise ValueError(f"SparseTeacher logprobs must be float16, bfloat16, float32 or "
                             f"float64, got {logprobs.dtype}")
        if indices.shape != logprobs.shape:
            raise ValueError(f"SparseTeacher indices {tuple(indices.shape)} and logprobs "
                             f"{tuple(logprobs.shape)} must have the same shape [..., k]")
        if indices.dim() < 1 or indices.shape[-1] < 1:
            raise ValueError(f"SparseTeacher needs shape [..., k] with k >= 1, got "
                             f"{tuple(indices.shape)}")
        if indices.device != logprobs.device:
            raise ValueError(f"SparseTeacher indices are on {indices.device} but logprobs on "
                             f"{logprobs.device}")
        self.indices = indices.long()
        self.logprobs = logprobs.detach()
        self.tail = tail
        if validate:
            self._validate()

    # -- checks --------------------------------------------------------------------------------

    def _validate(self) -> None:
        if self.indices.numel() == 0:
            return
        shape = tuple(self.shape)
        idx = self.indices.reshape(-1, self.k)
        lp = self.logprobs.reshape(-1, self.k)

        def first(bad: torch.Tensor) -> str:
            return _position(int(bad.nonzero()[0, 0]), shape)

        negative = (idx < 0).any(-1)
        if bool(negative.any()):
            raise ValueError(f"SparseTeacher indices must be >= 0 (position {first(negative)})")
        if self.k > 1:
            ordered = idx.sort(-1).values
            repeated = (ordered[:, 1:] == ordered[:, :-1]).any(-1)
            if bool(repeated.any()):
                raise ValueError(f"SparseTeacher indices must be unique within each position; "
                                 f"position {first(repeated)} repeats a token id")
        broken = (lp.isnan() | lp.isposinf()).any(-1)
        if bool(broken.any()):
            raise ValueError(f"SparseTeacher logprobs contain NaN or +inf (position "
                             f"{first(broken)})")
        tol = mass_tolerance(self.logprobs.dtype)
        positive = (lp > math.log1p(tol)).any(-1)
        if bool(positive.any()):
            raise ValueError(f"SparseTeacher logprobs must be log-probabilities (<= 0); "
                             f"position {first(positive)} has a positive value")
        total = lp.double().masked_fill(is_masked(lp), float("-inf")).logsumexp(-1)
        empty = total.isneginf()
        if bool(empty.any()):
            raise ValueError(f"SparseTeacher logprobs are all -inf at position {first(empty)}: "
                             f"no teacher mass in the top-k")
        over = total > math.log1p(tol)
        if bool(over.any()):
            r = int(over.nonzero()[0, 0])
            raise ValueError(f"SparseTeacher top-k probabilities sum to {math.exp(total[r]):.6g} "
                             f"> 1 at position {_position(r, shape)} (allowed: 1 + {tol:g} for "
                             f"rounding); logprobs must be the teacher's log-softmax, not logits")

    # -- shape ---------------------------------------------------------------------------------

    @property
    def k(self) -> int:
        """Tokens per position."""
        return int(self.indices.shape[-1])

    @property
    def shape(self) -> torch.Size:
        """The positions' shape (`indices.shape[:-1]`)."""
        return self.indices.shape[:-1]

    @property
    def device(self) -> torch.device:
        return self.indices.device

    def _like(self, indices: torch.Tensor, logprobs: torch.Tensor) -> SparseTeacher:
        return SparseTeacher(indices, logprobs, tail=self.tail, validate=False)

    def reshape(self, *shape: int | tuple[int, ...]) -> SparseTeacher:
        """The same teacher with positions reshaped to `shape`."""
        dims = tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], tuple | list) else shape
        return self._like(self.indices.reshape(*dims, self.k), self.logprobs.reshape(*dims, self.k))

    def flatten(self) -> SparseTeacher:
        """Positions flattened to one dimension: `[N, k]`."""
        return self.reshape(-1)

    def __getitem__(self, key: Any) -> SparseTeacher:
        """Index the positions (the last, k dimension is kept)."""
        indices, logprobs = self.indices[key], self.logprobs[key]
        if indices.dim() < 1 or indices.shape[-1] != self.k:
            raise ValueError("index a SparseTeacher by its positions only; its last (k) "
                             "dimension is kept")
        return self._like(indices, logprobs)

    def select(self, rows: torch.Tensor | slice) -> SparseTeacher:
        """Rows of the flattened positions: `[len(rows), k]`."""
        return self.flatten()[rows]

    def to(self, device: torch.device | str) -> SparseTeacher:
        """The same teacher on `device`."""
        return self._like(self.indices.to(device), self.logprobs.to(device))

    def __repr__(self) -> str:
        return (f"SparseTeacher(shape={tuple(self.shape)}, k={self.k}, tail={self.tail!r}, "
                f"dtype={self.logprobs.dtype}, device={self.device})")

    @classmethod
    def from_logits(cls, logits: torch.Tensor, k: int, tail: str = "bucket") -> SparseTeacher:
        """The top-k of dense teacher logits `[..., V]` (log-softmax in float32, or float64 for
        float64 logits; logprobs in that dtype)."""
        if not isinstance(logits, torch.Tensor) or logits.dtype not in FLOAT_DTYPES:
            raise ValueError("from_logits needs float teacher logits [..., V]")
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= logits.shape[-1]:
            raise ValueError(f"k must be an int in [1, {logits.shape[-1]}], got {k!r}")
        dtype = compute_dtype(logits.dtype)
        flat = logits.detach().reshape(-1, logits.shape[-1])
        step = max(1, _CHUNK_ELEMENTS // flat.shape[-1])
        values, indices = [], []
        for start in range(0, flat.shape[0], step):
            lp = torch.log_softmax(flat[start : start + step].to(dtype), dim=-1)
            v, i = lp.topk(k, dim=-1)
            values.append(v)
            indices.append(i)
        shape = (*logits.shape[:-1], k)
        if not values:
            empty = flat.new_zeros(0, k, dtype=dtype)
            return cls(empty.long().reshape(shape), empty.reshape(shape), tail)
        return cls(torch.cat(indices).reshape(shape), torch.cat(values).reshape(shape), tail)


# --- the k (+1) bins of one chunk of positions ------------------------------------------------


def _teacher_bucket(
    logprobs: torch.Tensor, vocab: int, student_rest: torch.Tensor, dtype: torch.dtype
) -> torch.Tensor:
    """The teacher's bucket log-mass `[R]` (see the module doc for the rules)."""
    if logprobs.shape[-1] == vocab:
        return student_rest.new_full(student_rest.shape, float("-inf"), dtype=dtype)
    missing = -torch.expm1(logprobs.double().logsumexp(-1))
    bucket = missing.clamp_min(torch.finfo(logprobs.dtype).eps / 2).log()
    both_empty = (missing <= mass_tolerance(logprobs.dtype)) & student_rest.isneginf()
    return bucket.masked_fill(both_empty, float("-inf")).to(dtype)


def _chunk_bins(
    student: torch.Tensor,
    teacher: SparseTeacher,
    temperature: float,
    dtype: torch.dtype,
    keep: bool,
) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
    """(student bins, teacher bins, saved) for `[R, V]` raw student logits and `R` teacher rows.

    Bins are log-masses (any shift; used as logits). `saved` = (student logits / T with the
    k entries at -inf, their logsumexp) for the gradient, when `keep` (bucket only).
    """
    idx = teacher.indices
    raw_lp = teacher.logprobs.masked_fill(is_masked(teacher.logprobs), float("-inf"))
    lp = raw_lp.to(dtype)
    z = student.detach().to(dtype)
    z = z.clone() if z.data_ptr() == student.data_ptr() else z
    z.masked_fill_(is_masked(student.detach()), float("-inf"))
    if temperature != 1.0:
        z.div_(temperature)
    picked = z.gather(-1, idx)
    if teacher.tail == "renormalize":
        t_bins = lp / temperature if temperature != 1.0 else lp
        return picked, t_bins, None
    z.scatter_(-1, idx, float("-inf"))
    rest = torch.logsumexp(z, dim=-1)
    bucket = _teacher_bucket(raw_lp, z.shape[-1], rest, dtype)
    s_bins = torch.cat([picked, rest.unsqueeze(-1)], dim=-1)
    t_bins = torch.cat([lp, bucket.unsqueeze(-1)], dim=-1)
    if temperature != 1.0:
        t_bins = t_bins / temperature
    return s_bins, t_bins, ((z, rest) if keep else None)


def _grad_to_logits(
    g_bins: torch.Tensor,
    teacher: SparseTeacher,
    saved: tuple[torch.Tensor, torch.Tensor] | None,
    vocab: int,
    temperature: float,
) -> torch.Tensor:
    """d value / d raw student logits `[R, V]` from d value / d bins (chain rule, closed form).

    Bin i < k is z[idx_i] / T; the bucket is logsumexp of the other z / T, whose derivative is
    their softmax among themselves.
    """
    idx = teacher.indices
    if saved is None:
        grad = g_bins.new_zeros(g_bins.shape[0], vocab).scatter_(-1, idx, g_bins)
    else:
        z, rest = saved
        shift = rest.masked_fill(~torch.isfinite(rest), 0.0).unsqueeze(-1)
        grad = z.sub_(shift).exp_().mul_(g_bins[:, -1:])
        grad.scatter_(-1, idx, g_bins[:, :-1])
    return grad.div_(temperature) if temperature != 1.0 else grad


def _on_bins(
    kernel: Kernel,
    params: dict[str, Any],
    s_bins: torch.Tensor,
    t_bins: torch.Tensor,
    bucket: bool,
    need_grad: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The kernel on the bins: the fast path, and floored log-probs for rows it leaves
    non-finite (empty bins on both sides)."""
    dtype = s_bins.dtype
    d = replace(make_dists(s_bins, t_bins, 1.0, dtype), bucket=bucket)
    value, grad = kernel(d, need_grad, **params)
    bad = (~torch.isfinite(value)).nonzero().squeeze(-1)
    if bad.numel():
        d2 = replace(make_dists(s_bins[bad], t_bins[bad], 1.0, dtype, floored=True), bucket=bucket)
        v2, g2 = kernel(d2, need_grad, **params)
        value = value.clone()
        value[bad] = v2
        if grad is not None and g2 is not None:
            grad[bad] = g2
    return value, grad


def sparse_chunk(
    spec: LossSpec,
    params: dict[str, Any],
    student: torch.Tensor,
    teacher: SparseTeacher,
    temperature: float,
    need_grad: bool,
    *,
    positions: torch.Tensor | None = None,
    shape: tuple[int, ...] | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Values `[R]` and, if `need_grad`, their gradient w.r.t. the raw student logits `[R, V]`
    (compute dtype) for one chunk: `student` `[R, V]` and a teacher with positions `[R]`.

    The building block for chunked callers (e.g. a fused hidden-state path). Raises ValueError
    where the loss is infinite (one-sided zeros on the bins). `positions` / `shape`: the rows'
    flat positions and the positions' shape, for error messages.
    """
    dtype = compute_dtype(student.dtype)
    bucket = teacher.tail == "bucket"
    s_bins, t_bins, saved = _chunk_bins(student, teacher, temperature, dtype, keep=need_grad)
    check_masks([(spec.name, params)], s_bins, t_bins, None,
                shape if shape is not None else (s_bins.shape[0],), positions=positions,
                teacher_label="SparseTeacher")
    value, g_bins = _on_bins(spec.kernel, params, s_bins, t_bins, bucket, need_grad)
    if not need_grad or g_bins is None:
        return value, None
    return value, _grad_to_logits(g_bins, teacher, saved, student.shape[-1], temperature)


# --- the public paths (dispatched from losses.py and headtail.py) ----------------------------


def check_student(
    student_logits: torch.Tensor, teacher: SparseTeacher, vocab_size: int | None
) -> torch.Tensor:
    """Validate student logits `[..., V]` against a SparseTeacher; returns them (cut to
    vocab_size). Raises ValueError for types, devices, shapes and token ids >= V."""
    if not isinstance(student_logits, torch.Tensor):
        raise ValueError(f"student_logits must be a torch.Tensor, got "
                         f"{type(student_logits).__name__}")
    if student_logits.dtype not in FLOAT_DTYPES:
        raise ValueError(f"student_logits must be float16, bfloat16, float32 or float64, got "
                         f"{student_logits.dtype}")
    if student_logits.dim() < 1:
        raise ValueError("student_logits must have shape [..., V]; got a 0-d tensor")
    if student_logits.device != teacher.device:
        raise ValueError(f"student_logits are on {student_logits.device} but the SparseTeacher "
                         f"on {teacher.device}; move both to the same device")
    if student_logits.shape[:-1] != teacher.shape:
        raise ValueError(f"shape mismatch: student_logits {tuple(student_logits.shape)} vs "
                         f"SparseTeacher positions {tuple(teacher.shape)} (k={teacher.k}); they "
                         f"must agree on every dimension but the last")
    if vocab_size is not None:
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 1:
            raise ValueError(f"vocab_size must be a positive int, got {vocab_size!r}")
        if vocab_size > student_logits.shape[-1]:
            raise ValueError(f"vocab_size={vocab_size} exceeds the student's vocabulary size "
                             f"{student_logits.shape[-1]}")
        student_logits = student_logits[..., :vocab_size]
    vocab = student_logits.shape[-1]
    if vocab < 1:
        raise ValueError("the vocabulary dimension is empty (V = 0)")
    if teacher.k > vocab:
        raise ValueError(f"SparseTeacher has k={teacher.k} tokens per position but the student "
                         f"vocabulary has only {vocab}")
    if teacher.indices.numel() and int(teacher.indices.max()) >= vocab:
        raise ValueError(f"SparseTeacher token id {int(teacher.indices.max())} is out of range "
                         f"for a student vocabulary of {vocab} (pass vocab_size= only if the "
                         f"teacher's ids are below it)")
    return student_logits


def _check_nan(values: torch.Tensor, name: str) -> None:
    if values.numel() and bool(torch.isnan(values).any()):
        raise ValueError(
            f"{name} produced NaN: the student logits contain NaN or +inf values, or a position "
            f"whose logits are all -inf"
        )


def _rows_per_chunk(vocab: int) -> int:
    return max(1, _CHUNK_ELEMENTS // vocab)


class _SparseDivergence(torch.autograd.Function):
    """values[r] for rows r (all, or `rows`; the others 0 with zero gradient); the gradient is
    computed chunk by chunk in forward, like the dense path."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        student: torch.Tensor,
        teacher: SparseTeacher,
        spec: LossSpec,
        params: dict[str, Any],
        temperature: float,
        rows: torch.Tensor | None,
        shape: tuple[int, ...],
    ) -> torch.Tensor:
        need_grad = bool(ctx.needs_input_grad[0])
        n_rows, vocab = student.shape
        values = torch.zeros(n_rows, dtype=compute_dtype(student.dtype), device=student.device)
        grad = torch.zeros_like(student) if need_grad else None
        count = n_rows if rows is None else rows.numel()
        step = _rows_per_chunk(vocab)
        for start in range(0, count, step):
            if rows is None:
                index: torch.Tensor | slice = slice(start, min(start + step, count))
                positions = torch.arange(start, min(start + step, count), device=student.device)
                s, t = student[index], teacher[index]
            else:
                index = positions = rows[start : start + step]
                s, t = student.index_select(0, index), teacher[index]
            value, chunk_grad = sparse_chunk(spec, params, s, t, temperature, need_grad,
                                             positions=positions, shape=shape)
            values[index] = value
            if grad is not None and chunk_grad is not None:
                grad[index] = chunk_grad.to(grad.dtype)
        ctx.save_for_backward(grad)
        return values

    @staticmethod
    def backward(ctx: Any, grad_values: torch.Tensor) -> tuple[Any, ...]:
        (grad,) = ctx.saved_tensors
        grad_student = grad * grad_values.unsqueeze(-1).to(grad.dtype)
        return grad_student, None, None, None, None, None, None


def sparse_per_row(
    spec: LossSpec,
    params: dict[str, Any],
    student_logits: torch.Tensor,
    teacher: SparseTeacher,
    temperature: float,
    vocab_size: int | None,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-position values `[...]` of loss `spec` (resolved `params`) against a SparseTeacher;
    `valid` (bool `[...]`) limits the work to those positions (0 elsewhere)."""
    student_logits = check_student(student_logits, teacher, vocab_size)
    shape = tuple(student_logits.shape[:-1])
    s2 = student_logits.reshape(-1, student_logits.shape[-1])
    t2 = teacher.flatten()
    rows = None
    if valid is not None:
        flat = valid.reshape(-1)
        if not bool(flat.all()):
            rows = flat.nonzero().squeeze(-1)
    values = _SparseDivergence.apply(s2, t2, spec, params, temperature, rows, shape)
    _check_nan(values.detach(), spec.name)
    return values.reshape(shape)


@torch.no_grad()
def sparse_per_token(
    specs: list[LossSpec],
    student_logits: torch.Tensor,
    teacher: SparseTeacher,
    temperature: float,
    vocab_size: int | None,
) -> dict[str, torch.Tensor]:
    """Every divergence in `specs` at its defaults against a SparseTeacher, per position."""
    student_logits = check_student(student_logits, teacher, vocab_size)
    shape = tuple(student_logits.shape[:-1])
    s2 = student_logits.reshape(-1, student_logits.shape[-1])
    t2 = teacher.flatten()
    dtype = compute_dtype(s2.dtype)
    losses = [(spec.name, spec.defaults()) for spec in specs]
    out: dict[str, list[torch.Tensor]] = {spec.name: [] for spec in specs}
    step = _rows_per_chunk(s2.shape[-1])
    for start in range(0, s2.shape[0], step):
        t = t2[start : start + step]
        s_bins, t_bins, _ = _chunk_bins(s2[start : start + step], t, temperature, dtype, False)
        positions = torch.arange(start, start + s_bins.shape[0], device=s2.device)
        check_masks(losses, s_bins, t_bins, None, shape, positions=positions,
                    teacher_label="SparseTeacher")
        for spec in specs:
            value, _ = _on_bins(spec.kernel, spec.defaults(), s_bins, t_bins,
                                teacher.tail == "bucket", False)
            out[spec.name].append(value)
    result = {}
    for name, chunks in out.items():
        values = torch.cat(chunks) if chunks else s2.new_zeros(0, dtype=dtype)
        _check_nan(values, name)
        result[name] = values.reshape(shape)
    return result


@torch.no_grad()
def sparse_head_tail(
    student_logits: torch.Tensor,
    teacher: SparseTeacher,
    *,
    mu: float,
    boundary: str,
    temperature: float,
    vocab_size: int | None,
) -> HeadTail:
    """head_tail against a SparseTeacher: the diagnostics of the bins the losses see (k + 1
    bins with the bucket never in the head, or the renormalised top-k); entropies are those of
    the binned distributions (a lower bound of the full ones for the bucket)."""
    mu, boundary = check_mu(mu), check_boundary(boundary)
    student_logits = check_student(student_logits, teacher, vocab_size)
    shape = tuple(student_logits.shape[:-1])
    s2 = student_logits.reshape(-1, student_logits.shape[-1])
    t2 = teacher.flatten()
    dtype = compute_dtype(s2.dtype)
    names = ("g_head", "g_tail", "w", "head_size", "head_mass", "teacher_entropy",
             "student_entropy")
    parts: dict[str, list[torch.Tensor]] = {name: [] for name in names}
    step = _rows_per_chunk(s2.shape[-1])
    for start in range(0, s2.shape[0], step):
        s_bins, t_bins, _ = _chunk_bins(s2[start : start + step], t2[start : start + step],
                                        temperature, dtype, False)
        positions = torch.arange(start, start + s_bins.shape[0], device=s2.device)
        check_masks((), s_bins, t_bins, None, shape, positions=positions,
                    teacher_label="SparseTeacher")
        d = replace(make_dists(s_bins, t_bins, 1.0, dtype, floored=True),
                    bucket=teacher.tail == "bucket")
        g_head, g_tail, w, stats = gaps_and_weight(d, mu, boundary)
        parts["g_head"].append(g_head)
        parts["g_tail"].append(g_tail)
        parts["w"].append(w)
        parts["head_size"].append(stats.head_size)
        parts["head_mass"].append(stats.head_mass)
        parts["teacher_entropy"].append(-(d.p * d.lp).sum(-1))
        parts["student_entropy"].append(-(d.q * d.lq).sum(-1))
    fields = {}
    for name, chunks in parts.items():
        if chunks:
            fields[name] = torch.cat(chunks).reshape(shape)
        else:
            kind = torch.long if name == "head_size" else dtype
            fields[name] = torch.zeros(shape, dtype=kind, device=s2.device)
    if bool(fields["student_entropy"].isnan().any()):
        raise ValueError("head_tail produced NaN: the student logits contain NaN or +inf values, "
                         "or a position whose logits are all -inf")
    return HeadTail(**fields)
