"""Issue 12, items 6 and 7: lenient inputs refused with one clear line, TAIDSchedule that never
overflows, and float32 accuracy at the ends of every documented parameter range."""

from __future__ import annotations

import math

import pytest
import torch

import akl_core
from akl_core.headtail import MU_MAX
from tests.helpers import logits_pair, near_boundary
from tests.reference import reference_value


@pytest.fixture(scope="module")
def pair():
    student, teacher = logits_pair((2, 3, 20), seed=3, scale=2.0)
    labels = torch.tensor([[5, -100, 7], [1, 2, -100]])
    return student, teacher, labels


# ------------------------------------------------------------------------- item 7: num_items


@pytest.mark.parametrize(
    ("num_items", "message"),
    [
        (float("inf"), "num_items must be > 0 \\(a finite number\\)"),
        (float("nan"), "num_items must be > 0 \\(a finite number\\)"),
        (0, "num_items must be > 0 \\(a finite number\\)"),
        (-3.0, "num_items must be > 0 \\(a finite number\\)"),
        (torch.tensor(float("inf")), "num_items must be > 0 \\(a finite number\\)"),
        (torch.tensor([4.0, 4.0]), r"num_items must be one number; got a tensor of shape \(2,\)"),
        (True, "num_items must be > 0"),
        ("4", "num_items must be > 0"),
    ],
)
def test_bad_num_items_is_refused(pair, num_items, message):
    student, teacher, labels = pair
    with pytest.raises(ValueError, match=message):
        akl_core.distillation_loss(student, teacher, labels=labels, num_items=num_items)


@pytest.mark.parametrize("reduction", ["sum", "none"])
def test_num_items_is_refused_where_it_would_be_ignored(pair, reduction):
    student, teacher, labels = pair
    with pytest.raises(ValueError, match="num_items is the denominator of reduction='mean'"):
        akl_core.distillation_loss(student, teacher, labels=labels, num_items=8,
                                   reduction=reduction)


def test_good_num_items_still_divide(pair):
    student, teacher, labels = pair
    total = akl_core.distillation_loss(student, teacher, labels=labels, reduction="sum")
    for n in (8, 8.0, torch.tensor(8), torch.tensor([8.0])):
        value = akl_core.distillation_loss(student, teacher, labels=labels, num_items=n)
        torch.testing.assert_close(value, total / 8)


# --------------------------------------------------------------------- item 7: labels and mask


def test_bool_and_float_labels_are_refused(pair):
    student, teacher, labels = pair
    for bad in (labels != -100, labels.float()):
        with pytest.raises(ValueError, match="labels must be integer token ids"):
            akl_core.distillation_loss(student, teacher, labels=bad)


@pytest.mark.parametrize("bad", [0.5, float("nan"), 2.0, -1.0])
def test_float_mask_must_be_exactly_zero_or_one(pair, bad):
    student, teacher, _ = pair
    mask = torch.ones(2, 3)
    mask[1, 2] = bad
    with pytest.raises(ValueError, match="mask must be bool or hold only 0 and 1"):
        akl_core.distillation_loss(student, teacher, mask=mask)
    with pytest.raises(ValueError, match="mask must be bool or hold only 0 and 1"):
        akl_core.distillation_loss(student, teacher, mask=mask.long() if bad == 2.0 else mask)


def test_zero_one_masks_of_any_dtype_agree_with_bool(pair):
    student, teacher, _ = pair
    keep = torch.tensor([[True, False, True], [True, True, False]])
    expected = akl_core.distillation_loss(student, teacher, mask=keep)
    for dtype in (torch.float32, torch.float64, torch.long, torch.uint8):
        value = akl_core.distillation_loss(student, teacher, mask=keep.to(dtype))
        torch.testing.assert_close(value, expected)


# ------------------------------------------------------------------------ item 6: TAIDSchedule


@pytest.mark.parametrize(
    "losses",
    [
        [0.0, 5.0, 1.0],          # previous loss 0: delta = -5e15
        [1.0, 1e5, 0.5, 2.0],     # a jump of 1e5 between steps
        [1.0, 1e300, 0.0, 1e-300],  # extreme but finite
        [0.0, 1e300, 1e300, 0.0],   # delta would overflow to -inf
    ],
)
def test_taid_schedule_never_overflows(losses):
    sched = akl_core.TAIDSchedule()
    previous = sched.t
    for step, loss in enumerate(losses):
        t = sched.update(loss, step, len(losses))
        assert math.isfinite(t) and math.isfinite(sched.m)
        assert previous <= t <= sched.t_end
        previous = t


def test_taid_schedule_still_follows_algorithm_1():
    """A steady improvement moves t above its linear floor by step_size * sigmoid(m) (1 - t)."""
    sched = akl_core.TAIDSchedule(step_size=0.1)
    sched.update(2.0, 0, 100)
    t0, m0 = sched.t, sched.m
    t1 = sched.update(1.0, 1, 100)
    m1 = 0.99 * m0 + 0.01 * 0.5
    assert t1 == pytest.approx(t0 + 0.1 * (1 / (1 + math.exp(-m1))) * (1 - t0))


# ------------------------------------------- item 7: accuracy at the ends of documented ranges

mpmath = pytest.importorskip("mpmath")


def _mp_probs(row: torch.Tensor) -> list:
    top = max(float(x) for x in row)
    e = [mpmath.e ** (mpmath.mpf(float(x)) - top) for x in row]
    z = sum(e)
    return [x / z for x in e]


def _mp_ab(p: list, q: list, a: float, b: float):
    a, b = mpmath.mpf(a), mpmath.mpf(b)
    log = mpmath.log
    if a == 0 and b == 0:
        return sum((log(x) - log(y)) ** 2 / 2 for x, y in zip(p, q))
    if b == 0:
        return sum((x**a * a * (log(x) - log(y)) - x**a + y**a) / a**2 for x, y in zip(p, q))
    if a == 0:
        return sum((y**b * b * (log(y) - log(x)) - y**b + x**b) / b**2 for x, y in zip(p, q))
    s = a + b
    return sum(-(x**a * y**b - a / s * x**s - b / s * y**s) / (a * b) for x, y in zip(p, q))


def _mp_jsd_normalized(p: list, q: list, beta: float):
    b = mpmath.mpf(beta)

    def kl(x, y):
        return sum(xi * (mpmath.log(xi) - mpmath.log(yi)) for xi, yi in zip(x, y))

    m = [b * x + (1 - b) * y for x, y in zip(p, q)]
    return (b * kl(p, m) + (1 - b) * kl(q, m)) / (b * (1 - b))


def _assert_matches_mpmath(name: str, exact, **params) -> None:
    """float32 and float64 logits agree with a 50-digit mpmath value (rtol 2e-4, atol 2e-5)."""
    mpmath.mp.dps = 50
    for seed, scale in ((0, 1.0), (1, 5.0)):
        student, teacher = logits_pair((3, 24), seed=seed, scale=scale)
        expected = torch.tensor([
            float(exact(_mp_probs(teacher[i].double()), _mp_probs(student[i].double())))
            for i in range(3)], dtype=torch.float64)
        for dtype in (torch.float32, torch.float64):
            value = akl_core.divergence(name, student.to(dtype), teacher.to(dtype), **params)
            torch.testing.assert_close(value.double(), expected, rtol=2e-4, atol=2e-5,
                                       msg=lambda m, dt=dtype: f"{name} {params} {dt}: {m}")


GAP = akl_core.LOSSES["ab"].params["alpha"].gap


@pytest.mark.parametrize(
    ("alpha", "beta"),
    [(1e-8, 1e-8), (GAP, GAP), (GAP, 0.0), (0.0, GAP), (GAP, 0.5), (GAP, 1.0), (0.5, GAP),
     (1e-4, 1.0), (0.049, 0.3)],
)
def test_ab_is_accurate_down_to_the_range_gap(alpha, beta):
    """The issue's case (alpha = beta = 1e-8 gave 248.7 for 138.3) and every end of the range."""
    _assert_matches_mpmath("ab", lambda p, q: _mp_ab(p, q, alpha, beta), alpha=alpha, beta=beta)


@pytest.mark.parametrize("beta", [1e-5, 1 - 1e-5, GAP, 1 - 1e-9, 0.049])
def test_normalized_jsd_is_accurate_near_both_ends(beta):
    _assert_matches_mpmath("jsd", lambda p, q: _mp_jsd_normalized(p, q, beta), beta=beta,
                           normalized=True)


def test_float64_path_keeps_the_gradient():
    student, teacher = logits_pair((4, 30), seed=5, scale=2.0)
    for name, params in (("ab", {"alpha": 1e-6, "beta": 0.5}),
                         ("jsd", {"beta": 1e-4, "normalized": True})):
        s32 = student.clone().requires_grad_(True)
        s64 = student.double().requires_grad_(True)
        akl_core.divergence(name, s32, teacher, **params).sum().backward()
        akl_core.divergence(name, s64, teacher.double(), **params).sum().backward()
        assert s32.grad.dtype == torch.float32
        torch.testing.assert_close(s32.grad.double(), s64.grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    ("name", "params"),
    [("ab", {"alpha": 1e-12}), ("ab", {"beta": 1e-13, "alpha": 0.0}),
     ("jsd", {"beta": 1e-12, "normalized": True}), ("jsd", {"beta": 1 - 1e-12}),
     ("akl", {"mu": 1 - 1e-9}), ("akl_r", {"mu": 0.99999})],
)
def test_values_float_cannot_resolve_are_refused(name, params):
    with pytest.raises(ValueError, match="must be in"):
        akl_core.resolve_params(name, **params)
    student, teacher = logits_pair((2, 10), seed=1)
    with pytest.raises(ValueError, match="must be in"):
        akl_core.distillation_loss(student, teacher, loss=name, **params)


def test_head_tail_refuses_mu_beyond_its_range():
    student, teacher = logits_pair((2, 10), seed=1)
    with pytest.raises(ValueError, match=r"mu must be in \(0, 0.9999\]"):
        akl_core.head_tail(student, teacher, mu=1 - 1e-9)


@pytest.mark.parametrize("mu", [1e-9, MU_MAX])
@pytest.mark.parametrize("boundary", ["reference", "paper"])
def test_akl_float32_is_accurate_at_both_ends_of_mu(mu, boundary):
    """At mu = MU_MAX float32 still matches the float64 reference (rows whose cumulative
    teacher mass comes within 1e-5 of mu are ambiguous at any mu and are redrawn)."""
    checked = 0
    for seed in range(40):
        g = torch.Generator().manual_seed(seed)
        V, scale = ((50, 1.0), (500, 3.0), (2000, 6.0))[seed % 3]
        student = torch.randn(6, V, generator=g) * scale
        teacher = torch.randn(6, V, generator=g) * scale
        if near_boundary(teacher.double(), mus=(mu,), gap=1e-5):
            continue
        checked += 1
        for name in ("akl", "akl_r"):
            value = akl_core.divergence(name, student, teacher, mu=mu, boundary=boundary)
            expected = reference_value(name, student.double(), teacher.double(), mu=mu,
                                       boundary=boundary)
            torch.testing.assert_close(value.double(), expected, rtol=2e-4, atol=2e-5)
        if checked >= 6:
            break
    assert checked >= 6
