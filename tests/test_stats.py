"""distillation_loss(..., return_stats=True): the diagnostics from the loss's own chunk pass."""

from __future__ import annotations

import math

import pytest
import torch

import akl_core
from tests import reference as ref
from tests.helpers import logits_pair

FIELDS = ("value", "fkl", "rkl", "w", "g_head", "g_tail", "head_size", "head_mass",
          "teacher_entropy", "student_entropy")


def _batch(seed=0, vocab=300, scale=2.0):
    """A [3, 6, V] batch whose heads fall in every stage (top-1, top-64, longer), and labels."""
    student, teacher = logits_pair((3, 6, vocab), seed=seed, scale=scale)
    teacher[0, 0] *= 0.02  # a nearly flat row: a head of ~half the vocabulary
    teacher[1, 1, 7] += 12.0  # a top-1 head
    labels = torch.randint(1, 5, (3, 6))
    labels[0, 4:] = -100
    labels[2, :2] = -100
    return student, teacher, labels


def _expected(student, teacher, name, params, mu, boundary):
    """Every field by the float64 reference, per position `[N]`."""
    flat = student.reshape(-1, student.shape[-1]), teacher.reshape(-1, teacher.shape[-1])
    p, q = ref.probs(flat[1]), ref.probs(flat[0])
    head = ref.head_members(p, mu, boundary)
    g_head, g_tail, w = ref.akl_parts(p, q, mu, boundary)
    return {
        "value": ref.reference_value(name, *flat, **params),
        "fkl": ref.kl(p, q), "rkl": ref.kl(q, p), "w": w, "g_head": g_head, "g_tail": g_tail,
        "head_size": head.sum(-1), "head_mass": (p * head).sum(-1),
        "teacher_entropy": -(p * p.log()).sum(-1), "student_entropy": -(q * q.log()).sum(-1),
    }


CASES = [("akl", {}), ("akl", {"mu": 0.3, "boundary": "paper"}), ("akl_r", {"mu": 0.8}),
         ("fkl", {}), ("rkl", {}), ("jsd", {"beta": 0.3}), ("tvd", {}), ("ab", {}),
         ("taid", {})]


@pytest.mark.parametrize("name,params", CASES, ids=[f"{n}-{p}" for n, p in CASES])
def test_stats_match_the_reference_at_valid_positions_and_are_zero_elsewhere(name, params):
    student, teacher, labels = _batch()
    loss, stats = akl_core.distillation_loss(student, teacher, loss=name, labels=labels,
                                             return_stats=True, **params)
    assert isinstance(stats, akl_core.KDStats)
    own = name in ("akl", "akl_r")  # w & co. use the loss's own mu / boundary, else defaults
    mu = params.get("mu", 0.5) if own else 0.5
    boundary = params.get("boundary", "reference") if own else "reference"
    expected = _expected(student, teacher, name, params, mu, boundary)
    valid = (labels != -100).reshape(-1)
    assert torch.equal(stats.valid, labels != -100)
    assert set(expected) | {"valid"} == set(stats.to_dict())
    assert stats.head_size.dtype == torch.long
    sizes = expected["head_size"][valid]
    assert sizes.min() == 1 and sizes.max() > 64  # the deferred long-head pass ran
    for field in FIELDS:
        got = getattr(stats, field)
        assert got.shape == labels.shape, field
        assert not got.requires_grad, field
        got = got.reshape(-1)
        assert (got[~valid] == 0).all(), field
        torch.testing.assert_close(got[valid].double(), expected[field][valid].double(),
                                   rtol=2e-4, atol=2e-5, msg=field)
    torch.testing.assert_close(loss.double(), expected["value"][valid].mean(), rtol=2e-4,
                               atol=2e-5)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("name", ["akl", "fkl", "jsd", "ab"])
def test_loss_and_gradient_identical_with_and_without_stats(reduction, name):
    student, teacher, labels = _batch(seed=1)
    outs = []
    for return_stats in (False, True):
        s = student.clone().requires_grad_(True)
        out = akl_core.distillation_loss(s, teacher, loss=name, labels=labels,
                                         reduction=reduction, return_stats=return_stats)
        loss = out[0] if return_stats else out
        (loss.sum() if reduction == "none" else loss).backward()
        outs.append((loss.detach(), s.grad))
        if return_stats and reduction == "none":
            assert torch.equal(out[1].value, loss.detach())
    assert torch.equal(outs[0][0], outs[1][0])
    assert torch.equal(outs[0][1], outs[1][1])


def test_stats_without_masks_count_every_position():
    student, teacher, _ = _batch(seed=2)
    loss, stats = akl_core.distillation_loss(student, teacher, loss="akl", return_stats=True)
    assert stats.valid.all()
    torch.testing.assert_close(stats.value, akl_core.divergence("akl", student, teacher))
    summary = stats.summary()
    assert set(summary) == set(FIELDS)
    assert summary["value"] == pytest.approx(float(loss), rel=1e-6)
    assert summary["head_size"] == pytest.approx(float(stats.head_size.double().mean()))


def test_summary_of_an_empty_batch_is_zero_not_nan():
    student, teacher, _ = _batch(seed=3)
    labels = torch.full(student.shape[:-1], -100)
    loss, stats = akl_core.distillation_loss(student, teacher, labels=labels, return_stats=True)
    assert float(loss) == 0.0
    summary = stats.summary()
    assert all(value == 0.0 and not math.isnan(value) for value in summary.values())
    empty = akl_core.distillation_loss(student[:0], teacher[:0], return_stats=True)[1]
    assert all(value == 0.0 for value in empty.summary().values())


def test_stats_with_masked_vocabulary_are_finite_and_exact():
    """-inf vocabulary entries: the loss is finite in the fast pass for some losses (tvd) but
    the entropies are not: those rows are redone floored, stats included."""
    student, teacher = logits_pair((4, 12), seed=4, scale=1.5, masked=3)
    for name in ("tvd", "akl"):
        _, stats = akl_core.distillation_loss(student, teacher, loss=name, return_stats=True)
        expected = _expected(student[:, :-3], teacher[:, :-3], name, {}, 0.5, "reference")
        for field in FIELDS:
            torch.testing.assert_close(getattr(stats, field).double(),
                                       expected[field].double(), rtol=2e-4, atol=2e-5,
                                       msg=f"{name} {field}")


def test_entropies_stay_accurate_for_a_confident_teacher():
    # H(p) 0.005-0.14 beside a student that puts the teacher's top token near 1e-6: the entropy
    # taken as -(FKL + sum p log q) cancels from ~14 nats (11% off here; direct: 5e-4)
    g = torch.Generator().manual_seed(0)
    teacher = torch.randn(6, 4096, generator=g)
    teacher[:, 7] += 16.0
    student = torch.randn(6, 4096, generator=g)
    student[:, 7] -= 6.0
    _, stats = akl_core.distillation_loss(student, teacher, loss="fkl", return_stats=True)
    for name, logits in (("teacher_entropy", teacher), ("student_entropy", student)):
        lp = torch.log_softmax(logits.double(), -1)
        exact = -(lp.exp() * lp).sum(-1)
        rel = ((getattr(stats, name).double() - exact).abs() / exact).max()
        assert rel < 2e-3, (name, float(rel))
    assert float(stats.teacher_entropy.max()) < 0.2 and float(stats.fkl.min()) > 10
