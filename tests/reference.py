"""Plain, obviously-correct float64 references for every divergence and the AKL weights.

Written independently of akl_core: full sorts, probabilities (not log-space tricks), explicit
0 * log 0 = 0. p = teacher probs, q = student probs. Each function maps `[R, V]` float64
probabilities (or logits, where stated) to `[R]` values. Differentiable by autograd in q.
"""

from __future__ import annotations

import torch


def probs(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """softmax(logits / T) in float64; -inf entries get probability 0."""
    return torch.softmax(logits.double() / temperature, dim=-1)


def kl(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """KL(a || b) = sum_{a > 0} a log(a / b)."""
    safe_a = torch.where(a > 0, a, torch.ones_like(a))
    safe_b = torch.where(a > 0, b, torch.ones_like(b))
    return torch.where(a > 0, a * (safe_a.log() - safe_b.log()), torch.zeros_like(a)).sum(-1)


def fkl(p, q):
    return kl(p, q)


def rkl(p, q):
    return kl(q, p)


def fkl_rkl(p, q, lam=0.5):
    return (1 - lam) * kl(p, q) + lam * kl(q, p)


def head_members(p: torch.Tensor, mu: float, boundary: str) -> torch.Tensor:
    """Bool `[R, V]`: the teacher's head by a full sort, one position at a time."""
    out = torch.zeros_like(p, dtype=torch.bool)
    for r in range(p.shape[0]):
        row = p[r].tolist()
        order = sorted(range(len(row)), key=lambda i: -row[i])
        cum = 0.0
        for rank, i in enumerate(order):
            before = cum
            cum += row[i]
            if rank == 0:
                out[r, i] = True
            elif boundary == "reference" and cum <= mu:
                out[r, i] = True
            elif boundary == "paper" and before < mu:
                out[r, i] = True
            else:
                break
    return out


def akl_parts(p, q, mu=0.5, boundary="reference"):
    """(g_head, g_tail, w) with q detached; w = 0.5 where both gaps are 0."""
    head = head_members(p, mu, boundary)
    gaps = (p - q.detach()).abs()
    g_head = (gaps * head).sum(-1)
    g_tail = (gaps * ~head).sum(-1)
    total = g_head + g_tail
    w = torch.where(total > 0, g_head / torch.where(total > 0, total, 1.0), 0.5)
    return g_head, g_tail, w


def akl(p, q, mu=0.5, boundary="reference"):
    _, _, w = akl_parts(p, q, mu, boundary)
    return w * kl(p, q) + (1 - w) * kl(q, p)


def akl_r(p, q, mu=0.5, boundary="reference"):
    _, _, w = akl_parts(p, q, mu, boundary)
    return (1 - w) * kl(p, q) + w * kl(q, p)


def jsd(p, q, beta=0.5, normalized=False):
    if beta == 0:
        return kl(p, q)
    if beta == 1:
        return kl(q, p)
    m = beta * p + (1 - beta) * q
    value = beta * kl(p, m) + (1 - beta) * kl(q, m)
    return value / (beta * (1 - beta)) if normalized else value


def tvd(p, q):
    return 0.5 * (p - q).abs().sum(-1)


def skl(p, q, alpha=0.1):
    return kl(p, alpha * p + (1 - alpha) * q)


def srkl(p, q, alpha=0.1):
    return kl(q, alpha * q + (1 - alpha) * p)


def ab(p, q, alpha=0.5, beta=0.5):
    """Alpha-beta divergence by its textbook formulas (entries with p = q = 0 skipped)."""
    live = (p > 0) | (q > 0)
    one = torch.ones_like(p)
    ps, qs = torch.where(live, p, one), torch.where(live, q, one)
    if alpha == 0 and beta == 0:
        terms = 0.5 * (ps.log() - qs.log()) ** 2
    elif beta == 0:
        a = alpha
        terms = (ps**a * (a * ps.log() - a * qs.log()) - ps**a + qs**a) / a**2
    elif alpha == 0:
        b = beta
        terms = (qs**b * (b * qs.log() - b * ps.log()) - qs**b + ps**b) / b**2
    else:
        s = alpha + beta
        terms = -(ps**alpha * qs**beta - alpha / s * ps**s - beta / s * qs**s) / (alpha * beta)
    return torch.where(live, terms, torch.zeros_like(terms)).sum(-1)


def taid(student_logits, teacher_logits, t=0.4, temperature=1.0):
    """KL(p_t || q), p_t = softmax((1 - t) * stopgrad(z_S) / T + t * z_T / T). Takes LOGITS."""
    zs = student_logits.double() / temperature
    zt = teacher_logits.double() / temperature
    mixed = (1 - t) * zs.detach() + t * zt if 0 < t < 1 else (zs.detach() if t == 0 else zt)
    return kl(torch.softmax(mixed, -1), torch.softmax(zs, -1))


BY_NAME = {
    "fkl": fkl, "rkl": rkl, "fkl_rkl": fkl_rkl, "akl": akl, "akl_r": akl_r, "jsd": jsd,
    "tvd": tvd, "skl": skl, "srkl": srkl, "ab": ab,
}


def reference_value(name, student_logits, teacher_logits, temperature=1.0, **params):
    """Reference per-position values `[...]` for raw logits `[..., V]` (float64)."""
    shape = student_logits.shape[:-1]
    zs = student_logits.reshape(-1, student_logits.shape[-1]).double()
    zt = teacher_logits.reshape(-1, teacher_logits.shape[-1]).double()
    if name == "taid":
        out = taid(zs, zt, temperature=temperature, **params)
    else:
        out = BY_NAME[name](probs(zt, temperature), probs(zs, temperature), **params)
    return out.reshape(shape)


# --- ToDi (Jung et al., EMNLP 2025) ----------------------------------------------------------


def _log_ratio_terms(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per entry a * log(a / b): 0 where a = 0, +inf where a > 0 = b."""
    safe_a = torch.where(a > 0, a, torch.ones_like(a))
    return torch.where(a > 0, safe_a * (safe_a.log() - b.log()), torch.zeros_like(a))


def todi(p, q, beta=1.0):
    """sum_i a_i p_i log(p_i/q_i) + (1 - a_i) q_i log(q_i/p_i), a_i = sigmoid(beta log(p_i/q_i))
    with a detached; entries with p = q = 0 skipped, one-sided zeros give +inf."""
    live = (p > 0) | (q > 0)
    one = torch.ones_like(p)
    ratio = torch.where(live, p, one).log() - torch.where(live, q, one).log()
    # beta = 0: a = 1/2 everywhere (0 * log(0) would make it NaN at one-sided zeros)
    a = torch.sigmoid(beta * ratio).detach() if beta != 0 else torch.full_like(ratio, 0.5)
    forward = _log_ratio_terms(p, q)
    reverse = _log_ratio_terms(q, p)
    terms = torch.where(a > 0, a * forward, torch.zeros_like(a)) + torch.where(
        a < 1, (1 - a) * reverse, torch.zeros_like(a)
    )
    return torch.where(live, terms, torch.zeros_like(terms)).sum(-1)


BY_NAME["todi"] = todi


# --- top-k (sparse) teachers -------------------------------------------------------------------


def sparse_bins(student_logits, indices, logprobs, tail, temperature=1.0):
    """(p_bins, q_bins) `[R, k (+1)]` float64 probabilities for a top-k teacher, naively.

    q = softmax(student / T) over the full vocabulary. "bucket": the teacher's top-k plus its
    missing mass 1 - sum(top-k) (0 when k = V), tempered as k + 1 tokens (p^(1/T), normalised),
    against q at the same tokens plus q's sum over every other token. "renormalize": both
    renormalised over the k tokens (teacher: softmax(logprobs / T)).
    """
    zs = student_logits.reshape(-1, student_logits.shape[-1])
    k = indices.shape[-1]
    idx = indices.reshape(-1, k)
    lp = logprobs.reshape(-1, k).double()
    q = probs(zs, temperature)
    q_top = q.gather(-1, idx)
    if tail == "renormalize":
        return torch.softmax(lp / temperature, -1), q_top / q_top.sum(-1, keepdim=True)
    outside = torch.ones_like(q, dtype=torch.bool).scatter(-1, idx, False)
    q_rest = (q * outside).sum(-1, keepdim=True)
    p_top = lp.exp()
    if k == zs.shape[-1]:
        missing = torch.zeros_like(p_top[:, :1])
    else:
        missing = (1 - p_top.sum(-1, keepdim=True)).clamp_min(0)
    p = torch.cat([p_top, missing], -1) ** (1.0 / temperature)
    return p / p.sum(-1, keepdim=True), torch.cat([q_top, q_rest], -1)


def akl_parts_bucket(p, q, mu=0.5, boundary="reference"):
    """AKL's (g_head, g_tail, w) on k + 1 bins whose last bin (the bucket) is never in the head."""
    head = torch.cat([head_members(p[:, :-1], mu, boundary),
                      torch.zeros_like(p[:, :1], dtype=torch.bool)], -1)
    gaps = (p - q.detach()).abs()
    g_head = (gaps * head).sum(-1)
    g_tail = (gaps * ~head).sum(-1)
    total = g_head + g_tail
    w = torch.where(total > 0, g_head / torch.where(total > 0, total, 1.0), 0.5)
    return g_head, g_tail, w


def sparse_reference_value(name, student_logits, indices, logprobs, tail, temperature=1.0,
                           **params):
    """Reference per-position values `[...]` of `name` against a top-k teacher (float64)."""
    shape = student_logits.shape[:-1]
    p, q = sparse_bins(student_logits, indices, logprobs, tail, temperature)
    if name == "taid":
        out = taid(q.log(), p.log(), **params)
    elif name in ("akl", "akl_r") and tail == "bucket":
        _, _, w = akl_parts_bucket(p, q, params.get("mu", 0.5), params.get("boundary", "reference"))
        a = w if name == "akl" else 1 - w
        out = a * kl(p, q) + (1 - a) * kl(q, p)
    else:
        out = BY_NAME[name](p, q, **params)
    return out.reshape(shape)
