"""distillation_loss: masking, reductions, chunking, identities, and clear errors."""

from __future__ import annotations

import pytest
import torch

import akl_core
from akl_core import losses
from tests import reference as ref
from tests.helpers import logits_pair

# --- reductions and masks ------------------------------------------------------------------


def test_mean_pools_valid_positions_over_the_batch():
    student, teacher = logits_pair((2, 5, 30), seed=1)
    labels = torch.tensor([[1, 2, -100, -100, -100], [3, 4, 5, 6, -100]])
    per_token = akl_core.divergence("akl", student, teacher)
    valid = labels != -100
    loss = akl_core.distillation_loss(student, teacher, labels=labels)
    expected = per_token[valid].sum() / valid.sum()  # pooled, not the mean of row means
    torch.testing.assert_close(loss, expected)
    row_means = torch.stack([per_token[i][valid[i]].mean() for i in range(2)]).mean()
    assert abs(float(loss - row_means)) > 1e-4


def test_sum_none_and_num_items():
    student, teacher = logits_pair((3, 4, 20), seed=2)
    mask = torch.tensor([[1, 1, 0, 1], [0, 0, 0, 0], [1, 0, 1, 1]], dtype=torch.bool)
    per_token = akl_core.divergence("rkl", student, teacher)
    none = akl_core.distillation_loss(student, teacher, loss="rkl", mask=mask, reduction="none")
    torch.testing.assert_close(none, torch.where(mask, per_token, 0.0))
    total = akl_core.distillation_loss(student, teacher, loss="rkl", mask=mask, reduction="sum")
    torch.testing.assert_close(total, per_token[mask].sum())
    scaled = akl_core.distillation_loss(student, teacher, loss="rkl", mask=mask, num_items=10)
    torch.testing.assert_close(scaled, per_token[mask].sum() / 10)


def test_labels_and_mask_combine():
    student, teacher = logits_pair((1, 4, 12), seed=3)
    labels = torch.tensor([[5, -100, 7, 8]])
    mask = torch.tensor([[1, 1, 0, 1]])
    loss = akl_core.distillation_loss(student, teacher, loss="fkl", labels=labels, mask=mask)
    per_token = akl_core.divergence("fkl", student, teacher)
    torch.testing.assert_close(loss, (per_token[0, 0] + per_token[0, 3]) / 2)


def test_custom_ignore_index():
    student, teacher = logits_pair((1, 3, 12), seed=3)
    labels = torch.tensor([[0, 5, 0]])
    loss = akl_core.distillation_loss(student, teacher, loss="tvd", labels=labels, ignore_index=0)
    torch.testing.assert_close(loss, akl_core.divergence("tvd", student, teacher)[0, 1])


def test_masked_positions_get_no_gradient():
    student, teacher = logits_pair((2, 6, 15), seed=4)
    labels = torch.tensor([[1] * 3 + [-100] * 3, [-100] * 2 + [1] * 4])
    for name in akl_core.LOSSES:
        s = student.clone().requires_grad_(True)
        akl_core.distillation_loss(s, teacher, loss=name, labels=labels).backward()
        assert (s.grad[labels == -100] == 0).all(), name
        assert (s.grad[labels != -100].abs().sum(-1) > 0).all(), name


def test_all_positions_masked_gives_zero_not_nan():
    student, teacher = logits_pair((2, 3, 10), seed=5)
    labels = torch.full((2, 3), -100)
    s = student.clone().requires_grad_(True)
    for reduction in ("mean", "sum"):
        loss = akl_core.distillation_loss(s, teacher, labels=labels, reduction=reduction)
        assert loss.item() == 0.0
        loss.backward()
        assert (s.grad == 0).all()


@pytest.mark.parametrize("name", list(akl_core.LOSSES))
def test_chunking_does_not_change_results(name, monkeypatch):
    student, teacher = logits_pair((7, 33), seed=6, scale=2.0)
    labels = torch.tensor([1, -100, 2, 3, -100, 4, 5])
    outs = []
    for chunk in (1 << 20, 33 * 2, 33):  # one chunk, chunks of 2 rows, of 1 row
        monkeypatch.setattr(losses, "_CHUNK_ELEMENTS", chunk)
        s = student.clone().requires_grad_(True)
        loss = akl_core.distillation_loss(s, teacher, loss=name, labels=labels)
        loss.backward()
        outs.append((loss.detach(), s.grad))
    for loss, grad in outs[1:]:
        torch.testing.assert_close(loss, outs[0][0])
        torch.testing.assert_close(grad, outs[0][1])


def test_distillation_loss_matches_reference_mean():
    student, teacher = logits_pair((3, 5, 25), seed=7, scale=2.0, temperature=2.0)
    labels = torch.randint(0, 5, (3, 5))
    labels[0, :2] = -100
    valid = labels != -100
    for name in akl_core.LOSSES:
        loss = akl_core.distillation_loss(student, teacher, loss=name, labels=labels,
                                          temperature=2.0)
        expected = ref.reference_value(name, student, teacher, 2.0)[valid].mean()
        torch.testing.assert_close(loss.double(), expected, rtol=2e-4, atol=2e-5)


def test_vocab_size_cuts_padded_vocabularies():
    student, teacher = logits_pair((2, 40), seed=8)
    padded_student = torch.cat([student, torch.randn(2, 8)], dim=-1)
    loss = akl_core.distillation_loss(padded_student, teacher, vocab_size=40)
    torch.testing.assert_close(loss, akl_core.distillation_loss(student, teacher))


# --- identities ----------------------------------------------------------------------------

ALL_PARAMS = [
    ("fkl", {}), ("rkl", {}), ("fkl_rkl", {"lam": 0.3}), ("akl", {}),
    ("akl", {"boundary": "paper", "mu": 0.7}), ("akl_r", {}), ("jsd", {"beta": 0.3}),
    ("jsd", {"beta": 0.3, "normalized": True}), ("tvd", {}), ("skl", {}), ("srkl", {}),
    ("ab", {}), ("ab", {"alpha": 0.0, "beta": 0.0}), ("ab", {"alpha": 0.3, "beta": 0.0}),
    ("taid", {}), ("todi", {}), ("todi", {"beta": 0.0}),
]


@pytest.mark.parametrize("name,params", ALL_PARAMS)
def test_zero_when_student_equals_teacher(name, params):
    _, teacher = logits_pair((4, 3, 50), seed=9, scale=3.0)
    s = teacher.clone().requires_grad_(True)
    value = akl_core.divergence(name, s, teacher, **params)
    value.sum().backward()
    assert value.abs().max() < 1e-6
    assert s.grad.abs().max() < 1e-6


def test_jsd_endpoints_and_limits():
    student, teacher = logits_pair((5, 30), seed=10, scale=2.0, dtype=torch.float64)
    fkl = akl_core.divergence("fkl", student, teacher)
    rkl = akl_core.divergence("rkl", student, teacher)
    torch.testing.assert_close(akl_core.divergence("jsd", student, teacher, beta=0.0), fkl)
    torch.testing.assert_close(akl_core.divergence("jsd", student, teacher, beta=1.0), rkl)
    # the normalised form converges at rate O(beta * max q/p): 1e-7 is close enough here
    near0 = akl_core.divergence("jsd", student, teacher, beta=1e-7, normalized=True)
    near1 = akl_core.divergence("jsd", student, teacher, beta=1 - 1e-7, normalized=True)
    torch.testing.assert_close(near0, fkl, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(near1, rkl, rtol=1e-4, atol=1e-6)
    # unnormalised: it tends to 0 at the ends, hence the documented jump
    assert akl_core.divergence("jsd", student, teacher, beta=1e-6).abs().max() < 1e-4


def test_ab_endpoints_and_branch_continuity():
    student, teacher = logits_pair((5, 30), seed=11, scale=2.0, dtype=torch.float64)
    d = lambda **kw: akl_core.divergence("ab", student, teacher, **kw)  # noqa: E731
    torch.testing.assert_close(d(alpha=1.0, beta=0.0), akl_core.divergence("fkl", student, teacher))
    torch.testing.assert_close(d(alpha=0.0, beta=1.0), akl_core.divergence("rkl", student, teacher))
    for a, b in [(0.5, 0.0), (0.0, 0.5), (0.0, 0.0), (1.0, 0.0)]:
        nearby = d(alpha=max(a, 1e-7) if a == 0 else a, beta=max(b, 1e-7) if b == 0 else b)
        torch.testing.assert_close(nearby, d(alpha=a, beta=b), rtol=1e-5, atol=1e-6)


def test_ab_is_accurate_when_student_is_close_to_teacher():
    """The expm1 form keeps relative accuracy where p^a q^b terms nearly cancel."""
    _, teacher = logits_pair((3, 2000), seed=12, dtype=torch.float64)
    student = teacher + 1e-3 * torch.randn(3, 2000, dtype=torch.float64)
    value64 = akl_core.divergence("ab", student, teacher, alpha=0.1, beta=0.1)
    value32 = akl_core.divergence("ab", student.float(), teacher.float(), alpha=0.1, beta=0.1)
    torch.testing.assert_close(value32.double(), value64, rtol=2e-2, atol=1e-9)


def test_fkl_rkl_endpoints_and_akl_r_swaps_weights():
    student, teacher = logits_pair((6, 25), seed=13, scale=2.0)
    fkl = akl_core.divergence("fkl", student, teacher)
    rkl = akl_core.divergence("rkl", student, teacher)
    torch.testing.assert_close(akl_core.divergence("fkl_rkl", student, teacher, lam=0.0), fkl)
    torch.testing.assert_close(akl_core.divergence("fkl_rkl", student, teacher, lam=1.0), rkl)
    w = akl_core.head_tail(student, teacher).w
    torch.testing.assert_close(akl_core.divergence("akl", student, teacher), w * fkl + (1 - w) * rkl)
    torch.testing.assert_close(akl_core.divergence("akl_r", student, teacher),
                               (1 - w) * fkl + w * rkl)


def test_per_token_divergences_lists_the_catalogue():
    student, teacher = logits_pair((2, 3, 20), seed=14)
    values = akl_core.per_token_divergences(student, teacher)
    assert set(values) == set(akl_core.LOSSES)
    for name, value in values.items():
        torch.testing.assert_close(value, akl_core.divergence(name, student, teacher))


# --- registry and TAID schedule ------------------------------------------------------------


def test_registry_describes_every_loss():
    for name, spec in akl_core.LOSSES.items():
        assert spec.name == name and spec.description and spec.formula
        for pname, pspec in spec.params.items():
            assert pspec.name == pname
            assert pspec.validate(pspec.default, name) == pspec.default
            if pspec.choices is None:
                assert pspec.low <= pspec.default <= pspec.high
    assert akl_core.LOSSES["akl"].params["mu"].range_text() == "(0, 0.9999]"
    assert akl_core.resolve_params("jsd") == {"beta": 0.5, "normalized": False}


def test_taid_schedule_grows_monotonically_to_t_end():
    schedule = akl_core.TAIDSchedule(t_start=0.4, t_end=1.0, step_size=0.05)
    ts = [schedule.t]
    for step in range(1, 101):
        ts.append(schedule.update(loss=1.0 / step, step=step, total_steps=100))
    assert ts[0] == 0.4 and ts[-1] == pytest.approx(1.0)
    assert all(b >= a for a, b in zip(ts, ts[1:]))
    linear = akl_core.TAIDSchedule(t_start=0.4, adaptive=False)
    assert linear.update(1.0, step=50, total_steps=100) == pytest.approx(0.7)
    with pytest.raises(ValueError, match="t_start"):
        akl_core.TAIDSchedule(t_start=1.5)


# --- bad input ------------------------------------------------------------------------------


def _pair():
    return logits_pair((2, 3, 10), seed=15)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"loss": "kl"}, "unknown loss 'kl'; known losses: fkl, rkl"),
        ({"loss": "akl", "mu": 0.0}, r"mu must be in \(0, 0.9999\]"),
        ({"loss": "akl", "mu": 1.2}, r"mu must be in \(0, 0.9999\]"),
        ({"loss": "akl", "boundary": "middle"}, "boundary must be one of"),
        ({"temperature": 0.0}, "temperature must be a finite number > 0"),
        ({"temperature": -1.0}, "temperature must be a finite number > 0"),
        ({"loss": "jsd", "beta": 1.5}, r"beta must be in \[0, 1\]"),
        ({"loss": "jsd", "normalized": "yes"}, "normalized must be one of"),
        ({"loss": "skl", "alpha": 1.0}, r"alpha must be in \[0, 1\)"),
        ({"loss": "ab", "alpha": -0.5}, r"alpha must be in \[0, 1\]"),
        ({"loss": "taid", "t": 2}, r"t must be in \[0, 1\]"),
        ({"loss": "todi", "beta": -1.0}, r"beta must be in \[0, 100\]"),
        ({"loss": "fkl", "mu": 0.5}, "unknown parameter"),
        ({"reduction": "avg"}, "reduction must be one of"),
        ({"labels": torch.zeros(2, 4, dtype=torch.long)}, r"labels has shape \(2, 4\)"),
        ({"mask": torch.ones(3, 3)}, r"mask has shape \(3, 3\)"),
        ({"num_items": 0}, "num_items must be > 0"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, match):
    student, teacher = _pair()
    with pytest.raises(ValueError, match=match):
        akl_core.distillation_loss(student, teacher, **kwargs)


def test_shape_and_vocab_mismatch_messages():
    student, teacher = _pair()
    with pytest.raises(ValueError, match="shape mismatch"):
        akl_core.divergence("fkl", student[:1], teacher)
    with pytest.raises(ValueError, match="student logits have 12 entries, teacher logits 10"):
        akl_core.divergence("fkl", torch.randn(2, 3, 12), teacher)
    with pytest.raises(ValueError, match="vocab_size=11 exceeds"):
        akl_core.divergence("fkl", student, teacher, vocab_size=11)
    with pytest.raises(ValueError, match="must be a torch.Tensor"):
        akl_core.divergence("fkl", student.tolist(), teacher)
    with pytest.raises(ValueError, match="float16, bfloat16, float32 or float64"):
        akl_core.divergence("fkl", student.long(), teacher.long())


def test_nan_logits_raise_instead_of_returning_nan():
    student, teacher = _pair()
    teacher[0, 1, 3] = float("nan")
    with pytest.raises(ValueError, match="produced NaN"):
        akl_core.distillation_loss(student, teacher)
    student2, teacher2 = _pair()
    student2[1, 0, :] = float("-inf")
    with pytest.raises(ValueError, match="all -inf"):
        akl_core.distillation_loss(student2, teacher2, loss="rkl")


def test_head_tail_validates_too():
    student, teacher = _pair()
    with pytest.raises(ValueError, match=r"mu must be in \(0, 0.9999\]"):
        akl_core.head_tail(student, teacher, mu=1.0)
    with pytest.raises(ValueError, match="temperature"):
        akl_core.head_tail(student, teacher, temperature=float("nan"))


# --- chunking, the chunk rule, and the saved gradient ---------------------------------------


@pytest.mark.parametrize("name", list(akl_core.LOSSES))
def test_chunk_size_argument_does_not_change_results(name):
    student, teacher = logits_pair((2, 5, 200), seed=16, scale=2.0)
    teacher[0, 0] *= 0.02  # a head longer than the first top-k stage (the deferred pass)
    labels = torch.tensor([[1, -100, 2, 3, 4], [-100, 5, 6, -100, 7]])
    outs = []
    for chunk_size in (None, 1, 3, 64):
        s = student.clone().requires_grad_(True)
        loss = akl_core.distillation_loss(s, teacher, loss=name, labels=labels,
                                          chunk_size=chunk_size)
        loss.backward()
        s_all = student.clone().requires_grad_(True)  # no mask: the in-place gradient path
        values = akl_core.divergence(name, s_all, teacher, chunk_size=chunk_size)
        values.sum().backward()
        outs.append((loss.detach(), s.grad, values.detach(), s_all.grad))
    for out in outs[1:]:
        for got, expected in zip(out, outs[0]):
            torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-7)
    ht = [akl_core.head_tail(student, teacher, chunk_size=c).to_dict() for c in (None, 2)]
    for field, value in ht[0].items():
        torch.testing.assert_close(ht[1][field], value, rtol=1e-6, atol=1e-7)
    per = [akl_core.per_token_divergences(student, teacher, names=[name], chunk_size=c)
           for c in (None, 4)]
    torch.testing.assert_close(per[1][name], per[0][name], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("bad", [0, -2, 1.5, True, "8"])
def test_chunk_size_is_validated(bad):
    student, teacher = _pair()
    message = "chunk_size must be a positive int"
    with pytest.raises(ValueError, match=message):
        akl_core.distillation_loss(student, teacher, chunk_size=bad)
    with pytest.raises(ValueError, match=message):
        akl_core.divergence("fkl", student, teacher, chunk_size=bad)
    with pytest.raises(ValueError, match=message):
        akl_core.head_tail(student, teacher, chunk_size=bad)
    with pytest.raises(ValueError, match=message):
        akl_core.per_token_divergences(student, teacher, chunk_size=bad)


def test_automatic_chunks_stay_within_the_memory_budget():
    """Chunk buffers <= _CHUNK_MEMORY x the logits (so <= 1.5x with the gradient) for large
    inputs; small inputs get the _CHUNK_ELEMENTS floor instead (a few MiB): few chunks."""
    for n, vocab, dtype, itemsize, buffers in [(2048, 49152, torch.float32, 4, 4),
                                               (4096, 151936, torch.float32, 2, 5),
                                               (2048, 32000, torch.float64, 8, 16)]:
        rows = losses.chunk_rows(n, vocab, itemsize, dtype, buffers)
        chunk_bytes = rows * vocab * buffers * torch.finfo(dtype).bits // 8
        assert chunk_bytes <= losses._CHUNK_MEMORY * n * vocab * itemsize
        assert rows >= losses._CHUNK_ELEMENTS // vocab
        assert n / rows <= 40  # not thousands of tiny chunks
    assert losses.chunk_rows(6, 1000, 4, torch.float32, 4) == 6  # small input: one chunk
    rows = losses.chunk_rows(64, 49152, 4, torch.float32, 4)
    assert rows == losses._CHUNK_ELEMENTS // 49152  # the floor: 4 MiB per buffer


def test_the_gradient_buffer_is_handed_over_without_a_copy_and_stays_exact():
    student, teacher = logits_pair((4, 50), seed=17, scale=2.0)
    s = student.clone().requires_grad_(True)
    akl_core.distillation_loss(s, teacher).backward()
    once = s.grad.clone()
    # retain_graph: a second backward gives the same gradient again (accumulated)
    s2 = student.clone().requires_grad_(True)
    loss = akl_core.distillation_loss(s2, teacher)
    loss.backward(retain_graph=True)
    loss.backward()
    torch.testing.assert_close(s2.grad, 2 * once)
    # an incoming gradient other than 1, and per-position weights, scale a copy
    s3 = student.clone().requires_grad_(True)
    (3.0 * akl_core.distillation_loss(s3, teacher)).backward()
    torch.testing.assert_close(s3.grad, 3 * once)
    s4 = student.clone().requires_grad_(True)
    weights = torch.tensor([0.0, 1.0, 2.0, 0.5])
    (akl_core.divergence("akl", s4, teacher) * weights).sum().backward()
    s5 = student.clone().requires_grad_(True)
    akl_core.divergence("akl", s5, teacher).sum().backward()
    torch.testing.assert_close(s4.grad, s5.grad * weights.unsqueeze(-1))


def test_head_search_without_host_syncs_matches(monkeypatch):
    """Off the CPU the fast head search runs top-k on every row (no host sync); forced here on
    the CPU, it must give the same weights, values and gradients."""
    from akl_core import headtail

    student, teacher = logits_pair((3, 4, 300), seed=18, scale=1.0)
    teacher[0, 0] *= 0.02
    results = []
    for host_select in (True, False):
        monkeypatch.setattr(headtail, "_select_on_host", lambda device, flag=host_select: flag)
        s = student.clone().requires_grad_(True)
        loss, stats = akl_core.distillation_loss(s, teacher, return_stats=True)
        loss.backward()
        results.append((loss.detach(), s.grad, stats.w, stats.head_size))
    for got, expected in zip(results[1], results[0]):
        torch.testing.assert_close(got, expected)
