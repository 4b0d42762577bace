"""The teacher/student distributions of one chunk of token positions, computed once and shared.

Conventions: p is the TEACHER distribution, q the STUDENT distribution, both over the last
dimension V. Two ways to build them:
- `make_dists` (fast): one exp per side; exact for finite logits.
- `make_dists(..., floored=True)`: log-probabilities floored at LOG_FLOOR, so a vocabulary
  entry masked with -inf gets probability exactly 0 and a finite log-probability: 0 * log 0
  terms vanish and no NaN appears, in values or in gradients. Callers use it for the rows
  whose fast value came out non-finite (see losses.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# exp(-1e4) is exactly 0 in float32 and float64, yet -1e4 keeps every difference finite.
LOG_FLOOR = -1.0e4


@dataclass(frozen=True)
class Dists:
    """Distributions for `R` positions over `V` entries (`[R, V]`, compute dtype).

    u: student logits / temperature (the variable gradients are taken w.r.t.);
    lq, q: student log-probs and probs; lp, p: teacher log-probs and probs;
    top_p, top_idx: the teacher's largest probability and its token id (`[R]`).
    bucket: the last entry is a tail bucket (a SparseTeacher's missing mass), never in the head.
    The teacher side never carries gradients.
    """

    u: torch.Tensor
    lq: torch.Tensor
    q: torch.Tensor
    lp: torch.Tensor
    p: torch.Tensor
    top_p: torch.Tensor
    top_idx: torch.Tensor
    floored: bool = False
    bucket: bool = False


def log_probs(scaled_logits: torch.Tensor) -> torch.Tensor:
    """Floored log-softmax over the last dimension."""
    return torch.log_softmax(scaled_logits, dim=-1).clamp_min(LOG_FLOOR)


def _softmax_parts(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(log-probs, probs, top prob, top index) of softmax(x) with a single exp pass."""
    top, idx = x.max(-1, keepdim=True)
    shifted = x - top
    probs = shifted.exp()
    total = probs.sum(-1, keepdim=True)
    probs.div_(total)
    logp = shifted.sub_(total.log())
    return logp, probs, total.reciprocal().squeeze(-1), idx.squeeze(-1)


def make_dists(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float,
    dtype: torch.dtype,
    floored: bool = False,
) -> Dists:
    """Build the chunk's distributions from raw logits (`[R, V]` each), upcast to `dtype`."""
    u = student_logits.to(dtype)
    t = teacher_logits.detach().to(dtype)
    if temperature != 1.0:
        u = u / temperature
        t = t / temperature
    if floored:
        lq, lp = log_probs(u), log_probs(t)
        q, p = lq.exp(), lp.exp()
        top_p, top_idx = p.max(-1)
        return Dists(u=u, lq=lq, q=q, lp=lp, p=p, top_p=top_p, top_idx=top_idx, floored=True)
    lq, q, _, _ = _softmax_parts(u)
    lp, p, top_p, top_idx = _softmax_parts(t)
    return Dists(u=u, lq=lq, q=q, lp=lp, p=p, top_p=top_p, top_idx=top_idx)


def with_student(d: Dists, u: torch.Tensor) -> Dists:
    """The same teacher side with a new student variable `u` (used to take autograd gradients).

    Uses the same arithmetic as the teacher side, so u == teacher logits gives lq == lp exactly.
    """
    if d.floored:
        lq = log_probs(u)
    else:
        shifted = u - u.detach().amax(-1, keepdim=True)
        lq = shifted - shifted.exp().sum(-1, keepdim=True).log()
    return Dists(u=u, lq=lq, q=lq.exp(), lp=d.lp, p=d.p, top_p=d.top_p, top_idx=d.top_idx,
                 floored=d.floored, bucket=d.bucket)
