"""akl_core.lab.analysis: regions by teacher rank, closeness, per-entry gradients, the w <= 0.5
bound, boundary rules, sweeps and multi-seed fits, each against a naive re-computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import akl_core
from akl_core.lab import analysis
from tests import reference as ref
from tests.helpers import logits_pair


def _rows(n=5, v=60, seed=0, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, v, generator=g) * scale, torch.randn(n, v, generator=g) * scale


def test_teacher_ranks_and_regions_partition_the_vocabulary():
    student, teacher = _rows()
    ranks = analysis.teacher_ranks(teacher)
    naive = np.argsort(np.argsort(-teacher.numpy(), axis=-1), axis=-1)
    np.testing.assert_array_equal(ranks.numpy(), naive)
    regions = analysis.rank_regions(teacher, far_rank=10, mu=0.5)
    head, near, far = regions["head"], regions["near"], regions["far"]
    assert torch.equal(head | near | far, torch.ones_like(head))
    assert not (head & near).any() and not (head & far).any() and not (near & far).any()
    assert torch.equal(head, akl_core.head_mask(teacher, mu=0.5))
    assert torch.equal(far, (ranks >= 10) & ~head)
    with pytest.raises(ValueError, match="far_rank"):
        analysis.rank_regions(teacher, far_rank=0)
    with pytest.raises(ValueError, match="no far tail"):
        analysis.rank_regions(teacher, far_rank=60)


def test_closeness_matches_a_naive_computation():
    student, teacher = _rows(seed=1)
    regions = analysis.rank_regions(teacher, far_rank=20)
    got = analysis.closeness(student, teacher, regions)
    p = torch.softmax(teacher.double(), -1).numpy()
    q = torch.softmax(student.double(), -1).numpy()
    for name, mask in regions.items():
        m = mask.numpy()
        np.testing.assert_allclose(got[f"l1_{name}"], (np.abs(p - q) * m).sum(-1), rtol=1e-4)
        np.testing.assert_allclose(got[f"logabs_{name}"],
                                   (np.abs(np.log(q) - np.log(p)) * m).sum(-1) / m.sum(-1),
                                   rtol=1e-4)
    with pytest.raises(ValueError, match="bool mask"):
        analysis.closeness(student, teacher, {"x": torch.zeros(2, 2, dtype=torch.bool)})


def test_gradients_are_the_closed_forms():
    student, teacher = logits_pair((3, 17), seed=4, dtype=torch.float64, scale=2.0)
    grads = analysis.loss_gradients(student, teacher, ["fkl", "rkl", "akl"])
    p, q = ref.probs(teacher), ref.probs(student)
    torch.testing.assert_close(grads["fkl"], q - p)
    rkl = ref.kl(q, p)[:, None]
    g_rkl = q * (q.log() - p.log() - rkl)
    torch.testing.assert_close(grads["rkl"], g_rkl)
    _, _, w = ref.akl_parts(p, q)
    torch.testing.assert_close(grads["akl"], w[:, None] * (q - p) + (1 - w[:, None]) * g_rkl)
    with pytest.raises(ValueError, match="unknown loss"):
        analysis.loss_gradients(student, teacher, ["nope"])


def test_gradient_by_rank_orders_by_teacher_probability():
    student, teacher = _rows(n=1, v=30, seed=2)
    out = analysis.gradient_by_rank(student, teacher, ["fkl", "rkl"])
    assert list(out["rank"]) == list(range(1, 31))
    assert (np.diff(out["p"]) <= 0).all()
    np.testing.assert_allclose(out["fkl"], out["q"] - out["p"], atol=1e-6)
    with pytest.raises(ValueError, match="one row"):
        analysis.gradient_by_rank(*_rows(n=2), ["fkl"])


def test_gradient_sign_stats_count_the_rkl_flip():
    student, teacher = logits_pair((4, 25), seed=6, dtype=torch.float64, scale=2.0)
    stats = analysis.gradient_sign_stats(student, teacher)
    assert stats["fkl"] == {"over_pushed_up": 0.0, "over_pushed_up_mass": 0.0,
                            "under_pushed_down": 0.0}
    p, q = ref.probs(teacher), ref.probs(student)
    g = q * (q.log() - p.log() - ref.kl(q, p)[:, None])
    over = q > p
    assert stats["rkl"]["over_pushed_up"] == pytest.approx(float((over & (g < 0)).sum() / over.sum()))
    excess = (q - p).clamp_min(0)
    assert stats["rkl"]["over_pushed_up_mass"] == pytest.approx(
        float((excess * (over & (g < 0))).sum() / excess.sum()))
    assert stats["rkl"]["over_pushed_up"] > 0  # the flip exists on these rows
    # RKL never pushes an under-predicted token down: log(q/p) < 0 <= KL(q||p)
    assert stats["rkl"]["under_pushed_down"] == 0.0


def test_w_bound_holds_whenever_head_errors_have_one_sign():
    torch.manual_seed(0)
    teacher = (torch.randn(400, 40) * 2.5).double()
    student = teacher + torch.randn(400, 40).double() * 1.5
    stats = analysis.w_bound_stats(student, teacher)
    assert stats["max_w_one_sign"] <= 0.5 + 1e-6
    assert stats["w_above_half"] > 0  # these random students do mis-rank multi-token heads
    assert 0 < stats["mixed_head"] < 1 and 0 < stats["head_size_1"] < 1
    # every position with w > 0.5 has head errors of both signs (checked row by row)
    ht = akl_core.head_tail(student, teacher)
    head = akl_core.head_mask(teacher)
    d = torch.softmax(teacher, -1) - torch.softmax(student, -1)
    mixed = ((d > 0) & head).any(-1) & ((d < 0) & head).any(-1)
    above = ht.w > 0.5 + analysis.W_TOL
    assert above.any() and bool((mixed[above]).all())
    assert stats["mixed_head"] == pytest.approx(float(mixed.float().mean()))
    assert stats["w_above_half"] == pytest.approx(float(above.float().mean()))
    # under-predicting (or over-predicting) every head token: w <= 0.5 exactly
    over_head = teacher + 1.0 * head.float()
    assert analysis.w_bound_stats(over_head, teacher)["w_above_half"] == 0.0
    assert analysis.w_bound_stats(teacher - 1.0 * head.float(), teacher)["all_head_under"] == 1.0


def test_boundary_rules_differ_where_the_crossing_token_is_not_the_top_one():
    # p = [0.4, 0.35, 0.25]: reference head {0} (c_2 = 0.75 > 0.5), paper head {0, 1}
    teacher = torch.log(torch.tensor([[0.4, 0.35, 0.25], [0.7, 0.2, 0.1]]))
    student = torch.zeros(2, 3)
    out = analysis.boundary_comparison(student, teacher, mu=0.5)
    assert out["differ"] == pytest.approx(0.5)
    assert out["head_size_reference"] == pytest.approx(1.0)
    assert out["head_size_paper"] == pytest.approx(1.5)


def test_sweeps_move_the_head_the_right_way():
    student, teacher = _rows(n=20, v=80, seed=3, scale=2.0)
    mu_rows = analysis.mu_sweep(student, teacher, mus=(0.1, 0.5, 0.9))
    sizes = [r["head_size_mean"] for r in mu_rows]
    assert sizes == sorted(sizes) and sizes[-1] > sizes[0]
    t_rows = analysis.temperature_sweep(student, teacher, temperatures=(0.5, 1.0, 4.0))
    ent = [r["teacher_entropy"] for r in t_rows]
    assert ent == sorted(ent) and ent[-1] > ent[0]
    assert t_rows[-1]["head_size_mean"] >= t_rows[0]["head_size_mean"]


def test_head_first_over_steps_finds_the_flip():
    a = {"step": np.arange(6), "g_head": np.array([1.0, 0.5, 0.4, 0.5, 0.2, 0.1])}
    b = {"step": np.arange(6), "g_head": np.array([1.0, 0.9, 0.3, 0.4, 0.3, 0.2])}
    out = analysis.head_first_over_steps(a, b)
    assert out["first_below"] == [1, 4, 5]
    assert out["flip_step"] == 2
    with pytest.raises(ValueError, match="different steps"):
        analysis.head_first_over_steps(a, {"step": np.arange(5), "g_head": np.zeros(5)})


def test_fit_positions_by_seed_draws_rows_per_seed_and_starts_where_asked():
    student, teacher = _rows(n=12, v=50, seed=5)
    runs = analysis.fit_positions_by_seed(teacher, ["fkl", "rkl"], seeds=[0, 1], positions=4,
                                          steps=3, lr=0.1, far_rank=10, record_every=1)
    assert len(runs) == 2 and runs[0]["rows"] != runs[1]["rows"] and len(runs[0]["rows"]) == 4
    h = runs[0]["fkl"].history
    assert {"l1_near", "l1_far", "logabs_far", "g_head"} <= set(h)
    assert runs[0]["fkl"].final_q.size == 0  # dropped to save memory
    real = analysis.fit_positions_by_seed(teacher, ["fkl"], seeds=[1], positions=4, steps=2,
                                          lr=0.1, far_rank=10, start="student",
                                          student_logits=student, record_every=1,
                                          keep_final=True)[0]
    rows = real["rows"]
    expected = analysis.closeness(student[rows], teacher[rows],
                                  {"far": analysis.rank_regions(teacher[rows], far_rank=10)["far"]})
    assert real["fkl"].at(0, "l1_far") == pytest.approx(float(expected["l1_far"].mean()), rel=1e-4)
    assert real["fkl"].final_q.shape == (4, 50)
    with pytest.raises(ValueError, match="student_logits"):
        analysis.fit_positions_by_seed(teacher, ["fkl"], seeds=[0], positions=2, steps=1, lr=0.1,
                                       start="student", far_rank=10)
