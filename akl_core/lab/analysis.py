"""Analyses behind the notebooks' claims: tail regions by teacher rank, closeness in L1 and in
log space, the gradient each loss puts on each vocabulary entry, the w <= 0.5 bound, the two
head/tail boundary rules, and mu / temperature sweeps.

Conventions: p = teacher (softmax of `teacher_logits`), q = student; logits are `[N, V]` (one
row per position) or `[V]`. Ranks are teacher ranks, 0 = the teacher's most probable token.
Every number comes from akl_core (head_mask, head_tail, distillation_loss); nothing here is a
loss of its own. Work is done in row chunks so [N, 49152] inputs stay within a few hundred MB.

The w <= 0.5 bound (AKL's weight on FKL). Over the whole vocabulary sum_i (q_i - p_i) = 0, so
sum_H (p - q) = sum_T (q - p) for head H and tail T. Hence always
    |sum_H (p - q)| = |sum_T (q - p)| <= g_tail,
and when the head errors all have one sign (the student under-predicts every head token, or
over-predicts every one; always so when |H| = 1), g_head = |sum_H (p - q)| <= g_tail, i.e.
w = g_head / (g_head + g_tail) <= 0.5. w > 0.5 therefore needs |H| >= 2 with head errors of
both signs: the student gives one head token too much and another too little.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

import akl_core

__all__ = [
    "W_TOL",
    "teacher_ranks",
    "rank_regions",
    "closeness",
    "loss_gradients",
    "gradient_by_rank",
    "gradient_sign_stats",
    "w_bound_stats",
    "boundary_comparison",
    "mu_sweep",
    "temperature_sweep",
    "head_first_over_steps",
    "fit_positions_by_seed",
]

#: The analyses compute w in float64 (row chunks); w within W_TOL of 0.5 is rounding, not
#: "w > 0.5" (float32 would need about 1e-4: g_tail is a difference of sums over 49k entries).
W_TOL = 1e-9
_CHUNK_ROWS = 64


def _rows(logits: Any, label: str) -> torch.Tensor:
    """Logits as a float32 [N, V] tensor (a [V] row becomes [1, V])."""
    if not isinstance(logits, torch.Tensor):
        try:
            logits = torch.as_tensor(np.asarray(logits, dtype=np.float32))
        except (TypeError, ValueError):
            raise ValueError(f"{label} must be an array of numbers") from None
    t = logits.detach()
    if t.dim() == 1:
        t = t[None]
    if t.dim() != 2 or t.shape[0] == 0 or t.shape[1] < 2:
        raise ValueError(f"{label} must have shape [V] or [N, V] with V >= 2, got "
                         f"{tuple(logits.shape)}")
    if torch.isnan(t).any():
        raise ValueError(f"{label} contains NaN")
    return t.float()


def _pair(student_logits: Any, teacher_logits: Any) -> tuple[torch.Tensor, torch.Tensor]:
    s, t = _rows(student_logits, "student_logits"), _rows(teacher_logits, "teacher_logits")
    if s.shape != t.shape:
        raise ValueError(f"student and teacher logits differ in shape: {tuple(s.shape)} vs "
                         f"{tuple(t.shape)}")
    return s, t


def _chunks(n: int) -> Iterable[slice]:
    for start in range(0, n, _CHUNK_ROWS):
        yield slice(start, min(n, start + _CHUNK_ROWS))


@torch.no_grad()
def _head_tail64(s: torch.Tensor, t: torch.Tensor, **kw: Any) -> dict[str, torch.Tensor]:
    """akl_core.head_tail in float64, row chunk by row chunk: {field: [N]}."""
    parts: dict[str, list[torch.Tensor]] = {}
    for sl in _chunks(s.shape[0]):
        ht = akl_core.head_tail(s[sl].double(), t[sl].double(), **kw).to_dict()
        for k, v in ht.items():
            parts.setdefault(k, []).append(v)
    return {k: torch.cat(v) for k, v in parts.items()}


@torch.no_grad()
def teacher_ranks(teacher_logits: Any) -> torch.Tensor:
    """Rank [N, V] (int64) of every vocabulary entry under the teacher; 0 = most probable."""
    t = _rows(teacher_logits, "teacher_logits")
    ranks = torch.empty(t.shape, dtype=torch.long)
    for sl in _chunks(t.shape[0]):
        order = torch.argsort(t[sl], dim=-1, descending=True)
        ar = torch.arange(t.shape[1]).expand_as(order)
        ranks[sl] = torch.empty_like(order).scatter_(-1, order, ar)
    return ranks


@torch.no_grad()
def rank_regions(
    teacher_logits: Any,
    *,
    far_rank: int = 100,
    mu: float = 0.5,
    boundary: str = "reference",
) -> dict[str, torch.Tensor]:
    """Split each row's vocabulary into 'head', 'near' and 'far' (bool masks [N, V]).

    head: AKL's head (akl_core.head_mask with mu, boundary); near: tail entries with teacher
    rank < far_rank; far: entries with teacher rank >= far_rank that are not head. The three
    partition the vocabulary.
    """
    if isinstance(far_rank, bool) or not isinstance(far_rank, int) or far_rank < 1:
        raise ValueError(f"far_rank must be a positive integer, got {far_rank!r}")
    t = _rows(teacher_logits, "teacher_logits")
    if far_rank >= t.shape[1]:
        raise ValueError(f"far_rank {far_rank} leaves no far tail in a vocabulary of "
                         f"{t.shape[1]}")
    head = akl_core.head_mask(t, mu=mu, boundary=boundary)
    far = (teacher_ranks(t) >= far_rank) & ~head
    return {"head": head, "near": ~head & ~far, "far": far}


@torch.no_grad()
def closeness(
    student_logits: Any, teacher_logits: Any, regions: Mapping[str, Any]
) -> dict[str, np.ndarray]:
    """Per row [N] and region: 'l1_<r>' = sum over r of |p - q| and 'logabs_<r>' = mean over r
    of |log q - log p| (log space: how far the student is in a thin tail that L1 cannot see)."""
    s, t = _pair(student_logits, teacher_logits)
    out: dict[str, list[torch.Tensor]] = {}
    for name, mask in regions.items():
        m = torch.as_tensor(mask)
        if m.shape != s.shape or m.dtype != torch.bool:
            raise ValueError(f"region {name!r} must be a bool mask of shape {tuple(s.shape)}")
        out[f"l1_{name}"], out[f"logabs_{name}"] = [], []
    for sl in _chunks(s.shape[0]):
        lq, lp = torch.log_softmax(s[sl], -1), torch.log_softmax(t[sl], -1)
        diff, ldiff = (lq.exp() - lp.exp()).abs(), (lq - lp).abs()
        for name, mask in regions.items():
            m = torch.as_tensor(mask)[sl].float()
            out[f"l1_{name}"].append((diff * m).sum(-1))
            out[f"logabs_{name}"].append((ldiff * m).sum(-1) / m.sum(-1).clamp_min(1.0))
    return {k: torch.cat(v).numpy() for k, v in out.items()}


def loss_gradients(
    student_logits: Any,
    teacher_logits: Any,
    losses: Sequence[str],
    params: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, torch.Tensor]:
    """d loss / d z for each loss, per row: {loss: [N, V]} (float64 inputs give float64).

    The loss of a row is akl_core.distillation_loss(z, teacher, loss, reduction='none') for that
    row (AKL's w detached, as in training). Gradient descent moves z_j by -lr * grad_j: a
    negative entry pushes token j UP. FKL's gradient is exactly q - p.
    """
    s, t = _pair(student_logits, teacher_logits)
    if isinstance(student_logits, torch.Tensor) and student_logits.dtype == torch.float64:
        s, t = s.double(), t.double()
    params = params or {}
    out: dict[str, torch.Tensor] = {}
    for name in losses:
        if name not in akl_core.LOSSES:
            raise ValueError(f"unknown loss {name!r}; choose one of {sorted(akl_core.LOSSES)}")
        grads = []
        for sl in _chunks(s.shape[0]):
            z = s[sl].clone().requires_grad_(True)
            value = akl_core.distillation_loss(z, t[sl], loss=name, reduction="none",
                                               **dict(params.get(name, {})))
            (grad,) = torch.autograd.grad(value.sum(), z)
            grads.append(grad.detach())
        out[name] = torch.cat(grads)
    return out


def gradient_by_rank(
    student_logits: Any,
    teacher_logits: Any,
    losses: Sequence[str] = ("fkl", "rkl", "akl"),
    params: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, np.ndarray]:
    """One row's p, q and per-loss gradients, ordered by teacher rank (numpy arrays [V]).

    Keys: 'rank' (1 = teacher's top token), 'p', 'q', and one per loss (its gradient).
    """
    s, t = _pair(student_logits, teacher_logits)
    if s.shape[0] != 1:
        raise ValueError(f"gradient_by_rank takes one row, got {s.shape[0]}")
    grads = loss_gradients(s, t, losses, params)
    order = torch.argsort(t[0], descending=True)
    out = {"rank": np.arange(1, t.shape[1] + 1),
           "p": torch.softmax(t[0], -1)[order].numpy(),
           "q": torch.softmax(s[0], -1)[order].numpy()}
    for name, g in grads.items():
        out[name] = g[0][order].numpy()
    return out


def gradient_sign_stats(
    student_logits: Any, teacher_logits: Any, losses: Sequence[str] = ("fkl", "rkl"),
) -> dict[str, dict[str, float]]:
    """Which tokens each loss pushes the wrong way: {loss: stats} pooled over rows.

    'over_pushed_up': share of over-predicted entries (q > p) whose logit the loss pushes UP
    (gradient < 0); 'over_pushed_up_mass': the excess mass sum(q - p) on those entries, as a
    share of the whole excess; 'under_pushed_down': share of under-predicted entries (q < p)
    pushed DOWN. FKL's gradient is q - p, so both shares are 0 for FKL (up to float64
    rounding on entries where q and p agree to ~1e-16); RKL's gradient q (log(q/p) - KL(q||p))
    has the opposite sign wherever 0 < log(q/p) < KL(q||p).
    """
    s, t = _pair(student_logits, teacher_logits)
    # per loss: over-predicted entries, of them pushed up, their excess mass, of it pushed up,
    # under-predicted entries, of them pushed down. In float64: in float32 the sign of a tiny
    # q - p and of FKL's gradient q - p can disagree by rounding.
    acc = {name: np.zeros(6) for name in losses}
    for sl in _chunks(s.shape[0]):
        s64, t64 = s[sl].double(), t[sl].double()
        grads = loss_gradients(s64, t64, losses)
        q, p = torch.softmax(s64, -1), torch.softmax(t64, -1)
        over, under = q > p, q < p
        excess = (q - p).clamp_min(0.0)
        for name, g in grads.items():
            up, down = g < 0, g > 0
            acc[name] += np.array([
                float(over.sum()), float((over & up).sum()),
                float(excess.sum()), float((excess * (over & up)).sum()),
                float(under.sum()), float((under & down).sum()),
            ])
    return {
        name: {
            "over_pushed_up": n_up / max(n_over, 1.0),
            "over_pushed_up_mass": m_up / max(m_over, 1e-30),
            "under_pushed_down": n_down / max(n_under, 1.0),
        }
        for name, (n_over, n_up, m_over, m_up, n_under, n_down) in acc.items()
    }


@torch.no_grad()
def _head_error_signs(s: torch.Tensor, t: torch.Tensor, mu: float, boundary: str,
                      temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row: (every head token under-predicted (q <= p), head errors of both signs)."""
    under, mixed = [], []
    for sl in _chunks(s.shape[0]):
        s64, t64 = s[sl].double(), t[sl].double()
        head = akl_core.head_mask(t64, mu=mu, boundary=boundary, temperature=temperature)
        d = torch.softmax(t64 / temperature, -1) - torch.softmax(s64 / temperature, -1)
        pos = ((d > 0) & head).any(-1)
        neg = ((d < 0) & head).any(-1)
        under.append(~neg)
        mixed.append(pos & neg)
    return torch.cat(under), torch.cat(mixed)


def w_bound_stats(
    student_logits: Any,
    teacher_logits: Any,
    *,
    mu: float = 0.5,
    boundary: str = "reference",
    temperature: float = 1.0,
) -> dict[str, float]:
    """The w <= 0.5 bound on real rows (see the module docstring), pooled over rows.

    Returns shares of positions: 'head_size_1', 'all_head_under' (student under-predicts every
    head token), 'mixed_head' (head errors of both signs), 'w_above_half' (w > 0.5 + W_TOL);
    'max_w_one_sign' (largest w where the head errors have one sign: <= 0.5 up to rounding),
    'w_above_half_given_mixed'; 'mean_w', 'max_w', 'n'.
    """
    s, t = _pair(student_logits, teacher_logits)
    ht = _head_tail64(s, t, mu=mu, boundary=boundary, temperature=temperature)
    w = ht["w"]
    under, mixed = _head_error_signs(s, t, mu, boundary, temperature)
    one_sign = ~mixed
    above = w > 0.5 + W_TOL
    n = float(w.numel())
    return {
        "n": n,
        "head_size_1": float((ht["head_size"] == 1).float().mean()),
        "all_head_under": float(under.float().mean()),
        "mixed_head": float(mixed.float().mean()),
        "w_above_half": float(above.float().mean()),
        "w_above_half_given_mixed": float(above[mixed].float().mean()) if mixed.any() else 0.0,
        "max_w_one_sign": float(w[one_sign].max()) if one_sign.any() else float("nan"),
        "mean_w": float(w.mean()),
        "max_w": float(w.max()),
    }


def boundary_comparison(
    student_logits: Any, teacher_logits: Any, *, mu: float = 0.5
) -> dict[str, float]:
    """The two head/tail boundary rules side by side on the same rows.

    'differ': share of positions whose heads differ (the paper's rule adds the token where the
    cumulative mass crosses mu whenever the reference rule leaves it out); mean head sizes and
    mean w under each rule, and the share of positions with w > 0.5 + W_TOL under each.
    """
    s, t = _pair(student_logits, teacher_logits)
    out: dict[str, float] = {}
    sizes = {}
    for rule in akl_core.BOUNDARIES:
        ht = _head_tail64(s, t, mu=mu, boundary=rule)
        sizes[rule] = ht["head_size"]
        out[f"head_size_{rule}"] = float(ht["head_size"].double().mean())
        out[f"mean_w_{rule}"] = float(ht["w"].mean())
        out[f"w_above_half_{rule}"] = float((ht["w"] > 0.5 + W_TOL).double().mean())
    out["differ"] = float((sizes["reference"] != sizes["paper"]).float().mean())
    return out


def mu_sweep(
    student_logits: Any,
    teacher_logits: Any,
    mus: Sequence[float] = (0.1, 0.3, 0.5, 0.7, 0.9),
    *,
    boundary: str = "reference",
) -> list[dict[str, float]]:
    """Head size and AKL weight for each mu: rows {mu, head_size_mean, head_size_median,
    mean_w, w_above_half, mixed_head}."""
    s, t = _pair(student_logits, teacher_logits)
    rows = []
    for mu in mus:
        ht = _head_tail64(s, t, mu=mu, boundary=boundary)
        _, mixed = _head_error_signs(s, t, mu, boundary)
        rows.append({
            "mu": float(mu),
            "head_size_mean": float(ht["head_size"].double().mean()),
            "head_size_median": float(ht["head_size"].double().median()),
            "mean_w": float(ht["w"].mean()),
            "w_above_half": float((ht["w"] > 0.5 + W_TOL).double().mean()),
            "mixed_head": float(mixed.float().mean()),
        })
    return rows


def temperature_sweep(
    student_logits: Any,
    teacher_logits: Any,
    temperatures: Sequence[float] = (0.5, 1.0, 2.0, 4.0),
    *,
    mu: float = 0.5,
    boundary: str = "reference",
) -> list[dict[str, float]]:
    """Head size and AKL weight with both logits divided by each temperature T: rows
    {temperature, head_size_mean, head_size_median, mean_w, w_above_half, teacher_entropy}."""
    s, t = _pair(student_logits, teacher_logits)
    rows = []
    for temp in temperatures:
        ht = _head_tail64(s, t, mu=mu, boundary=boundary, temperature=temp)
        rows.append({
            "temperature": float(temp),
            "head_size_mean": float(ht["head_size"].double().mean()),
            "head_size_median": float(ht["head_size"].double().median()),
            "mean_w": float(ht["w"].mean()),
            "w_above_half": float((ht["w"] > 0.5 + W_TOL).double().mean()),
            "teacher_entropy": float(ht["teacher_entropy"].mean()),
        })
    return rows


def head_first_over_steps(
    first: Any, second: Any, key: str = "g_head"
) -> dict[str, Any]:
    """Compare a recorded quantity of two runs step by step (e.g. FKL's and RKL's g_head).

    first / second: TrainResult or history mappings recorded at the same steps. Returns
    {'steps', 'difference' (first - second) [R], 'first_below' (steps where first < second),
    'flip_step' (the first step > 0 after which first is no longer below second; None if it
    stays below)}.
    """
    h1, h2 = getattr(first, "history", first), getattr(second, "history", second)
    steps = np.asarray(h1["step"])
    if not np.array_equal(steps, np.asarray(h2["step"])):
        raise ValueError("the two runs were recorded at different steps")
    diff = np.asarray(h1[key], dtype=np.float64) - np.asarray(h2[key], dtype=np.float64)
    below = diff < 0
    flip = None
    seen_below = False
    for st, b in zip(steps, below):
        if st == 0:
            continue
        if b:
            seen_below = True
        elif seen_below:
            flip = int(st)
            break
    return {"steps": steps, "difference": diff,
            "first_below": [int(st) for st, b in zip(steps, below) if b and st > 0],
            "flip_step": flip}


def fit_positions_by_seed(
    teacher_logits: Any,
    losses: Sequence[str],
    *,
    seeds: Sequence[int],
    positions: int,
    steps: int,
    lr: float,
    start: str = "uniform",
    student_logits: Any = None,
    far_rank: int = 100,
    mu: float = 0.5,
    record_every: int = 5,
    keep_final: bool = False,
) -> list[dict[str, Any]]:
    """Level-2 fits repeated over seeds: per seed, `positions` rows drawn (torch.randperm with
    that seed) from the pool `teacher_logits` [P, V], fitted with each loss by
    toy.train_free_logits, recording the head gap and the near / far tail regions (rank_regions).

    start: "uniform" = U(0, 1) logits drawn with the seed; "student" = `student_logits` [P, V]
    at the same rows (a real student's own predictions). Returns one {loss: TrainResult} per
    seed, plus the key "rows" (the picked row indices). final_q is dropped (set to an empty
    array) unless keep_final, to keep memory small.
    """
    from akl_core.lab import toy

    t = _rows(teacher_logits, "teacher_logits")
    if start not in ("uniform", "student"):
        raise ValueError(f"start must be 'uniform' or 'student', got {start!r}")
    s = None
    if start == "student":
        if student_logits is None:
            raise ValueError("start='student' needs student_logits")
        s, t = _pair(student_logits, t)
    if isinstance(positions, bool) or not isinstance(positions, int) or positions < 1:
        raise ValueError(f"positions must be a positive integer, got {positions!r}")
    out = []
    for seed in seeds:
        pick = torch.randperm(t.shape[0], generator=torch.Generator().manual_seed(int(seed)))
        pick = pick[: min(positions, t.shape[0])]
        target = t[pick]
        regions = rank_regions(target, far_rank=far_rank, mu=mu)
        regions.pop("head")
        runs: dict[str, Any] = {"rows": pick.tolist()}
        for name in losses:
            res = toy.train_free_logits(
                target, name, steps=steps, lr=lr, seed=int(seed), mu=mu, target_type="logits",
                record=("fkl", "rkl"), record_every=record_every, regions=regions,
                init_logits=None if s is None else s[pick],
            )
            if not keep_final:
                res.final_q = np.empty((0,), dtype=np.float32)
            runs[name] = res
        out.append(runs)
    return out
