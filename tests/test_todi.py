"""ToDi (Token-wise Distillation, Jung et al., EMNLP 2025): identities beyond the shared tests.

The shared tests (test_divergences, test_losses, test_properties) run todi against the float64
reference in tests/reference.py like every loss of the catalogue; these pin its definition.
"""

from __future__ import annotations

import pytest
import torch

import akl_core
from tests import reference as ref
from tests.helpers import logits_pair


def _official_form(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """The authors' code path written out on logits: per-entry weights sigmoid(log p - log q)
    and sigmoid(log q - log p), both detached, summed over the vocabulary."""
    lq = torch.log_softmax(student_logits.double(), -1)
    lp = torch.log_softmax(teacher_logits.double(), -1)
    weight_p = torch.sigmoid(lp - lq).detach()
    weight_q = torch.sigmoid(lq - lp).detach()
    return (weight_p * lp.exp() * (lp - lq) + weight_q * lq.exp() * (lq - lp)).sum(-1)


def test_default_beta_is_the_official_weight():
    assert akl_core.resolve_params("todi") == {"beta": 1.0}
    student, teacher = logits_pair((4, 3, 60), seed=1, scale=2.0, dtype=torch.float64)
    s1 = student.clone().requires_grad_(True)
    s2 = student.clone().requires_grad_(True)
    ours = akl_core.divergence("todi", s1, teacher)
    theirs = _official_form(s2, teacher)
    torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-12)
    ours.sum().backward()
    theirs.sum().backward()
    torch.testing.assert_close(s1.grad, s2.grad, rtol=1e-9, atol=1e-12)


def test_beta_zero_is_half_fkl_plus_rkl():
    student, teacher = logits_pair((6, 40), seed=2, scale=2.0, dtype=torch.float64)
    s1 = student.clone().requires_grad_(True)
    s2 = student.clone().requires_grad_(True)
    todi = akl_core.divergence("todi", s1, teacher, beta=0.0)
    half = akl_core.divergence("fkl_rkl", s2, teacher, lam=0.5)
    torch.testing.assert_close(todi, half, rtol=1e-12, atol=1e-13)
    todi.sum().backward()
    half.sum().backward()
    torch.testing.assert_close(s1.grad, s2.grad, rtol=1e-10, atol=1e-13)


def test_beta_one_value_is_fkl_plus_rkl_but_not_its_gradient():
    """sigmoid(log(p/q)) = p / (p + q), so a p - (1 - a) q = p - q: the value is Jeffreys'
    FKL + RKL; the detached weights make the gradient differ from FKL + RKL's."""
    student, teacher = logits_pair((6, 40), seed=12, scale=2.0, dtype=torch.float64)
    s1 = student.clone().requires_grad_(True)
    s2 = student.clone().requires_grad_(True)
    todi = akl_core.divergence("todi", s1, teacher)
    jeffreys = 2 * akl_core.divergence("fkl_rkl", s2, teacher, lam=0.5)
    torch.testing.assert_close(todi, jeffreys, rtol=1e-12, atol=1e-13)
    todi.sum().backward()
    jeffreys.sum().backward()
    assert (s1.grad - s2.grad).abs().max() > 1e-2


def test_large_beta_is_the_hard_switch():
    """beta -> inf: FKL terms where p > q, RKL terms where q > p."""
    student, teacher = logits_pair((5, 30), seed=3, scale=2.0, dtype=torch.float64)
    p, q = ref.probs(teacher), ref.probs(student)
    forward = p * (p.log() - q.log())
    reverse = q * (q.log() - p.log())
    hard = torch.where(p > q, forward, reverse).sum(-1)
    value = akl_core.divergence("todi", student, teacher, beta=100.0)
    # entries with |log(p/q)| < ~0.2 are not yet switched at beta = 100: a small remainder
    torch.testing.assert_close(value, hard, rtol=5e-3, atol=1e-4)


def test_positive_unless_student_equals_teacher():
    """Each entry delta * (a p - (1 - a) q) >= 0: the value is >= 0 and 0 only at q = p."""
    student, teacher = logits_pair((8, 50), seed=4, scale=3.0, dtype=torch.float64)
    for beta in (0.0, 0.5, 1.0, 10.0):
        value = akl_core.divergence("todi", student, teacher, beta=beta)
        assert (value > 0).all()
        assert akl_core.divergence("todi", teacher, teacher, beta=beta).abs().max() < 1e-12


@pytest.mark.parametrize("beta", [0.3, 1.0, 4.0])
def test_gradient_is_the_frozen_weight_derivative(beta):
    """d ToDi / dz with the weights a held at their value at z equals central differences."""
    student, teacher = logits_pair((2, 7), seed=5, dtype=torch.float64, scale=2.0)
    s = student.clone().requires_grad_(True)
    akl_core.divergence("todi", s, teacher, beta=beta).sum().backward()
    p = ref.probs(teacher)
    a = torch.sigmoid(beta * (p.log() - torch.log_softmax(student, -1)))

    def frozen(z):
        lq = torch.log_softmax(z, -1)
        q = lq.exp()
        return (a * p * (p.log() - lq) + (1 - a) * q * (lq - p.log())).sum(-1)

    eps = 1e-6
    for r in range(2):
        for j in range(7):
            plus, minus = student.clone(), student.clone()
            plus[r, j] += eps
            minus[r, j] -= eps
            fd = (frozen(plus)[r] - frozen(minus)[r]) / (2 * eps)
            assert abs(float(fd) - float(s.grad[r, j])) < 1e-7


def test_attached_weights_would_change_the_gradient():
    """The detach is real: differentiating through a gives a measurably different gradient."""
    student, teacher = logits_pair((3, 9), seed=6, dtype=torch.float64, scale=2.0)
    s = student.clone().requires_grad_(True)
    akl_core.divergence("todi", s, teacher).sum().backward()
    z = student.clone().requires_grad_(True)
    lq, lp = torch.log_softmax(z, -1), torch.log_softmax(teacher, -1)
    a = torch.sigmoid(lp - lq)  # NOT detached
    (a * lp.exp() * (lp - lq) + (1 - a) * lq.exp() * (lq - lp)).sum().backward()
    assert (s.grad - z.grad).abs().max() > 1e-3


def test_temperature_divides_both_logits():
    student, teacher = logits_pair((3, 25), seed=7, scale=3.0, dtype=torch.float64)
    value = akl_core.divergence("todi", student, teacher, temperature=2.0, beta=0.7)
    expected = ref.todi(ref.probs(teacher, 2.0), ref.probs(student, 2.0), beta=0.7)
    torch.testing.assert_close(value, expected, rtol=1e-10, atol=1e-12)
