"""The teacher/student distributions of one chunk of token positions, computed once and shared.

Conventions: p is the TEACHER distribution, q the STUDENT distribution, both over the last
dimension V. `make_dists` builds them with one fused log-softmax per side and one exp for
both, into buffers the caller may reuse from chunk to chunk (fresh [R, V] tensors cost page
faults on CPU, often more than the arithmetic). Two ways:
- `make_dists(...)` (fast): exact for finite logits.
- `make_dists(..., floored=True)`: log-probabilities floored at LOG_FLOOR, so a vocabulary
  entry masked with -inf gets probability exactly 0 and a finite log-probability: 0 * log 0
  terms vanish and no NaN appears, in values or in gradients. The chunk runner (losses.py)
  uses it for the rows whose fast value came out non-finite.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ._topk import block_maxima, top1_index, uses_blocks

# exp(-1e4) is exactly 0 in float32 and float64, yet -1e4 keeps every difference finite.
LOG_FLOOR = -1.0e4
BUFFERS = 4  # [R, V] buffers of a chunk's distributions: lq, q, lp, p


@dataclass
class Dists:
    """Distributions for `R` positions over `V` entries (`[R, V]`, compute dtype).

    lq, q: student log-probs and probs; lp, p: teacher log-probs and probs. Kernels read these
    and never write them. The teacher side never carries gradients.
    grad_out: the gradient slot (`grad_buffer()`): a kernel may use it as scratch, and leaves
        its gradient there; `log_ratio()` lives there too until someone takes the slot.
    work: a second scratch buffer (`scratch()`), for kernels that need one more.
    found: per-row `[R]` values a kernel computed on the way (fkl, rkl, w, g_head, ...);
        return_stats reuses them instead of computing them again.
    redo: bool `[R]` or None. When given (the runner's fast pass), work may leave rows
        unfinished and mark them here: the head search rows whose head is longer than its
        first top-k stage, AB rows whose fast form cancels. The runner recomputes them
        exactly at the end (one host sync per call instead of several per chunk); with None
        (the exact pass, or a caller's own Dists) everything is finished at once.
    grad_scale: the factor (float or 0-dim tensor) the gradient still needs (a reduction's
        1 / count, 1 / T). A kernel may fold it into its last pass and set it to 1.0;
        otherwise the runner applies it.
    bucket: the last entry is a tail bucket (a SparseTeacher's missing mass), never in the head.
    """

    lq: torch.Tensor
    q: torch.Tensor
    lp: torch.Tensor
    p: torch.Tensor
    floored: bool = False
    work: torch.Tensor | None = None
    grad_out: torch.Tensor | None = None
    found: dict[str, torch.Tensor] = field(default_factory=dict)
    redo: torch.Tensor | None = None
    grad_scale: float | torch.Tensor = 1.0
    bucket: bool = False
    _ratio: torch.Tensor | None = field(default=None, init=False, repr=False)
    _top: tuple[torch.Tensor, torch.Tensor] | None = field(default=None, init=False, repr=False)
    _maxima: torch.Tensor | None = field(default=None, init=False, repr=False)

    @property
    def u(self) -> torch.Tensor:
        """The scaled student logits up to a per-row constant (= lq; softmax cannot tell)."""
        return self.lq

    def scratch(self) -> torch.Tensor:
        """The second scratch buffer `[R, V]`, free to overwrite."""
        if self.work is None:
            self.work = torch.empty_like(self.lq)
        return self.work

    def grad_buffer(self) -> torch.Tensor:
        """The gradient slot `[R, V]`, free to overwrite (it ends with the gradient w.r.t. u)."""
        if self.grad_out is None:
            self.grad_out = torch.empty_like(self.lq)
        self._ratio = None
        return self.grad_out

    def log_ratio(self) -> torch.Tensor:
        """log p - log q `[R, V]`, in the gradient slot (recomputed once the slot is taken)."""
        if self._ratio is None:
            self._ratio = torch.sub(self.lp, self.lq, out=self.grad_buffer())
        return self._ratio

    @property
    def top_p(self) -> torch.Tensor:
        """The teacher's largest probability per row `[R]`."""
        return self._top1()[0]

    @property
    def top_idx(self) -> torch.Tensor:
        """The token id of the teacher's largest probability per row `[R]` (int64)."""
        return self._top1()[1]

    def teacher_maxima(self) -> torch.Tensor | None:
        """The block maxima of the teacher's log-probs (`akl_core._topk`), computed once; None
        for a vocabulary too small for blocks. They serve p as well (exp is increasing)."""
        if self._maxima is None and uses_blocks(self.lp.shape[-1]):
            self._maxima = block_maxima(self.lp)
        return self._maxima

    def _top1(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._top is None:
            idx = top1_index(self.lp, self.teacher_maxima())
            self._top = (self.p.gather(-1, idx.unsqueeze(-1)).squeeze(-1), idx)
        return self._top


def rowdot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """sum(a * b, -1) for `[R, V]` tensors without an `[R, V]` temporary (a batched GEMM).

    b enters as the transpose of a `[R, 1, V]` view: on the CPU that layout takes the GEMM
    path, 3-5x faster (and more accurate) than the `[R, V, 1]` column view's GEMV path."""
    return torch.bmm(a.unsqueeze(-2), b.unsqueeze(-2).transpose(-2, -1)).view(a.shape[:-1])


def stacked(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor | None:
    """An `[R, 2, V]` view of a and b when they are equal-shaped contiguous slices of one buffer
    (as `make_dists` lays them out), else None."""
    gap = (b.data_ptr() - a.data_ptr()) // a.element_size()
    if (a.is_contiguous() and b.is_contiguous() and b.shape == a.shape and a.dim() == 2
            and gap >= a.numel() and a.device == b.device
            and a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()):
        return a.as_strided((a.shape[0], 2, a.shape[1]), (a.shape[1], gap, 1))
    return None


def rowdot_pair(
    a: torch.Tensor, b: torch.Tensor, x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(rowdot(a, x), rowdot(b, x)), in one batched GEMM (`[R, 1, V] x [R, V, 2]`, the layout
    `rowdot` explains) when `stacked(a, b)` works."""
    both = stacked(a, b)
    if both is None:
        return rowdot(a, x), rowdot(b, x)
    out = torch.bmm(x.unsqueeze(-2), both.transpose(1, 2)).view(a.shape[0], 2)
    return out[:, 0], out[:, 1]


def rowdot_two(
    a: torch.Tensor, x: torch.Tensor, b: torch.Tensor, y: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(rowdot(a, x), rowdot(b, y)), in one batched GEMM over 2R rows when a, b and x, y each
    lie back to back in one buffer (`make_dists`' q, p and lq, lp of a whole chunk)."""
    ab, xy = stacked(a, b), stacked(x, y)
    rows = a.shape[0]
    if (ab is None or xy is None or ab.stride(1) != a.numel() or xy.stride(1) != x.numel()):
        return rowdot(a, x), rowdot(b, y)
    flat = (2 * rows, a.shape[1])
    both = rowdot(ab.transpose(0, 1).reshape(flat), xy.transpose(0, 1).reshape(flat))
    return both[:rows], both[rows:]


def log_probs(scaled_logits: torch.Tensor) -> torch.Tensor:
    """Floored log-softmax over the last dimension."""
    return torch.log_softmax(scaled_logits, dim=-1).clamp_min(LOG_FLOOR)


def _log_softmax_into(
    logits: torch.Tensor, temperature: float, out: torch.Tensor, stage: torch.Tensor
) -> None:
    """out = log_softmax(logits / T); `stage` holds the cast / scaled copy when one is needed."""
    if logits.dtype != out.dtype or temperature != 1.0 or not logits.is_contiguous():
        logits = stage.copy_(logits)
        if temperature != 1.0:
            logits.div_(temperature)
    torch.log_softmax(logits, -1, out=out)


def make_dists(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float,
    dtype: torch.dtype,
    floored: bool = False,
    *,
    buffers: torch.Tensor | None = None,
) -> Dists:
    """The chunk's distributions from raw logits (`[R, V]` each), computed in `dtype`.

    `buffers`: a `[BUFFERS, R, V]` tensor of `dtype` to compute into (reused across chunks);
    allocated when None. Layout: lq, lp, q, p, so that one op floors or exponentiates both
    sides (and `stacked` pairs them for batched GEMMs). The student's and teacher's raw rows
    may already sit in the q and p slots (the runner gathers masked batches there).
    """
    rows, vocab = student_logits.shape
    if buffers is None:
        buffers = torch.empty((BUFFERS, rows, vocab), dtype=dtype, device=student_logits.device)
    lq, lp, q, p = buffers.unbind(0)
    _log_softmax_into(student_logits.detach(), temperature, lq, q)
    _log_softmax_into(teacher_logits.detach(), temperature, lp, p)
    logs = buffers[:2]
    if floored:
        logs.clamp_min_(LOG_FLOOR)
    torch.exp(logs, out=buffers[2:])
    return Dists(lq=lq, q=q, lp=lp, p=p, floored=floored)


def with_student(d: Dists, lq: torch.Tensor) -> Dists:
    """The same teacher side with the student log-probs `lq` as the variable (for autograd).

    `lq` must be log-probs (e.g. `d.lq.detach().requires_grad_(True)`): the result uses them
    exactly, with log-softmax's Jacobian, so the gradient w.r.t. `lq` is the gradient w.r.t. the
    scaled logits u (log-softmax is shift-invariant), and values equal the closed-form kernels'.
    """
    lse = torch.logsumexp(lq, -1, keepdim=True)
    lq = lq - (lse - lse.detach())
    if d.floored:
        lq = lq.clamp_min(LOG_FLOOR)
    return Dists(lq=lq, q=lq.exp(), lp=d.lp, p=d.p, floored=d.floored, bucket=d.bucket)
