"""The divergence catalogue (shared/DIVERGENCES.md) as per-chunk kernels, and its registry.

Every kernel takes the distributions of a chunk of positions (`Dists`: p = teacher,
q = student, `[R, V]`) and returns `(value [R], grad [R, V] or None)`: the per-position value
summed over V, and, when asked, its gradient w.r.t. the scaled student logits u = z_S / T.
That is the one extension point: add a kernel and a LossSpec to LOSSES. Every kernel is
tested against the plain float64 formulas of tests/reference.py.

Gradients are closed forms: with h = q * dL/dq (per entry), dL/du = h - q * sum(h). A kernel
builds its gradient in a few in-place passes in the gradient slot `d.grad_buffer()` (the
runner hands it the final gradient's memory when it can; without a gradient it is scratch),
reusing `d.log_ratio()` (kept in that slot) and, if its LossSpec says `buffers=5`, the
scratch buffer `d.scratch()`, instead of fresh `[R, V]` temporaries. A kernel may fold the
pending factor `d.grad_scale` into its last pass. It records per-row values it computed on
the way in `d.found` (fkl, rkl, the AKL head split), which `return_stats` reuses and which
are computed once per chunk (`kl_pair`, `gaps_and_weight`). `autograd_kernel` turns a plain
differentiable formula into a kernel instead (slower, more memory: for trying a new loss).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from ._dists import LOG_FLOOR, Dists, make_dists, rowdot, rowdot_pair, with_student
from .headtail import BOUNDARIES, MU_MAX, gaps_and_weight, l1_distance

KernelResult = tuple[torch.Tensor, "torch.Tensor | None"]
Kernel = Callable[..., KernelResult]


# --- building blocks -------------------------------------------------------------------------


def _col(x: torch.Tensor | float) -> torch.Tensor | float:
    """A per-row `[R]` tensor as a column `[R, 1]` (floats pass through)."""
    return x.unsqueeze(-1) if isinstance(x, torch.Tensor) else x


def _softmax_grad(d: Dists, h: torch.Tensor) -> torch.Tensor:
    """dL/du = h - q * sum(h), in place in `h` (h = q * dL/dq)."""
    return h.addcmul_(d.q, _col(h.sum(-1)), value=-1)


def _take_scale(d: Dists) -> float | torch.Tensor:
    """The gradient's pending factor, for a kernel that folds it into its own last pass."""
    scale, d.grad_scale = d.grad_scale, 1.0
    return scale


def kl_pair(d: Dists) -> tuple[torch.Tensor, torch.Tensor]:
    """(KL(p||q), KL(q||p)) per row `[R]`, from one batched GEMM against `d.log_ratio()`;
    computed once per chunk (kept in `d.found`)."""
    if "fkl" not in d.found or "rkl" not in d.found:
        rkl_value, fkl_value = rowdot_pair(d.q, d.p, d.log_ratio())
        d.found.update(fkl=fkl_value, rkl=rkl_value.neg_())
    return d.found["fkl"], d.found["rkl"]


def _fkl_rkl_mix(d: Dists, a: torch.Tensor | float, need_grad: bool) -> KernelResult:
    """a * KL(p||q) + (1 - a) * KL(q||p), a per row (detached) or a float.

    Gradient w.r.t. u: a (q - p) + (1 - a) q (log q - log p - RKL) = q (c - b r) - a p with
    r = log p - log q, b = 1 - a, c = a - b RKL: three passes, in place over r.
    """
    fkl_value, rkl_value = kl_pair(d)
    value = a * fkl_value + (1 - a) * rkl_value
    if not need_grad:
        return value, None
    s = _take_scale(d)
    b = (1 - a) * s
    c = a * s - b * rkl_value
    r = d.log_ratio()
    g = d.grad_buffer()  # the same memory as r: the passes below overwrite r in place
    if isinstance(b, torch.Tensor):
        torch.addcmul(_col(c), r, _col(b), value=-1, out=g)
    else:
        torch.add(_col(c), r, alpha=-b, out=g)
    g.mul_(d.q)
    a_s = a * s
    if isinstance(a_s, torch.Tensor):
        if not (isinstance(a, float) and a == 0.0):
            g.addcmul_(d.p, _col(a_s), value=-1)
    elif a_s != 0.0:
        g.add_(d.p, alpha=-a_s)
    return value, g


def autograd_kernel(value_fn: Callable[..., torch.Tensor]) -> Kernel:
    """Turn a differentiable `value_fn(d, **params) -> [R]` into a kernel (gradient by autograd).

    The variable is the student's log-probs (see `with_student`); slower and heavier than a
    closed form, but any formula of p, q, lp, lq works.
    """

    def kernel(d: Dists, need_grad: bool, **params: Any) -> KernelResult:
        if not need_grad:
            return value_fn(d, **params), None
        with torch.enable_grad():
            lq = d.lq.detach().requires_grad_(True)
            value = value_fn(with_student(d, lq), **params)
            (grad,) = torch.autograd.grad(value.sum(), lq)
        return value.detach(), grad

    kernel.__doc__ = value_fn.__doc__
    kernel.__name__ = value_fn.__name__
    return kernel


# Parameters this close (but not equal) to a range end make float32 cancel catastrophically
# (normalized jsd): such chunks are computed in float64 (checked against mpmath).
_FLOAT64_BELOW = 0.05


def _in_float64(kernel: Kernel, d: Dists, need_grad: bool, **params: Any) -> KernelResult:
    """`kernel` on a float64 copy of the chunk; the value comes back in d's dtype and the
    gradient in d's gradient slot (its pending scale left to the runner)."""
    if d.lq.dtype == torch.float64:
        return kernel(d, need_grad, **params)
    device = torch.device("cpu") if d.lq.device.type == "mps" else d.lq.device  # no float64 on MPS
    d64 = make_dists(d.lq.to(device, torch.float64), d.lp.to(device, torch.float64), 1.0,
                     torch.float64, floored=d.floored)
    d64.bucket = d.bucket
    value, grad = kernel(d64, need_grad, **params)
    value = value.to(device=d.lq.device, dtype=d.lq.dtype)
    if grad is None:
        return value, None
    return value, d.grad_buffer().copy_(grad)


def _mixture(d: Dists, weight_p: float, out: torch.Tensor) -> torch.Tensor:
    """M = weight_p * p + (1 - weight_p) * q into `out`, at least the smallest normal number.

    The floor only touches entries where p and q both (nearly) underflow, whose terms are 0 to
    working precision; it keeps log M and q / M finite there (masked entries included).
    """
    torch.lerp(d.q, d.p, weight_p, out=out)
    return out.clamp_min_(torch.finfo(out.dtype).tiny)


# --- the kernels -----------------------------------------------------------------------------


def fkl(d: Dists, need_grad: bool) -> KernelResult:
    """Forward KL(p || q) = sum p (log p - log q); mean-seeking."""
    value, _ = kl_pair(d)  # RKL comes free in the same GEMM (return_stats uses it)
    if not need_grad:
        return value, None
    return value, torch.sub(d.q, d.p, out=d.grad_buffer())


def rkl(d: Dists, need_grad: bool) -> KernelResult:
    """Reverse KL(q || p) = sum q (log q - log p); mode-seeking."""
    return _fkl_rkl_mix(d, 0.0, need_grad)


def fkl_rkl(d: Dists, need_grad: bool, lam: float) -> KernelResult:
    """(1 - lam) * FKL + lam * RKL."""
    return _fkl_rkl_mix(d, 1.0 - lam, need_grad)


def akl(d: Dists, need_grad: bool, mu: float, boundary: str) -> KernelResult:
    """Adaptive KL: w * FKL + (1 - w) * RKL, w = g_head / (g_head + g_tail), w detached."""
    _, _, w, _ = gaps_and_weight(d, mu, boundary)
    return _fkl_rkl_mix(d, w, need_grad)


def akl_r(d: Dists, need_grad: bool, mu: float, boundary: str) -> KernelResult:
    """AKL with the weights swapped: (1 - w) * FKL + w * RKL (the paper's ablation)."""
    _, _, w, _ = gaps_and_weight(d, mu, boundary)
    return _fkl_rkl_mix(d, 1.0 - w, need_grad)


def tvd(d: Dists, need_grad: bool) -> KernelResult:
    """Total variation distance 1/2 sum |p - q|; gradient with h = q sign(q - p) / 2."""
    value = 0.5 * l1_distance(d.q, d.p)
    if not need_grad:
        return value, None
    h = torch.sub(d.q, d.p, out=d.grad_buffer())
    return value, _softmax_grad(d, h.sign_().mul_(d.q).mul_(0.5 * _take_scale(d)))


def taid(d: Dists, need_grad: bool, t: float) -> KernelResult:
    """TAID: KL(p_t || q), p_t = softmax((1 - t) * stopgrad(u) + t * log p), p_t detached."""
    lpt = d.grad_buffer()
    if t == 0.0:
        lpt.copy_(d.lq)
    elif t == 1.0:
        lpt.copy_(d.lp)
    else:  # u and log q differ by a per-row constant: the same p_t
        torch.log_softmax(torch.lerp(d.lq, d.lp, t, out=d.scratch()), -1, out=lpt)
        if d.floored:
            lpt.clamp_min_(LOG_FLOOR)
    pt = torch.exp(lpt, out=d.scratch())
    value = rowdot(pt, lpt.sub_(d.lq))
    if not need_grad:
        return value, None
    return value, torch.sub(d.q, pt, out=lpt)


def jsd(d: Dists, need_grad: bool, beta: float, normalized: bool) -> KernelResult:
    """Generalized JSD with teacher weight beta in M = beta p + (1 - beta) q; exactly FKL at
    beta = 0 and RKL at beta = 1. Gradient: h = (1 - beta) q (log q - log M)."""
    if beta == 0.0:
        return fkl(d, need_grad)
    if beta == 1.0:
        return rkl(d, need_grad)
    if normalized and min(beta, 1.0 - beta) < _FLOAT64_BELOW:
        return _in_float64(_jsd, d, need_grad, beta=beta, normalized=normalized)
    return _jsd(d, need_grad, beta, normalized)


def _jsd(d: Dists, need_grad: bool, beta: float, normalized: bool) -> KernelResult:
    """jsd for 0 < beta < 1."""
    scale = 1.0 / (beta * (1.0 - beta)) if normalized else 1.0
    lm = _mixture(d, beta, d.scratch()).log_()
    q_part = torch.sub(d.lq, lm, out=d.grad_buffer())
    kl_q = rowdot(d.q, q_part)
    kl_p = rowdot(d.p, torch.sub(d.lp, lm, out=lm))
    value = (beta * kl_p + (1.0 - beta) * kl_q) * scale
    if not need_grad:
        return value, None
    # h - q sum(h) = (1 - beta) q (q_part - KL(q||M))
    return value, q_part.sub_(_col(kl_q)).mul_(d.q).mul_((1.0 - beta) * scale * _take_scale(d))


def skl(d: Dists, need_grad: bool, alpha: float) -> KernelResult:
    """Skew KL: KL(p || alpha p + (1 - alpha) q); FKL at alpha = 0.
    Gradient: h = -(1 - alpha) p q / M."""
    if alpha == 0.0:
        return fkl(d, need_grad)
    m = _mixture(d, alpha, d.scratch())
    lm = torch.log(m, out=d.grad_buffer())
    value = rowdot(d.p, torch.sub(d.lp, lm, out=lm))
    if not need_grad:
        return value, None
    h = torch.div(d.p, m, out=lm).mul_(d.q)
    return value, _softmax_grad(d, h.mul_((alpha - 1.0) * _take_scale(d)))


def srkl(d: Dists, need_grad: bool, alpha: float) -> KernelResult:
    """Skew reverse KL: KL(q || alpha q + (1 - alpha) p); RKL at alpha = 0.
    Gradient: h = q (log q - log M + 1 - alpha q / M)."""
    if alpha == 0.0:
        return rkl(d, need_grad)
    m = _mixture(d, 1.0 - alpha, d.scratch())
    q_over_m = torch.div(d.q, m, out=d.grad_buffer()) if need_grad else None
    a = torch.sub(d.lq, m.log_(), out=m)  # log q - log M
    value = rowdot(d.q, a)
    if q_over_m is None:
        return value, None
    # h - q sum(h) = q (a - alpha q/M - value + alpha sum(q q/M))
    c = value - alpha * rowdot(d.q, q_over_m)
    g = torch.add(a, q_over_m, alpha=-alpha, out=q_over_m)
    return value, g.sub_(_col(c)).mul_(d.q)


def _scaled_e1(scale: torch.Tensor, z: torch.Tensor, big: torch.Tensor) -> torch.Tensor:
    """scale * (e^z - 1) / z per entry (= scale at z = 0), where `big` = scale * e^z is given
    for z > 1 so that nothing overflows. New tensor."""
    small = z.clamp_max(1.0)
    e1 = torch.where(small == 0, 1.0, torch.expm1(small) / small)
    return torch.where(z > 1.0, (big - scale) / z.clamp_min(1.0), scale * e1)


def ab(d: Dists, need_grad: bool, alpha: float, beta: float) -> KernelResult:
    """Alpha-beta divergence D_AB(p || q) (Cichocki, Cruces & Amari 2011), per row; (1, 0) is
    FKL and (0, 1) is RKL (closed forms there).

    Per entry, with delta = log q - log p, x = alpha delta, y = beta delta, s = alpha + beta,
    A = p^alpha q^beta and E1(z) = (e^z - 1) / z:
        D = (delta / s) (A E1(x) - p^s E1(y)),   h = q dD/dq = delta A E1(x).
    This one form holds for every (alpha, beta), zeros included (the textbook 1 / (alpha beta)
    forms are its limits), and never divides by a small parameter; where x and y are both
    small it is summed as its series p^s delta^2 (1/2 + c2 delta + c3 delta^2) instead
    (no cancellation). Entries are >= 0.
    """
    if (alpha, beta) == (1.0, 0.0):
        return fkl(d, need_grad)
    if (alpha, beta) == (0.0, 1.0):
        return rkl(d, need_grad)
    if d.redo is not None and min(alpha, beta) >= _AB_FAST_MIN:
        return _ab_fast(d, need_grad, alpha, beta)
    s = alpha + beta
    delta = torch.sub(d.lq, d.lp, out=d.scratch())
    a_pow = torch.exp(d.lp * alpha + d.lq * beta)  # p^alpha q^beta <= 1
    p_s, q_s = torch.exp(d.lp * s), torch.exp(d.lq * s)
    a_e1x = _scaled_e1(a_pow, delta * alpha, q_s)  # A E1(x); A e^x = q^s
    series = 0.5 * delta * delta
    if s > 0.0:
        c2 = (alpha * alpha / 6 + alpha * beta / 2 + beta * beta / 3) / s
        c3 = (alpha**3 / 24 + alpha * alpha * beta / 6 + alpha * beta * beta / 4 + beta**3 / 8) / s
        series = series * (1.0 + 2.0 * delta * (c2 + c3 * delta)) * p_s
        p_e1y = _scaled_e1(p_s, delta * beta, a_pow)  # p^s E1(y); p^s e^y = A
        direct = (delta / s) * (a_e1x - p_e1y)
        small = (delta * max(alpha, beta)).abs() < _AB_SERIES
        series = torch.where(small, series, direct)
    value = series.clamp_min_(0.0).sum(-1)
    if not need_grad:
        return value, None
    h = torch.mul(delta, a_e1x, out=d.grad_buffer())
    return value, _softmax_grad(d, h)


_AB_SERIES = 1e-2  # |x|, |y| below this: the series (its truncation error is ~1e-6 relative)
_AB_FAST_MIN = 0.05  # alpha and beta at least this: the fast form (it divides by alpha beta)
_AB_FAST_CANCEL = 5e-3  # alpha beta D below this x the row sums: cancelled, redone carefully


def _ab_fast(d: Dists, need_grad: bool, alpha: float, beta: float) -> KernelResult:
    """D_AB from three row sums, for the runner's fast pass (alpha, beta > 0):

        D = (alpha/s S_p + beta/s S_q - S_A) / (alpha beta),  S_A = sum p^alpha q^beta,
        S_p = sum p^s, S_q = sum q^s (both 1 when s = 1: no power taken),
        grad (w.r.t. u) = (q^s - A - q (S_q - S_A)) / alpha.

    A few passes and two buffers. The sums cancel where q is close to p (alpha beta D small
    against them): those rows are marked in `d.redo` and the runner redoes them with the
    careful per-entry form (`ab` with `d.redo` None)."""
    s = alpha + beta
    a_pow = torch.mul(d.lp, alpha, out=d.scratch()).add_(d.lq, alpha=beta).exp_()  # A
    s_a = a_pow.sum(-1)
    if s == 1.0:
        s_p = s_q = 1.0
        q_s = d.q
    else:
        q_s = torch.mul(d.lp, s, out=d.grad_buffer()).exp_()
        s_p = q_s.sum(-1)
        q_s = torch.mul(d.lq, s, out=q_s).exp_()
        s_q = q_s.sum(-1)
    sums = s_a + (alpha / s) * s_p + (beta / s) * s_q
    value = ((alpha / s) * s_p + (beta / s) * s_q - s_a).clamp_min_(0.0) / (alpha * beta)
    d.redo |= ~(value * (alpha * beta) >= _AB_FAST_CANCEL * sums)  # NaN rows too
    d.found["value_open"] = True  # the runner redoes the value of the rows marked open
    if not need_grad:
        return value, None
    g = torch.sub(q_s, a_pow, out=d.grad_buffer())
    g.addcmul_(d.q, _col(s_q - s_a), value=-1)
    return value, g.mul_(_take_scale(d) / alpha)


def todi(d: Dists, need_grad: bool, beta: float) -> KernelResult:
    """ToDi (Jung et al., EMNLP 2025): FKL and RKL mixed per vocabulary entry.

    sum_i a_i p_i log(p_i/q_i) + (1 - a_i) q_i log(q_i/p_i), a_i = sigmoid(beta log(p_i/q_i)),
    a detached (the official code's weight is beta = 1). Every entry is >= 0. At beta = 1,
    a = p / (p + q) and the VALUE is exactly FKL + RKL; the gradient is not that of FKL + RKL
    (a is detached). beta = 0: (FKL + RKL) / 2 with its true gradient. Gradient w.r.t. u:
    h - q <1, h> with h_i = q_i g_i = (1 - a_i) q_i (1 - log(p_i/q_i)) - a_i p_i.

    In place, with r = log p - log q: value = <p, a r> + <q, a r> + RKL (RKL = -<q, r>), from
    the same GEMMs as kl_pair; the gradient reuses a from the scratch buffer.
    """
    _, rkl_value = kl_pair(d)  # uses r = log p - log q in the gradient slot
    r = d.log_ratio()
    a = d.scratch()
    if beta != 0.0:
        torch.mul(r, beta, out=a).sigmoid_()
    else:
        a.fill_(0.5)
    ar = d.grad_buffer()  # the same memory as r: r becomes a r
    ar.mul_(a)
    on_q, on_p = rowdot_pair(d.q, d.p, ar)
    value = on_p + on_q + rkl_value
    if not need_grad:
        return value, None
    h = torch.sub(d.lq, d.lp, out=ar).add_(1.0).mul_(d.q)  # q (1 - r)
    h.addcmul_(h, a, value=-1).addcmul_(a, d.p, value=-1)  # (1 - a) q (1 - r) - a p
    return value, _softmax_grad(d, h)


# --- the registry ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ParamSpec:
    """One loss parameter: default, valid range (or choices) and a one-line description.

    Numeric ranges are [low, high]; low_open / high_open exclude an end. `gap` > 0 also
    refuses values closer than `gap` to a closed end without being that end (where even
    float64 loses the value to cancellation).
    """

    name: str
    default: Any
    description: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[Any, ...] | None = None
    gap: float = 0.0

    def range_text(self) -> str:
        """The valid range as text, e.g. '(0, 1)' or "one of ('reference', 'paper')"."""
        if self.choices is not None:
            return f"one of {self.choices}"
        left = "(" if self.low_open else "["
        right = ")" if self.high_open else "]"
        text = f"{left}{self.low:g}, {self.high:g}{right}"
        return text + (f" and not within {self.gap:g} of an end" if self.gap else "")

    def validate(self, value: Any, loss: str) -> Any:
        """Return the value (floats as float) or raise ValueError naming loss, parameter, range."""
        where = f"{loss}: parameter {self.name}"
        if self.choices is not None:
            if value not in self.choices or (
                isinstance(value, bool) != isinstance(self.choices[0], bool)
            ):
                raise ValueError(f"{where} must be {self.range_text()}, got {value!r}")
            return value
        if isinstance(value, bool):
            raise ValueError(f"{where} must be a number in {self.range_text()}, got {value!r}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError(
                f"{where} must be a number in {self.range_text()}, got {value!r}"
            ) from None
        assert self.low is not None and self.high is not None
        too_low = number <= self.low if self.low_open else number < self.low
        too_high = number >= self.high if self.high_open else number > self.high
        near_end = self.gap and (0 < number - self.low < self.gap
                                 or 0 < self.high - number < self.gap)
        if math.isnan(number) or too_low or too_high or near_end:
            raise ValueError(f"{where} must be in {self.range_text()}, got {value!r}")
        return number


@dataclass(frozen=True)
class LossSpec:
    """A registered divergence: name, one-line description, formula, parameters, kernel, and
    how many `[R, V]` buffers the kernel holds (4: the distributions; 5 with `d.scratch()`)."""

    name: str
    description: str
    formula: str
    kernel: Kernel = field(repr=False)
    params: dict[str, ParamSpec] = field(default_factory=dict)
    buffers: int = 4  # [R, V] buffers its kernel holds besides the gradient (sizes the chunks)

    def resolve(self, params: dict[str, Any]) -> dict[str, Any]:
        """Fill defaults and validate; unknown parameter names raise ValueError."""
        unknown = sorted(set(params) - set(self.params))
        if unknown:
            known = ", ".join(self.params) or "none"
            raise ValueError(
                f"{self.name}: unknown parameter(s) {', '.join(unknown)}; its parameters: {known}"
            )
        return {
            name: spec.validate(params.get(name, spec.default), self.name)
            for name, spec in self.params.items()
        }

    def defaults(self) -> dict[str, Any]:
        """The default parameters."""
        return {name: spec.default for name, spec in self.params.items()}


_MU = ParamSpec("mu", 0.5, "teacher mass that defines the head", 0.0, MU_MAX, True)
_GAP = 1e-10  # ab / jsd: float64 keeps the value accurate down to here (mpmath-checked)
_BOUNDARY = ParamSpec(
    "boundary",
    "reference",
    "'reference': the token crossing mu is tail (reference code); 'paper': it is head",
    choices=BOUNDARIES,
)

LOSSES: dict[str, LossSpec] = {
    spec.name: spec
    for spec in [
        LossSpec("fkl", "Forward KL(p||q): mean-seeking, closes the head first",
                 "Σ p (log p − log q)", fkl),
        LossSpec("rkl", "Reverse KL(q||p): mode-seeking, closes the tail first",
                 "Σ q (log q − log p)", rkl),
        LossSpec("fkl_rkl", "Fixed mix (1−λ)·FKL + λ·RKL (the paper's FKL+RKL baseline)",
                 "(1−λ)·FKL + λ·RKL", fkl_rkl,
                 {"lam": ParamSpec("lam", 0.5, "weight λ on RKL", 0.0, 1.0)}),
        LossSpec("akl", "Adaptive KL: FKL weighted by the head gap, RKL by the tail gap",
                 "w·FKL + (1−w)·RKL, w = g_head/(g_head+g_tail)", akl,
                 {"mu": _MU, "boundary": _BOUNDARY}),
        LossSpec("akl_r", "AKL with the weights swapped (ablation)",
                 "(1−w)·FKL + w·RKL", akl_r, {"mu": _MU, "boundary": _BOUNDARY}),
        LossSpec("jsd", "Generalized Jensen-Shannon; β is the TEACHER's weight in M",
                 "β·KL(p‖M) + (1−β)·KL(q‖M), M = βp + (1−β)q", jsd,
                 {"beta": ParamSpec("beta", 0.5, "teacher weight β in the mixture M", 0.0, 1.0,
                                    gap=_GAP),
                  "normalized": ParamSpec("normalized", False,
                                          "divide by β(1−β): continuous, → FKL/RKL at the ends",
                                          choices=(False, True))}, buffers=5),
        LossSpec("tvd", "Total variation distance", "½ Σ |p − q|", tvd),
        LossSpec("skl", "Skew KL (DistiLLM)", "KL(p ‖ αp + (1−α)q)", skl,
                 {"alpha": ParamSpec("alpha", 0.1, "skew α", 0.0, 1.0, high_open=True)},
                 buffers=5),
        LossSpec("srkl", "Skew reverse KL (DistiLLM)", "KL(q ‖ αq + (1−α)p)", srkl,
                 {"alpha": ParamSpec("alpha", 0.1, "skew α", 0.0, 1.0, high_open=True)},
                 buffers=5),
        LossSpec("ab", "Alpha-beta divergence (ABKD); (1,0) = FKL, (0,1) = RKL",
                 "D_AB^(α,β)(p‖q)", ab,
                 {"alpha": ParamSpec("alpha", 0.5, "α", 0.0, 1.0, gap=_GAP),
                  "beta": ParamSpec("beta", 0.5, "β", 0.0, 1.0, gap=_GAP)}, buffers=16),
        LossSpec("taid", "TAID: KL(p_t‖q) to an interpolation of student and teacher",
                 "KL(p_t ‖ q), p_t = softmax((1−t)·sg(z_S) + t·z_T)", taid,
                 {"t": ParamSpec("t", 0.4, "interpolation t (TAIDSchedule updates it)",
                                 0.0, 1.0)}, buffers=5),
        LossSpec("todi", "ToDi: FKL and RKL mixed per vocabulary entry by the log-ratio",
                 "Σ a·p log(p/q) + (1−a)·q log(q/p), a = σ(β log(p/q)) detached", todi,
                 {"beta": ParamSpec("beta", 1.0, "slope β of the per-entry weight (0: ½(FKL+RKL))",
                                    0.0, 100.0)}, buffers=5),
    ]
}


def get_loss(name: str) -> LossSpec:
    """The LossSpec for `name`; unknown names raise ValueError listing the known ones."""
    if not isinstance(name, str) or name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; known losses: {', '.join(LOSSES)}")
    return LOSSES[name]


def resolve_params(name: str, **params: Any) -> dict[str, Any]:
    """The full, validated parameters of loss `name` (defaults filled in)."""
    return get_loss(name).resolve(params)
