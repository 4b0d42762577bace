"""The divergence catalogue (shared/DIVERGENCES.md) as per-chunk kernels, and its registry.

Every kernel takes the distributions of a chunk of positions (`Dists`: p = teacher,
q = student, `[R, V]`) and returns `(value [R], grad [R, V] or None)`: the per-position value
summed over V, and, when asked, its gradient w.r.t. the scaled student logits u = z_S / T.
Closed-form gradients (fkl, rkl, fkl_rkl, akl, akl_r, tvd, taid, todi) use
d/du L = q * (g - <q, g>) with g = dL/dq; the rest take theirs from autograd on the chunk.
That is the one extension point: add a kernel and a LossSpec to LOSSES.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from ._dists import Dists, log_probs, make_dists, with_student
from .headtail import BOUNDARIES, MU_MAX, gaps_and_weight

KernelResult = tuple[torch.Tensor, "torch.Tensor | None"]
Kernel = Callable[..., KernelResult]


# --- building blocks -------------------------------------------------------------------------


def _kl(pa: torch.Tensor, la: torch.Tensor, lb: torch.Tensor) -> torch.Tensor:
    """KL(a || b) per row from probs `pa` and log-probs `la`, `lb`."""
    return torch.linalg.vecdot(pa, la - lb)


def _fkl_rkl_mix(
    d: Dists,
    fkl_weight: torch.Tensor | float,
    need_grad: bool,
    q_minus_p: torch.Tensor | None = None,
) -> KernelResult:
    """a * KL(p||q) + (1 - a) * KL(q||p), a per row (detached) or a float.

    Gradient w.r.t. u: a (q - p) + (1 - a) q (log q - log p - RKL). `q_minus_p`, when given,
    is reused (and overwritten).
    """
    diff = d.lp - d.lq
    fkl_value = torch.linalg.vecdot(d.p, diff)
    rkl_value = -torch.linalg.vecdot(d.q, diff)
    a = fkl_weight
    value = a * fkl_value + (1 - a) * rkl_value
    if not need_grad:
        return value, None
    a_col = a.unsqueeze(-1) if isinstance(a, torch.Tensor) else a
    rkl_part = diff.add_(rkl_value.unsqueeze(-1)).mul_(d.q)  # = -q (log q - log p - RKL)
    grad = (d.q - d.p if q_minus_p is None else q_minus_p).mul_(a_col)
    return value, grad.sub_(rkl_part.mul_(1 - a_col))


def autograd_kernel(value_fn: Callable[..., torch.Tensor]) -> Kernel:
    """Turn a differentiable `value_fn(d, **params) -> [R]` into a kernel (gradient by autograd)."""

    def kernel(d: Dists, need_grad: bool, **params: Any) -> KernelResult:
        if not need_grad:
            return value_fn(d, **params), None
        with torch.enable_grad():
            u = d.u.detach().requires_grad_(True)
            value = value_fn(with_student(d, u), **params)
            (grad,) = torch.autograd.grad(value.sum(), u)
        return value.detach(), grad

    kernel.__doc__ = value_fn.__doc__
    kernel.__name__ = value_fn.__name__
    return kernel


# Parameters this close (but not equal) to a range end make float32 cancel catastrophically
# (ab, normalized jsd): such chunks are computed in float64 (checked against mpmath).
_FLOAT64_BELOW = 0.05


def _in_float64(kernel: Kernel, d: Dists, need_grad: bool, **params: Any) -> KernelResult:
    """`kernel` on a float64 copy of the chunk; value and gradient come back in d's dtype."""
    if d.u.dtype == torch.float64:
        return kernel(d, need_grad, **params)
    device = torch.device("cpu") if d.u.device.type == "mps" else d.u.device  # no float64 on MPS
    d64 = make_dists(d.u.to(device, torch.float64), d.lp.to(device, torch.float64), 1.0,
                     torch.float64, floored=d.floored)
    value, grad = kernel(d64, need_grad, **params)
    back = {"device": d.u.device, "dtype": d.u.dtype}
    return value.to(**back), (None if grad is None else grad.to(**back))


def _log_mixture(la: torch.Tensor, lb: torch.Tensor, weight_a: float) -> torch.Tensor:
    """log(weight_a * a + (1 - weight_a) * b) from log-probs, for 0 < weight_a < 1."""
    return torch.logaddexp(la + math.log(weight_a), lb + math.log1p(-weight_a))


# --- the kernels -----------------------------------------------------------------------------


def fkl(d: Dists, need_grad: bool) -> KernelResult:
    """Forward KL(p || q) = sum p (log p - log q); mean-seeking."""
    value = _kl(d.p, d.lp, d.lq)
    return value, ((d.q - d.p) if need_grad else None)


def rkl(d: Dists, need_grad: bool) -> KernelResult:
    """Reverse KL(q || p) = sum q (log q - log p); mode-seeking."""
    diff = d.lq - d.lp
    value = torch.linalg.vecdot(d.q, diff)
    if not need_grad:
        return value, None
    return value, diff.sub_(value.unsqueeze(-1)).mul_(d.q)


def fkl_rkl(d: Dists, need_grad: bool, lam: float) -> KernelResult:
    """(1 - lam) * FKL + lam * RKL."""
    return _fkl_rkl_mix(d, 1.0 - lam, need_grad)


def akl(d: Dists, need_grad: bool, mu: float, boundary: str) -> KernelResult:
    """Adaptive KL: w * FKL + (1 - w) * RKL, w = g_head / (g_head + g_tail), w detached."""
    q_minus_p = d.q - d.p
    _, _, w, _ = gaps_and_weight(d, mu, boundary, q_minus_p)
    return _fkl_rkl_mix(d, w, need_grad, q_minus_p)


def akl_r(d: Dists, need_grad: bool, mu: float, boundary: str) -> KernelResult:
    """AKL with the weights swapped: (1 - w) * FKL + w * RKL (the paper's ablation)."""
    q_minus_p = d.q - d.p
    _, _, w, _ = gaps_and_weight(d, mu, boundary, q_minus_p)
    return _fkl_rkl_mix(d, 1.0 - w, need_grad, q_minus_p)


def tvd(d: Dists, need_grad: bool) -> KernelResult:
    """Total variation distance 1/2 sum |p - q|."""
    diff = d.q - d.p
    value = 0.5 * diff.abs().sum(-1)
    if not need_grad:
        return value, None
    g = 0.5 * diff.sign()
    return value, d.q * (g - (d.q * g).sum(-1, keepdim=True))


def taid(d: Dists, need_grad: bool, t: float) -> KernelResult:
    """TAID: KL(p_t || q), p_t = softmax((1 - t) * stopgrad(u) + t * log p), p_t detached."""
    u = d.u.detach()
    if t == 0.0:
        mixed = u
    elif t == 1.0:
        mixed = d.lp
    else:
        mixed = (1.0 - t) * u + t * d.lp
    lpt = log_probs(mixed)
    pt = lpt.exp()
    value = _kl(pt, lpt, d.lq)
    return value, ((d.q - pt) if need_grad else None)


@autograd_kernel
def _jsd_value(d: Dists, beta: float, normalized: bool) -> torch.Tensor:
    """Generalized JSD with teacher weight beta in M = beta p + (1 - beta) q."""
    if beta == 0.0:
        return _kl(d.p, d.lp, d.lq)
    if beta == 1.0:
        return _kl(d.q, d.lq, d.lp)
    lm = _log_mixture(d.lp, d.lq, beta)
    value = beta * _kl(d.p, d.lp, lm) + (1.0 - beta) * _kl(d.q, d.lq, lm)
    return value / (beta * (1.0 - beta)) if normalized else value


def jsd(d: Dists, need_grad: bool, beta: float, normalized: bool) -> KernelResult:
    """Generalized JSD; exactly FKL at beta = 0 and RKL at beta = 1 (closed forms there)."""
    if beta == 0.0:
        return fkl(d, need_grad)
    if beta == 1.0:
        return rkl(d, need_grad)
    if normalized and min(beta, 1.0 - beta) < _FLOAT64_BELOW:
        return _in_float64(_jsd_value, d, need_grad, beta=beta, normalized=normalized)
    return _jsd_value(d, need_grad, beta=beta, normalized=normalized)


@autograd_kernel
def _skl_value(d: Dists, alpha: float) -> torch.Tensor:
    return _kl(d.p, d.lp, _log_mixture(d.lp, d.lq, alpha))


@autograd_kernel
def _srkl_value(d: Dists, alpha: float) -> torch.Tensor:
    return _kl(d.q, d.lq, _log_mixture(d.lq, d.lp, alpha))


def skl(d: Dists, need_grad: bool, alpha: float) -> KernelResult:
    """Skew KL: KL(p || alpha p + (1 - alpha) q); FKL at alpha = 0."""
    return fkl(d, need_grad) if alpha == 0.0 else _skl_value(d, need_grad, alpha=alpha)


def srkl(d: Dists, need_grad: bool, alpha: float) -> KernelResult:
    """Skew reverse KL: KL(q || alpha q + (1 - alpha) p); RKL at alpha = 0."""
    return rkl(d, need_grad) if alpha == 0.0 else _srkl_value(d, need_grad, alpha=alpha)


_EXP_LIMIT = 40.0


def _expm1_gap(x: torch.Tensor) -> torch.Tensor:
    """expm1 on x clamped to <= _EXP_LIMIT (keeps the unused branch of a `where` finite)."""
    return torch.expm1(x.clamp_max(_EXP_LIMIT))


@autograd_kernel
def _ab_value(d: Dists, alpha: float, beta: float) -> torch.Tensor:
    """Alpha-beta divergence D_AB(p || q) (Cichocki, Cruces & Amari 2011), per row.

    Written per entry as p^s * h(delta), delta = log q - log p, s = alpha + beta, with expm1
    so that entries where q is close to p do not cancel catastrophically; every entry is >= 0.
    Where s * delta is large the equivalent power form is used instead (no overflow).
    """
    delta = d.lq - d.lp
    if alpha == 0.0 and beta == 0.0:
        return 0.5 * (delta * delta).sum(-1)
    if beta == 0.0:  # (1 / a^2) sum p^a (e^{a delta} - 1 - a delta)
        a = alpha
        big = a * delta > _EXP_LIMIT
        pa = torch.exp(a * d.lp)
        small_form = pa * (_expm1_gap(a * delta) - a * delta)
        power_form = torch.exp(a * d.lq) - pa - a * pa * delta
        return torch.where(big, power_form, small_form).sum(-1) / (a * a)
    if alpha == 0.0:  # symmetric: (1 / b^2) sum q^b (e^{-b delta} - 1 + b delta)
        b = beta
        big = -b * delta > _EXP_LIMIT
        qb = torch.exp(b * d.lq)
        small_form = qb * (_expm1_gap(-b * delta) + b * delta)
        power_form = torch.exp(b * d.lp) - qb + b * qb * delta
        return torch.where(big, power_form, small_form).sum(-1) / (b * b)
    s = alpha + beta
    big = s * delta > _EXP_LIMIT
    ps = torch.exp(s * d.lp)
    small_form = ps * ((beta / s) * _expm1_gap(s * delta) - _expm1_gap(beta * delta))
    power_form = (
        (beta / s) * torch.exp(s * d.lq)
        + (alpha / s) * ps
        - torch.exp(alpha * d.lp + beta * d.lq)
    )
    return torch.where(big, power_form, small_form).sum(-1) / (alpha * beta)


def ab(d: Dists, need_grad: bool, alpha: float, beta: float) -> KernelResult:
    """Alpha-beta divergence; (1, 0) is FKL and (0, 1) is RKL (closed forms there)."""
    if (alpha, beta) == (1.0, 0.0):
        return fkl(d, need_grad)
    if (alpha, beta) == (0.0, 1.0):
        return rkl(d, need_grad)
    if 0.0 < alpha < _FLOAT64_BELOW or 0.0 < beta < _FLOAT64_BELOW:
        return _in_float64(_ab_value, d, need_grad, alpha=alpha, beta=beta)
    return _ab_value(d, need_grad, alpha=alpha, beta=beta)


def todi(d: Dists, need_grad: bool, beta: float) -> KernelResult:
    """ToDi (Jung et al., EMNLP 2025): FKL and RKL mixed per vocabulary entry.

    sum_i a_i p_i log(p_i/q_i) + (1 - a_i) q_i log(q_i/p_i), a_i = sigmoid(beta log(p_i/q_i)),
    a detached (the official code's weight is beta = 1). Every entry is >= 0. At beta = 1,
    a = p / (p + q) and the VALUE is exactly FKL + RKL; the gradient is not that of FKL + RKL
    (a is detached). beta = 0: (FKL + RKL) / 2 with its true gradient. Gradient w.r.t. u:
    h - q <1, h> with h_i = q_i g_i = (1 - a_i) q_i (1 - log(p_i/q_i)) - a_i p_i.
    """
    delta = d.lp - d.lq
    a = torch.sigmoid(delta * beta) if beta != 0.0 else torch.full_like(delta, 0.5)
    wp = a * d.p
    wq = d.q - a * d.q
    value = torch.linalg.vecdot(delta, wp - wq)
    if not need_grad:
        return value, None
    h = delta.neg_().add_(1.0).mul_(wq).sub_(wp)
    return value, h.sub_(d.q * h.sum(-1, keepdim=True))


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
    """A registered divergence: name, one-line description, formula, parameters, kernel."""

    name: str
    description: str
    formula: str
    kernel: Kernel = field(repr=False)
    params: dict[str, ParamSpec] = field(default_factory=dict)

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
                                          choices=(False, True))}),
        LossSpec("tvd", "Total variation distance", "½ Σ |p − q|", tvd),
        LossSpec("skl", "Skew KL (DistiLLM)", "KL(p ‖ αp + (1−α)q)", skl,
                 {"alpha": ParamSpec("alpha", 0.1, "skew α", 0.0, 1.0, high_open=True)}),
        LossSpec("srkl", "Skew reverse KL (DistiLLM)", "KL(q ‖ αq + (1−α)p)", srkl,
                 {"alpha": ParamSpec("alpha", 0.1, "skew α", 0.0, 1.0, high_open=True)}),
        LossSpec("ab", "Alpha-beta divergence (ABKD); (1,0) = FKL, (0,1) = RKL",
                 "D_AB^(α,β)(p‖q)", ab,
                 {"alpha": ParamSpec("alpha", 0.5, "α", 0.0, 1.0, gap=_GAP),
                  "beta": ParamSpec("beta", 0.5, "β", 0.0, 1.0, gap=_GAP)}),
        LossSpec("taid", "TAID: KL(p_t‖q) to an interpolation of student and teacher",
                 "KL(p_t ‖ q), p_t = softmax((1−t)·sg(z_S) + t·z_T)", taid,
                 {"t": ParamSpec("t", 0.4, "interpolation t (TAIDSchedule updates it)",
                                 0.0, 1.0)}),
        LossSpec("todi", "ToDi: FKL and RKL mixed per vocabulary entry by the log-ratio",
                 "Σ a·p log(p/q) + (1−a)·q log(q/p), a = σ(β log(p/q)) detached", todi,
                 {"beta": ParamSpec("beta", 1.0, "slope β of the per-entry weight (0: ½(FKL+RKL))",
                                    0.0, 100.0)}),
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
