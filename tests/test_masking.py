"""Masked vocabulary entries, made honest.

An entry is MASKED when its logit is -inf or <= torch.finfo(logits.dtype).min; its probability
is exactly 0. Masked on both sides: it contributes exactly 0. Masked on one side only: some
divergences are infinite there (e.g. RKL where p = 0 < q), and those raise a ValueError instead
of returning a number that depends on an internal floor; the others are finite and exact.

Which ones are infinite is checked here against the float64 reference itself: with the masked
logit replaced by -L, the reference value grows without bound in L exactly where the true value
is +inf.
"""

from __future__ import annotations

import pytest
import torch

import akl_core
from akl_core import _dists
from akl_core._masking import SUPPORT, infinite_sides
from tests import reference as ref
from tests.helpers import logits_pair
from tests.test_divergences import CASES

SIDES = ("teacher", "student")  # the side whose entry is masked (probability 0)
IDS = [f"{n}-{p}" for n, p in CASES]


def _one_sided(side: str, fill: float, dtype=torch.float64, shape=(4, 12), seed=3):
    """(student, teacher) with entries 0 and 5 masked (set to `fill`) on `side` only, in rows
    0 and 2; rows 1 and 3 are unmasked."""
    student, teacher = logits_pair(shape, seed=seed, scale=1.5, dtype=torch.float64)
    target = teacher if side == "teacher" else student
    target[0, 0] = fill
    target[2, 5] = fill
    return student.to(dtype), teacher.to(dtype)


def _limit_is_infinite(name: str, params: dict, side: str) -> bool:
    """The reference value with the masked logit at -L grows with L (ratio test in float64)."""
    values = []
    for big in (300.0, 600.0):
        student, teacher = _one_sided(side, -big)
        values.append(ref.reference_value(name, student, teacher, **params)[[0, 2]])
    growth = (values[1] - values[0]).abs().max()
    return bool(growth > 1e-3)


def test_every_loss_has_a_support_rule():
    assert set(SUPPORT) == set(akl_core.LOSSES)


@pytest.mark.parametrize("name,params", CASES, ids=IDS)
@pytest.mark.parametrize("side", SIDES)
def test_finite_or_infinite_as_the_reference_limit_says(name, params, side):
    resolved = akl_core.resolve_params(name, **params)
    teacher_zero, student_zero = infinite_sides(name, resolved)
    table_says = teacher_zero if side == "teacher" else student_zero
    assert table_says == _limit_is_infinite(name, params, side)
    # the reference with a true -inf agrees wherever it is defined (0 * inf gives NaN there)
    student, teacher = _one_sided(side, float("-inf"))
    with_inf = ref.reference_value(name, student, teacher, **params)[[0, 2]]
    if not with_inf.isnan().any():
        assert bool(with_inf.isinf().all()) == table_says


@pytest.mark.parametrize("name,params", CASES, ids=IDS)
@pytest.mark.parametrize("side", SIDES)
def test_one_sided_mask_raises_or_equals_the_limit(name, params, side):
    """With a true -inf: infinite losses raise a clear error; finite ones equal the limit of the
    reference (masked logit at -600), values and student gradients."""
    student, teacher = _one_sided(side, float("-inf"))
    s = student.clone().requires_grad_(True)
    if _limit_is_infinite(name, params, side):
        with pytest.raises(ValueError, match=rf"{name} is infinite at 2 position") as info:
            akl_core.divergence(name, s, teacher, **params)
        message = str(info.value)
        assert "alike" in message and f"the {side}'s probability is 0" in message
        assert ("SparseTeacher" in message) == (side == "teacher")
        return
    value = akl_core.divergence(name, s, teacher, **params)
    value.sum().backward()
    limit_s, limit_t = _one_sided(side, -600.0)
    zs = limit_s.clone().requires_grad_(True)
    expected = ref.reference_value(name, zs, limit_t, **params)
    expected.sum().backward()
    torch.testing.assert_close(value, expected, rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(s.grad, zs.grad, rtol=1e-8, atol=1e-11)
    assert torch.isfinite(s.grad).all()


@pytest.mark.parametrize("name", list(akl_core.LOSSES))
def test_values_never_depend_on_the_internal_floor(name, monkeypatch):
    """One-sided masks: either an error, or the same value whatever LOG_FLOOR is."""
    for side in SIDES:
        student, teacher = _one_sided(side, float("-inf"), dtype=torch.float32)
        outcomes = []
        for floor in (-1.0e4, -1.0e3):
            monkeypatch.setattr(_dists, "LOG_FLOOR", floor)
            try:
                outcomes.append(akl_core.divergence(name, student, teacher))
            except ValueError as err:
                assert "is infinite" in str(err)
                outcomes.append(None)
        if outcomes[0] is None or outcomes[1] is None:
            assert outcomes[0] is None and outcomes[1] is None
        else:
            torch.testing.assert_close(outcomes[0], outcomes[1], rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("temperature", [0.5, 1.0, 3.0])
def test_finfo_min_behaves_exactly_like_minus_inf(dtype, temperature):
    fmin = torch.finfo(dtype).min
    for name in akl_core.LOSSES:
        for side in (*SIDES, "both"):
            if side == "both":
                student, teacher = logits_pair((4, 12), seed=3, scale=1.5, masked=3)
                student, teacher = student.to(dtype), teacher.to(dtype)
                s_min, t_min = student.clone(), teacher.clone()
                s_min[..., -3:] = fmin
                t_min[..., -3:] = fmin
            else:
                student, teacher = _one_sided(side, float("-inf"), dtype=dtype)
                s_min, t_min = _one_sided(side, fmin, dtype=dtype)
            outcome = []
            for s0, t0 in ((student, teacher), (s_min, t_min)):
                s = s0.clone().requires_grad_(True)
                try:
                    value = akl_core.distillation_loss(s, t0, loss=name, temperature=temperature,
                                                       reduction="none")
                except ValueError as err:
                    outcome.append(str(err))
                    continue
                value.sum().backward()
                assert torch.isfinite(value).all() and torch.isfinite(s.grad.float()).all()
                outcome.append((value, s.grad))
            if isinstance(outcome[0], str):
                assert outcome[0] == outcome[1], (name, side)
            else:
                assert not isinstance(outcome[1], str), (name, side, outcome[1])
                torch.testing.assert_close(outcome[1][0], outcome[0][0], rtol=1e-5, atol=1e-6)
                # the two may take different (float32) paths: equal up to the gradient's
                # rounding to the logits' dtype (one unit in the last place for half types)
                tol = max(1e-5, 2 * torch.finfo(dtype).eps) if dtype.itemsize == 2 else 1e-5
                torch.testing.assert_close(outcome[1][1], outcome[0][1], rtol=tol, atol=1e-6)


def test_huggingface_style_one_sided_mask_no_longer_gives_inf_pooled_loss():
    """A teacher masked with finfo.min outside a few entries, an unmasked student."""
    student, teacher = logits_pair((2, 3, 30), seed=9)
    teacher[..., 10:] = torch.finfo(torch.float32).min
    with pytest.raises(ValueError, match="rkl is infinite at 6 position"):
        akl_core.distillation_loss(student, teacher, loss="rkl")
    with pytest.raises(ValueError, match="akl is infinite"):
        akl_core.distillation_loss(student, teacher)
    # finite there: FKL, JSD, TVD; equal to the reference on the live entries with q intact
    for name in ("fkl", "jsd", "tvd"):
        loss = akl_core.distillation_loss(student, teacher, loss=name)
        assert torch.isfinite(loss)


def test_masking_the_student_alike_is_the_documented_fix():
    student, teacher = logits_pair((2, 3, 30), seed=9)
    teacher[..., 10:] = float("-inf")
    student = student.clone()
    student[..., 10:] = float("-inf")
    for name in akl_core.LOSSES:
        value = akl_core.divergence(name, student, teacher)
        expected = ref.reference_value(name, student[..., :10], teacher[..., :10])
        torch.testing.assert_close(value.double(), expected, rtol=2e-4, atol=2e-5)


def test_positions_left_out_by_labels_or_mask_are_not_checked():
    student, teacher = _one_sided("teacher", float("-inf"), dtype=torch.float32)
    labels = torch.tensor([-100, 1, -100, 2])  # rows 0 and 2 hold the one-sided entries
    loss = akl_core.distillation_loss(student, teacher, loss="rkl", labels=labels)
    expected = ref.reference_value("rkl", student, teacher)[[1, 3]].mean()
    torch.testing.assert_close(loss.double(), expected, rtol=2e-5, atol=1e-6)
    mask = torch.tensor([True, True, False, True])
    with pytest.raises(ValueError, match="rkl is infinite at 1 position"):
        akl_core.distillation_loss(student, teacher, loss="rkl", mask=mask)


def test_error_names_the_first_position():
    student, teacher = logits_pair((2, 3, 12), seed=2)
    teacher[1, 2, 4] = float("-inf")
    with pytest.raises(ValueError, match=r"first: position \(1, 2\)"):
        akl_core.divergence("rkl", student, teacher)


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize("fill", [float("-inf"), "finfo"])
def test_rows_masked_everywhere_raise(side, fill):
    student, teacher = logits_pair((3, 10), seed=4)
    target = teacher if side == "teacher" else student
    target[1] = torch.finfo(torch.float32).min if fill == "finfo" else float("-inf")
    for name in ("fkl", "tvd", "jsd"):
        with pytest.raises(ValueError, match="all -inf"):
            akl_core.divergence(name, student, teacher)
    with pytest.raises(ValueError, match="all -inf"):
        akl_core.per_token_divergences(student, teacher)
    with pytest.raises(ValueError, match="all -inf"):
        akl_core.head_tail(student, teacher)


def test_per_token_divergences_raise_for_the_infinite_ones_only():
    student, teacher = _one_sided("teacher", float("-inf"), dtype=torch.float32)
    with pytest.raises(ValueError, match="rkl is infinite"):
        akl_core.per_token_divergences(student, teacher)
    finite = [n for n in akl_core.LOSSES if not infinite_sides(n, akl_core.resolve_params(n))[0]]
    assert set(finite) == {"fkl", "jsd", "tvd", "skl", "srkl", "ab", "taid"}
    values = akl_core.per_token_divergences(student, teacher, names=finite)
    limit_s, limit_t = _one_sided("teacher", -600.0)
    for name in finite:
        expected = ref.reference_value(name, limit_s, limit_t)
        torch.testing.assert_close(values[name].double(), expected, rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize(
    "where,bad", [("teacher", float("nan")), ("student", float("nan")),
                  ("teacher", float("inf")), ("student", float("inf"))]
)
def test_head_tail_validates_its_input_like_the_losses(where, bad):
    student, teacher = logits_pair((2, 3, 10), seed=5)
    (teacher if where == "teacher" else student)[1, 0, 3] = bad
    with pytest.raises(ValueError, match="NaN or \\+inf"):
        akl_core.distillation_loss(student, teacher)
    with pytest.raises(ValueError, match="NaN or \\+inf"):
        akl_core.head_tail(student, teacher)


def test_head_tail_treats_finfo_min_like_minus_inf():
    student, teacher = logits_pair((3, 20), seed=6, scale=2.0)
    t_inf, t_min = teacher.clone(), teacher.clone()
    t_inf[:, 15:] = float("-inf")
    t_min[:, 15:] = torch.finfo(torch.float32).min
    for temperature in (0.5, 1.0, 4.0):
        a = akl_core.head_tail(student, t_inf, temperature=temperature).to_dict()
        b = akl_core.head_tail(student, t_min, temperature=temperature).to_dict()
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
