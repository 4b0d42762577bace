"""Head/tail split, gaps, AKL weights and diagnostics against the full-sort reference."""

from __future__ import annotations

import pytest
import torch

import akl_core
from akl_core import headtail
from tests import reference as ref
from tests.helpers import logits_pair, near_boundary


def _mixed_rows(vocab: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows whose heads fall in every stage: top-1 alone, <= 64, <= 2048, and a full sort."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for scale, boost in [(1.0, 12.0), (3.5, 0.0), (2.0, 0.0), (0.6, 0.0), (0.05, 0.0), (1e-4, 0.0)]:
        for _ in range(2):
            row = torch.randn(vocab, generator=g, dtype=torch.float64) * scale
            row[int(torch.randint(vocab, (1,), generator=g))] += boost
            rows.append(row)
    teacher = torch.stack(rows)
    student = teacher + torch.randn(teacher.shape, generator=g, dtype=torch.float64) * 0.5
    assert not near_boundary(teacher, mus=(0.5,), gap=1e-9)
    return student, teacher


@pytest.mark.parametrize("boundary", ["reference", "paper"])
def test_staged_topk_equals_full_sort(boundary):
    student, teacher = _mixed_rows(5000, seed=0)
    ht = akl_core.head_tail(student, teacher, boundary=boundary)
    sizes = ht.head_size.tolist()
    assert min(sizes) == 1 and max(sizes) > 2048  # every stage was exercised
    assert any(64 < n <= 2048 for n in sizes) and any(1 < n <= 64 for n in sizes)
    p, q = ref.probs(teacher), ref.probs(student)
    members = ref.head_members(p, 0.5, boundary)
    g_head, g_tail, w = ref.akl_parts(p, q, 0.5, boundary)
    assert ht.head_size.tolist() == members.sum(-1).tolist()
    torch.testing.assert_close(ht.g_head, g_head, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(ht.g_tail, g_tail, rtol=1e-7, atol=1e-10)
    torch.testing.assert_close(ht.w, w, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(ht.head_mass, (p * members).sum(-1), rtol=1e-9, atol=1e-12)
    mask = akl_core.head_mask(teacher, boundary=boundary)
    assert torch.equal(mask, members)


@pytest.mark.parametrize("mu", [0.3, 0.5, 0.8])
@pytest.mark.parametrize("boundary", ["reference", "paper"])
def test_diagnostics_match_reference(mu, boundary):
    for seed, scale in enumerate([0.5, 2.0, 5.0]):
        student, teacher = logits_pair((3, 5, 40), seed=seed, scale=scale)
        ht = akl_core.head_tail(student, teacher, mu=mu, boundary=boundary)
        p = ref.probs(teacher.reshape(-1, 40))
        q = ref.probs(student.reshape(-1, 40))
        g_head, g_tail, w = ref.akl_parts(p, q, mu, boundary)
        members = ref.head_members(p, mu, boundary)
        assert ht.w.shape == (3, 5)
        torch.testing.assert_close(ht.g_head.reshape(-1).double(), g_head, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(ht.g_tail.reshape(-1).double(), g_tail, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(ht.w.reshape(-1).double(), w, rtol=1e-5, atol=1e-6)
        assert ht.head_size.reshape(-1).tolist() == members.sum(-1).tolist()
        entropy_p = -(p * p.log()).sum(-1)
        entropy_q = -(q * q.log()).sum(-1)
        torch.testing.assert_close(ht.teacher_entropy.reshape(-1).double(), entropy_p,
                                   rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ht.student_entropy.reshape(-1).double(), entropy_q,
                                   rtol=1e-5, atol=1e-5)


def test_reference_rule_puts_the_crossing_token_in_the_tail():
    # p = [0.4, 0.35, 0.25]: c = 0.4, 0.75, 1.0; mu = 0.5
    teacher = torch.tensor([[0.4, 0.35, 0.25]]).log()
    student = torch.zeros(1, 3)
    assert akl_core.head_tail(student, teacher).head_size.item() == 1
    assert akl_core.head_tail(student, teacher, boundary="paper").head_size.item() == 2
    # top-1 above mu: head is the top-1 token in both rules
    teacher = torch.tensor([[0.7, 0.2, 0.1]]).log()
    assert akl_core.head_tail(student, teacher).head_size.item() == 1
    assert akl_core.head_tail(student, teacher, boundary="paper").head_size.item() == 1
    # c_2 = 0.45 <= mu: two tokens in the reference head, three in the paper's
    teacher = torch.tensor([[0.25, 0.2, 0.22, 0.18, 0.15]]).log()
    student = torch.zeros(1, 5)
    assert akl_core.head_tail(student, teacher).head_size.item() == 2
    assert akl_core.head_tail(student, teacher, boundary="paper").head_size.item() == 3


def test_head_mask_is_applied_in_vocabulary_order():
    """The classic port bug: a mask built in sorted order applied in vocabulary order."""
    teacher = torch.tensor([[0.05, 0.1, 0.6, 0.25]]).log()  # sorted order != vocab order
    student = torch.tensor([[0.25, 0.25, 0.25, 0.25]]).log()
    ht = akl_core.head_tail(student, teacher)
    assert akl_core.head_mask(teacher).tolist() == [[False, False, True, False]]
    assert ht.g_head.item() == pytest.approx(0.35, abs=1e-6)
    assert ht.g_tail.item() == pytest.approx(0.2 + 0.15 + 0.0, abs=1e-6)
    assert ht.w.item() == pytest.approx(0.35 / 0.7, abs=1e-6)


def test_top1_always_in_head_and_gaps_sum_to_twice_tvd():
    student, teacher = logits_pair((50, 30), seed=2, scale=3.0)
    for boundary in ("reference", "paper"):
        for mu in (0.01, 0.5, 0.99):
            mask = akl_core.head_mask(teacher, mu=mu, boundary=boundary)
            assert mask.gather(-1, teacher.argmax(-1, keepdim=True)).all()
            ht = akl_core.head_tail(student, teacher, mu=mu, boundary=boundary)
            tvd = akl_core.divergence("tvd", student, teacher)
            torch.testing.assert_close(ht.g_head + ht.g_tail, 2 * tvd, rtol=1e-5, atol=1e-6)
            assert ((ht.w >= 0) & (ht.w <= 1)).all()


def test_weight_is_half_when_student_equals_teacher():
    _, teacher = logits_pair((4, 25), seed=3)
    ht = akl_core.head_tail(teacher.clone(), teacher)
    assert torch.equal(ht.w, torch.full_like(ht.w, 0.5))
    assert (ht.g_head == 0).all() and (ht.g_tail == 0).all()


def test_temperature_changes_the_split():
    _, teacher = logits_pair((1, 200), seed=4, scale=2.0)
    cold = akl_core.head_tail(teacher, teacher, temperature=0.5).head_size
    hot = akl_core.head_tail(teacher, teacher, temperature=4.0).head_size
    assert cold.item() < hot.item()


def test_stage_sizes_are_small_enough_to_matter():
    assert headtail._TOPK_STAGES[0] <= 64
    assert list(headtail._TOPK_STAGES) == sorted(headtail._TOPK_STAGES)


def test_diagnostics_carry_no_gradient_and_keep_shape():
    student, teacher = logits_pair((2, 3, 10), seed=5)
    s = student.clone().requires_grad_(True)
    ht = akl_core.head_tail(s, teacher)
    for name, value in ht.to_dict().items():
        assert value.shape == (2, 3), name
        assert not value.requires_grad, name
    assert ht.head_size.dtype == torch.long


def test_empty_positions():
    student = torch.zeros(0, 10)
    ht = akl_core.head_tail(student, student)
    assert ht.w.shape == (0,)


def test_l1_distance_sums_in_blocks_to_float32_accuracy():
    # cdist's single running float32 total per 49152-entry row is ~1e-4 off here; blocks ~3e-6
    g = torch.Generator().manual_seed(0)
    q, p = (torch.softmax(torch.randn(16, 49152, generator=g, dtype=torch.float64) * 4, -1)
            for _ in range(2))
    q32, p32 = q.float(), p.float()
    exact = (q32.double() - p32.double()).abs().sum(-1)
    rel = ((headtail.l1_distance(q32, p32).double() - exact).abs() / exact).max()
    assert rel < 1e-5
    assert headtail.l1_block(49152) == 2048 and headtail.l1_block(151936) == 1187
    assert headtail.l1_block(4099) == 4099 and headtail.l1_block(300) == 300  # no block: whole rows
    # a vocabulary without a block, rows that are not contiguous, no rows: the same sums
    for a, b in ((q32[:, :4099], p32[:, :4099]), (q32[:, ::2], p32[:, ::2]),
                 (q32[:0], p32[:0])):
        want = (a.double() - b.double()).abs().sum(-1)
        torch.testing.assert_close(headtail.l1_distance(a, b).double(), want, rtol=1e-4, atol=1e-7)
