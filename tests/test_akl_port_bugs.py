"""What really separates exact FKL from cross-entropy inside AKL (a common bug in ports).

CE(p, q) = -sum p log q = KL(p||q) + H(p), and H(p) does not depend on the student. So:
- values: a CE-based "AKL" is AKL + w * H(p): not 0 at q = p (it is 0.5 * H(p) there), and the
  offset w * H(p) moves with the student's w, so values are not comparable across positions or
  steps (a student can get closer to the teacher while the CE-based value goes up);
- gradient with w detached (as in AKL): identical, because w * H(p) is a constant times a
  constant; the CE bug is harmless to training only thanks to the detach;
- gradient with w attached: the CE version gets an extra H(p) * dw/dz.
akl_core's AKL must be the exact one on all three counts.
"""

from __future__ import annotations

import pytest
import torch

import akl_core
from tests import reference as ref
from tests.helpers import logits_pair


def _entropy(p: torch.Tensor) -> torch.Tensor:
    return -(p * p.log()).sum(-1)


def _ce_akl(zs: torch.Tensor, teacher: torch.Tensor, *, detach_w: bool) -> torch.Tensor:
    """The buggy port: w * CE(p, q) + (1 - w) * KL(q||p)."""
    p, q = ref.probs(teacher), ref.probs(zs)
    head = ref.head_members(p, 0.5, "reference")
    gaps = (p - (q.detach() if detach_w else q)).abs()
    total = gaps.sum(-1)
    w = torch.where(total > 0, (gaps * head).sum(-1) / torch.where(total > 0, total, 1.0), 0.5)
    return w * (-(p * q.log()).sum(-1)) + (1 - w) * ref.kl(q, p)


def _exact_akl_attached(zs: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    p, q = ref.probs(teacher), ref.probs(zs)
    head = ref.head_members(p, 0.5, "reference")
    gaps = (p - q).abs()
    w = (gaps * head).sum(-1) / gaps.sum(-1)
    return w * ref.kl(p, q) + (1 - w) * ref.kl(q, p)


def test_cross_entropy_shifts_the_akl_value_by_w_times_entropy():
    student, teacher = logits_pair((5, 11), seed=8, dtype=torch.float64, scale=2.0)
    ours = akl_core.divergence("akl", student, teacher)
    buggy = _ce_akl(student, teacher, detach_w=True)
    w = akl_core.head_tail(student, teacher).w
    h = _entropy(ref.probs(teacher))
    torch.testing.assert_close(buggy - ours, w * h)
    assert (w * h).min() > 0.05  # a visible offset, not rounding
    torch.testing.assert_close(ours, ref.akl(ref.probs(teacher), ref.probs(student)))


def test_exact_akl_is_zero_at_the_teacher_the_cross_entropy_version_is_not():
    _, teacher = logits_pair((4, 9), seed=3, dtype=torch.float64, scale=2.0)
    ours = akl_core.divergence("akl", teacher.clone(), teacher)
    torch.testing.assert_close(ours, torch.zeros(4, dtype=torch.float64), atol=1e-12, rtol=0)
    buggy = _ce_akl(teacher.clone(), teacher, detach_w=True)  # w = 0.5 where q == p
    torch.testing.assert_close(buggy, 0.5 * _entropy(ref.probs(teacher)))


def test_cross_entropy_values_can_rank_students_the_wrong_way():
    """Student B is closer to the teacher than A by exact AKL (and by both KLs), yet the
    CE-based value calls B worse: its w, hence its w * H(p) offset, is larger."""
    teacher = torch.tensor([[2.0, 1.9, 1.8, 1.7, 1.6, 0.0]], dtype=torch.float64)
    p = ref.probs(teacher)
    assert int(akl_core.head_tail(teacher, teacher).head_size) == 2
    # A: every token too low except the last, which has far too much (w small);
    # B: exactly p except that the two head tokens are swapped (head errors of both signs)
    a = torch.log(p * torch.tensor([0.7, 0.7, 0.7, 0.7, 0.7, 4.0], dtype=torch.float64))
    b = teacher[:, [1, 0, 2, 3, 4, 5]].clone()
    exact = [float(akl_core.divergence("akl", z, teacher)) for z in (a, b)]
    buggy = [float(_ce_akl(z, teacher, detach_w=True)) for z in (a, b)]
    w = [float(akl_core.head_tail(z, teacher).w) for z in (a, b)]
    assert exact[1] < exact[0], exact
    assert buggy[1] > buggy[0], buggy
    assert w[1] > 0.5 > w[0]
    for name in ("fkl", "rkl"):
        assert akl_core.divergence(name, b, teacher) < akl_core.divergence(name, a, teacher)


def test_detached_weight_makes_the_cross_entropy_gradient_identical():
    """With w detached, d(w * H(p))/dz = 0: the CE port trains exactly like AKL."""
    student, teacher = logits_pair((4, 9), seed=8, dtype=torch.float64, scale=2.0)
    s = student.clone().requires_grad_(True)
    akl_core.divergence("akl", s, teacher).sum().backward()
    zs = student.clone().requires_grad_(True)
    _ce_akl(zs, teacher, detach_w=True).sum().backward()
    torch.testing.assert_close(s.grad, zs.grad, atol=1e-12, rtol=1e-10)


def test_attached_weight_makes_cross_entropy_add_entropy_times_dw():
    """With w attached, CE and exact FKL differ by H(p) * dw/dz, which is not small."""
    student, teacher = logits_pair((4, 9), seed=8, dtype=torch.float64, scale=2.0)
    z1 = student.clone().requires_grad_(True)
    _ce_akl(z1, teacher, detach_w=False).sum().backward()
    z2 = student.clone().requires_grad_(True)
    _exact_akl_attached(z2, teacher).sum().backward()
    zw = student.clone().requires_grad_(True)
    p, q = ref.probs(teacher), ref.probs(zw)
    head = ref.head_members(p, 0.5, "reference")
    gaps = (p - q).abs()
    w = (gaps * head).sum(-1) / gaps.sum(-1)
    (w * _entropy(p)).sum().backward()
    torch.testing.assert_close(z1.grad - z2.grad, zw.grad, atol=1e-12, rtol=1e-9)
    assert zw.grad.abs().max() > 1e-2
    # and akl_core (w detached) matches neither attached version
    s = student.clone().requires_grad_(True)
    akl_core.divergence("akl", s, teacher).sum().backward()
    assert (s.grad - z2.grad).abs().max() > 1e-4


@pytest.mark.parametrize("boundary", ["reference", "paper"])
def test_weight_of_the_akl_value_is_the_detached_gap_ratio(boundary):
    """akl_core's AKL = w * KL(p||q) + (1 - w) * KL(q||p) with the documented w, per row."""
    student, teacher = logits_pair((6, 13), seed=11, dtype=torch.float64, scale=2.5)
    p, q = ref.probs(teacher), ref.probs(student)
    _, _, w = ref.akl_parts(p, q, 0.5, boundary)
    expected = w * ref.kl(p, q) + (1 - w) * ref.kl(q, p)
    torch.testing.assert_close(akl_core.divergence("akl", student, teacher, boundary=boundary),
                               expected)
