"""Head/tail split of the teacher distribution, the gaps, AKL weights, per-token diagnostics.

Per token position (p = teacher probs, q = student probs, PAPER.md):
- sort p descending, cumulative mass c_i = p_(1) + ... + p_(i);
- head, boundary="reference" (the reference code; default): {i : c_i <= mu} plus the top-1
  token; the token where c first exceeds mu is in the TAIL.
  boundary="paper": the smallest prefix with mass >= mu; that token is in the HEAD.
- g_head = sum over head |p - q|, g_tail = sum over tail |p - q|; w = g_head / (g_head + g_tail),
  and w = 0.5 where both gaps are 0 (q == p). q is detached: weights carry no gradient.

The head is found from the top-1 token where it alone decides (the common case for LLM
distributions), else from a small top-k of p (both through block maxima, `akl_core._topk`);
only positions whose head is longer than k go on to a larger k and, at last, a full sort. Results are identical to a full sort. Inside the
chunk runner the positions past the first top-k are left for one exact pass at the end
(`Dists.redo`), so a chunk needs no host synchronisation on an accelerator.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import torch

from ._checks import check_logits, check_temperature, compute_dtype
from ._dists import Dists, make_dists
from ._masking import check_masks
from ._topk import topk_rows

if TYPE_CHECKING:
    from .sparse import SparseTeacher

BOUNDARIES = ("reference", "paper")
_TOPK_STAGES = (64, 2048)


# Largest head mass: float32 cumulative sums cannot place a boundary much closer to 1.
MU_MAX = 0.9999


def check_mu(mu: float) -> float:
    """Return mu as a float, or raise unless 0 < mu <= MU_MAX (0.9999)."""
    try:
        value = float(mu)
    except (TypeError, ValueError):
        raise ValueError(f"mu must be a number in (0, {MU_MAX:g}], got {mu!r}") from None
    if not 0.0 < value <= MU_MAX:
        raise ValueError(f"mu must be in (0, {MU_MAX:g}], got {mu!r}")
    return value


def check_boundary(boundary: str) -> str:
    """Return boundary, or raise unless it is one of BOUNDARIES."""
    if boundary not in BOUNDARIES:
        raise ValueError(f"boundary must be one of {BOUNDARIES}, got {boundary!r}")
    return boundary


def _head_counts(cum: torch.Tensor, mu: float, boundary: str) -> torch.Tensor:
    """Head size per row from the cumulative sorted teacher mass `cum` `[R, k]`."""
    if boundary == "reference":
        return (cum <= mu).sum(-1).clamp_min(1)
    return ((cum < mu).sum(-1) + 1).clamp_max(cum.shape[-1])


def _head_is_inside(cum_last: torch.Tensor, mu: float, boundary: str) -> torch.Tensor:
    """True where the head ends within the first k sorted tokens (cum_last = c_k)."""
    return cum_last > mu if boundary == "reference" else cum_last >= mu


@dataclass
class HeadStats:
    """Per-row head statistics (`[R]`): g_head, head_size, head_mass; mask `[R, V]` if asked."""

    g_head: torch.Tensor
    head_size: torch.Tensor
    head_mass: torch.Tensor
    mask: torch.Tensor | None = None


def head_stats(
    p: torch.Tensor,
    q: torch.Tensor,
    mu: float,
    boundary: str,
    want_mask: bool = False,
    top: tuple[torch.Tensor, torch.Tensor] | None = None,
    bucket: bool = False,
) -> HeadStats:
    """Head statistics of teacher probs `p` against student probs `q` (`[R, V]`, no grad).

    Staged: rows whose top-1 token alone decides the head (from `top` = (top prob, token id)
    `[R]` each, when given), then top-64, then top-2048 for rows whose head is longer, then a
    full sort for the rest. `bucket=True`: the last entry is a SparseTeacher's tail bucket and
    never in the head; the head is taken among the other (top-k) entries, all of them when
    their mass is below mu.
    """
    if bucket:
        stats = head_stats(p[:, :-1], q[:, :-1], mu, boundary, want_mask)
        if stats.mask is not None:
            stats.mask = torch.nn.functional.pad(stats.mask, (0, 1))
        return stats
    rows_total, vocab = p.shape
    g_head = p.new_zeros(rows_total)
    head_mass = p.new_zeros(rows_total)
    head_size = torch.ones(rows_total, dtype=torch.long, device=p.device)
    mask = torch.zeros(p.shape, dtype=torch.bool, device=p.device) if want_mask else None
    rows = torch.arange(rows_total, device=p.device)
    p_left, q_left = p, q
    if top is not None:
        top_p, top_idx = top
        done = _head_is_inside(top_p, mu, boundary) | (vocab == 1)
        g_head[done] = (top_p - q.gather(-1, top_idx.unsqueeze(-1)).squeeze(-1)).abs()[done]
        head_mass[done] = top_p[done]
        if mask is not None:
            mask[done, top_idx[done]] = True
        if bool(done.all()):
            return HeadStats(g_head=g_head, head_size=head_size, head_mass=head_mass, mask=mask)
        rest = ~done
        rows, p_left, q_left = rows[rest], p[rest], q[rest]
    stages = [k for k in _TOPK_STAGES if k < vocab] + [vocab]
    for k in stages:
        if k < vocab:
            vals, idx = torch.topk(p_left, k, dim=-1)
        else:
            vals, idx = torch.sort(p_left, dim=-1, descending=True)
        cum = vals.cumsum(-1)
        n = _head_counts(cum, mu, boundary)
        in_head = torch.arange(k, device=p.device) < n.unsqueeze(-1)
        gaps = torch.where(in_head, (vals - q_left.gather(-1, idx)).abs(), 0.0).sum(-1)
        mass = cum.gather(-1, (n - 1).unsqueeze(-1)).squeeze(-1)
        done = (
            torch.ones_like(n, dtype=torch.bool)
            if k == vocab
            else _head_is_inside(cum[:, -1], mu, boundary)
        )
        all_done = bool(done.all())
        sel = slice(None) if all_done else done
        out_rows = rows[sel]
        g_head[out_rows] = gaps[sel]
        head_mass[out_rows] = mass[sel]
        head_size[out_rows] = n[sel]
        if mask is not None:
            mask[out_rows] = mask[out_rows].scatter(-1, idx[sel], in_head[sel])
        if all_done:
            break
        rest = ~done
        rows, p_left, q_left = rows[rest], p_left[rest], q_left[rest]
    return HeadStats(g_head=g_head, head_size=head_size, head_mass=head_mass, mask=mask)


def _select_on_host(device: torch.device) -> bool:
    """Whether the fast head search selects its rows on the host (a sync; free on the CPU)."""
    return device.type == "cpu"


def _head_stats_fast(
    p: torch.Tensor, q: torch.Tensor, mu: float, boundary: str, top: tuple[torch.Tensor, ...],
    redo: torch.Tensor, maxima: torch.Tensor | None,
) -> HeadStats:
    """`head_stats` from the top-1 token and one top-k stage; rows whose head is longer are
    marked in `redo` (their results are placeholders). No host sync off the CPU: there every
    row takes the top-k; on the CPU (where a sync is free) only the rows that need it.
    `maxima`: the teacher's block maxima (`Dists.teacher_maxima`) for the top-k."""
    top_p, top_idx = top
    k = min(_TOPK_STAGES[0], p.shape[-1])
    g_head = (top_p - q.gather(-1, top_idx.unsqueeze(-1)).squeeze(-1)).abs()
    head_mass = top_p.clone()
    head_size = torch.ones_like(top_idx)
    need = ~_head_is_inside(top_p, mu, boundary)
    sel = need.nonzero().squeeze(-1) if _select_on_host(p.device) else None
    if sel is not None and sel.numel() == 0:
        return HeadStats(g_head=g_head, head_size=head_size, head_mass=head_mass)
    vals, idx = topk_rows(p, k, sel, maxima)
    q_at = q.gather(-1, idx) if sel is None else q[sel.unsqueeze(-1), idx]
    cum = vals.cumsum(-1)
    n = _head_counts(cum, mu, boundary)
    in_head = torch.arange(k, device=p.device) < n.unsqueeze(-1)
    gaps = torch.where(in_head, (vals - q_at).abs(), 0.0).sum(-1)
    mass = cum.gather(-1, (n - 1).unsqueeze(-1)).squeeze(-1)
    longer = ~_head_is_inside(cum[:, -1], mu, boundary) if k < p.shape[-1] else None
    if sel is None:
        g_head = torch.where(need, gaps, g_head)
        head_mass = torch.where(need, mass, head_mass)
        head_size = torch.where(need, n, head_size)
        if longer is not None:
            redo |= need & longer
    else:
        g_head.index_copy_(0, sel, gaps)
        head_mass.index_copy_(0, sel, mass)
        head_size.index_copy_(0, sel, n)
        if longer is not None:
            redo.index_fill_(0, sel[longer], True)
    return HeadStats(g_head=g_head, head_size=head_size, head_mass=head_mass)


@functools.lru_cache(maxsize=64)
def l1_block(vocab: int) -> int:
    """The block length that `l1_distance` splits rows of `vocab` entries into: the largest
    divisor of vocab from 256 to 2048, or vocab itself when it has none (or is shorter)."""
    for size in range(min(2048, vocab // 2), 255, -1):
        if vocab % size == 0:
            return size
    return vocab


def l1_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """sum |a - b| per row of `[R, V]` tensors, without an `[R, V]` temporary.

    Contiguous rows go as blocks of `l1_block(V)` entries (one cdist over `[R * V / n, 1, n]`,
    then a sum of the block sums): cdist sums each row in one running float32 total, which on
    real 49152-entry rows is up to 1.9e-4 off (relative), against ~7e-6 in blocks, and the
    blocks are no slower."""
    rows, vocab = a.shape
    size = l1_block(vocab)
    if size == vocab or not (a.is_contiguous() and b.is_contiguous()):
        return torch.cdist(a.unsqueeze(-2), b.unsqueeze(-2), p=1).view(rows)
    blocks = rows * (vocab // size)
    sums = torch.cdist(a.view(blocks, 1, size), b.view(blocks, 1, size), p=1)
    return sums.view(rows, vocab // size).sum(-1)


def gaps_and_weight(
    d: Dists, mu: float, boundary: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, HeadStats]:
    """g_head, g_tail and the AKL weight w on FKL (`[R]` each) for a chunk; q detached.

    Recorded in `d.found` (with head_size and head_mass; computed once per chunk and
    (mu, boundary)) for return_stats.
    """
    found = d.found
    found["head_used"] = True  # tells the runner that the caller depends on the head split
    if found.get("head_params") == (mu, boundary):
        return found["g_head"], found["g_tail"], found["w"], found["head_stats"]
    q = d.q.detach()
    if d.bucket:  # a SparseTeacher's bins: the last one is never in the head
        stats = head_stats(d.p, q, mu, boundary, bucket=True)
    elif d.redo is not None:
        stats = _head_stats_fast(d.p, q, mu, boundary, (d.top_p, d.top_idx), d.redo,
                                 d.teacher_maxima())
    else:
        stats = head_stats(d.p, q, mu, boundary, top=(d.top_p, d.top_idx))
    total = l1_distance(q, d.p)
    g_tail = (total - stats.g_head).clamp_min(0.0)
    w = torch.where(total > 0, stats.g_head / total.clamp_min(torch.finfo(total.dtype).tiny), 0.5)
    found.update(g_head=stats.g_head, g_tail=g_tail, w=w, head_size=stats.head_size,
                 head_mass=stats.head_mass, head_stats=stats, head_params=(mu, boundary))
    return stats.g_head, g_tail, w, stats


@dataclass
class HeadTail:
    """Per-token head/tail diagnostics; every field has the logits' shape without V. Detached.

    g_head, g_tail: the |p - q| mass on the teacher's head / tail; w: AKL weight on FKL
    (1 - w goes to RKL); head_size: tokens in the head (int64); head_mass: teacher mass of the
    head; teacher_entropy, student_entropy: H(p), H(q) in nats.
    """

    g_head: torch.Tensor
    g_tail: torch.Tensor
    w: torch.Tensor
    head_size: torch.Tensor
    head_mass: torch.Tensor
    teacher_entropy: torch.Tensor
    student_entropy: torch.Tensor

    def to_dict(self) -> dict[str, torch.Tensor]:
        """The fields as a dict of tensors."""
        return asdict(self)


@torch.no_grad()
def head_tail(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor | SparseTeacher,
    *,
    mu: float = 0.5,
    boundary: str = "reference",
    temperature: float = 1.0,
    vocab_size: int | None = None,
    chunk_size: int | None = None,
) -> HeadTail:
    """Per-token head/tail diagnostics for `[..., V]` student and teacher logits.

    p = softmax(teacher / T), q = softmax(student / T). Returns a HeadTail whose tensors have
    shape `[...]` (float32, or float64 for float64 inputs). No gradients flow. `chunk_size`:
    positions per chunk (None: automatic, see `akl_core.losses`). With an
    `akl_core.SparseTeacher`, the diagnostics are those of the bins the losses see.
    """
    from .losses import check_chunk_size, run_chunks  # late: losses builds on this module
    from .sparse import SparseTeacher, sparse_head_tail  # late: sparse builds on this module

    mu, boundary = check_mu(mu), check_boundary(boundary)
    temperature = check_temperature(temperature)
    chunk_size = check_chunk_size(chunk_size)
    if isinstance(teacher_logits, SparseTeacher):
        return sparse_head_tail(student_logits, teacher_logits, mu=mu, boundary=boundary,
                                temperature=temperature, vocab_size=vocab_size)
    student_logits, teacher_logits = check_logits(student_logits, teacher_logits, vocab_size)
    shape = student_logits.shape[:-1]
    vocab = student_logits.shape[-1]
    s2, t2 = student_logits.reshape(-1, vocab), teacher_logits.reshape(-1, vocab)
    check_masks((), s2, t2, None, shape)
    _, _, stats = run_chunks(
        s2, t2, None, {}, temperature=temperature, chunk_size=chunk_size, stats=(mu, boundary),
        floored=True,
    )
    assert stats is not None
    for name in ("teacher_entropy", "student_entropy"):  # NaN in p or q reaches the entropy
        if bool(stats[name].isnan().any()):
            raise ValueError(
                "head_tail produced NaN: the logits contain NaN or +inf values, or a position "
                "whose logits are all -inf"
            )
    return HeadTail(**{name: stats[name].reshape(shape) for name in HeadTail.__dataclass_fields__})


@torch.no_grad()
def head_mask(
    teacher_logits: torch.Tensor,
    *,
    mu: float = 0.5,
    boundary: str = "reference",
    temperature: float = 1.0,
) -> torch.Tensor:
    """Boolean `[..., V]` mask, True on the teacher's head tokens (p = softmax(teacher / T))."""
    mu, boundary = check_mu(mu), check_boundary(boundary)
    temperature = check_temperature(temperature)
    _, teacher_logits = check_logits(teacher_logits, teacher_logits)
    t2 = teacher_logits.reshape(-1, teacher_logits.shape[-1])
    dtype = compute_dtype(teacher_logits.dtype)
    d = make_dists(t2, t2, temperature, dtype, floored=True)
    stats = head_stats(d.p, d.p, mu, boundary, want_mask=True, top=(d.top_p, d.top_idx))
    assert stats.mask is not None
    return stats.mask.reshape(teacher_logits.shape)
