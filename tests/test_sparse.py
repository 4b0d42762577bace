"""SparseTeacher: top-k teacher log-probs with an exact tail bucket (or DistillKit's renormalising).

Oracles: the dense path at k = V (both tails), the naive float64 reference on the bins
(tests/reference.py: sparse_bins, sparse_reference_value), gradcheck, and the data-processing
inequality (the bucket value is a lower bound of the dense one for the f-divergences).
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import akl_core
from akl_core import SparseTeacher, sparse
from tests import reference as ref
from tests.helpers import logits_pair
from tests.test_divergences import CASES, GRADCHECK_CASES

TAILS = ("bucket", "renormalize")
IDS = [f"{n}-{p}" for n, p in CASES]


def _grad(name, student, teacher, **kwargs):
    s = student.clone().requires_grad_(True)
    value = akl_core.divergence(name, s, teacher, **kwargs)
    value.sum().backward()
    return value.detach(), s.grad


def _reference(name, student, teacher: SparseTeacher, temperature=1.0, **params):
    zs = student.detach().double().requires_grad_(True)
    value = ref.sparse_reference_value(name, zs, teacher.indices, teacher.logprobs, teacher.tail,
                                       temperature, **params)
    value.sum().backward()
    return value.detach(), zs.grad


# --- construction -------------------------------------------------------------------------------


def test_attributes_reshape_and_row_selection():
    _, teacher = logits_pair((2, 3, 20), seed=1)
    t = SparseTeacher.from_logits(teacher, 5)
    assert t.k == 5 and t.shape == (2, 3) and t.tail == "bucket"
    assert t.indices.dtype == torch.long and t.logprobs.dtype == torch.float32
    assert t.flatten().shape == (6,) and t.reshape(3, 2).shape == (3, 2)
    assert t.reshape((6,)).shape == (6,)
    assert t[1].shape == (3,) and t[:, 1:].shape == (2, 2)
    rows = torch.tensor([4, 0, 5])
    picked = t.select(rows)
    # the fused path's slicing per chunk of rows keeps working
    k = t.k
    sliced = SparseTeacher(t.indices.reshape(-1, k)[rows], t.logprobs.reshape(-1, k)[rows],
                           tail=t.tail)
    assert torch.equal(picked.indices, sliced.indices)
    assert torch.equal(picked.logprobs, sliced.logprobs)
    assert picked.tail == sliced.tail == "bucket"
    assert SparseTeacher.from_logits(teacher, 5, tail="renormalize")[0].tail == "renormalize"
    assert "k=5" in repr(t)
    with pytest.raises(ValueError, match="by its positions only"):
        t[..., 0]


def test_from_logits_is_the_top_k_of_the_log_softmax():
    _, teacher = logits_pair((4, 30), seed=2, dtype=torch.float64)
    t = SparseTeacher.from_logits(teacher, 7)
    full = torch.log_softmax(teacher, -1)
    torch.testing.assert_close(t.logprobs, full.gather(-1, t.indices))
    assert torch.equal(t.indices, full.topk(7, -1).indices)


def _good():
    return torch.tensor([[3, 1, 7], [0, 2, 5]]), torch.log(torch.tensor([[0.5, 0.2, 0.1],
                                                                         [0.6, 0.3, 0.05]]))


@pytest.mark.parametrize(
    "change,match",
    [
        (lambda i, lp: (i.float(), lp), "indices must be integer token ids"),
        (lambda i, lp: (i, lp.long()), "logprobs must be float16"),
        (lambda i, lp: (i, lp[:, :2]), "must have the same shape"),
        (lambda i, lp: (i[:, :0], lp[:, :0]), "k >= 1"),
        (lambda i, lp: (i.tolist(), lp), "indices must be a torch.Tensor"),
        (lambda i, lp: (i - 1, lp), "indices must be >= 0"),
        (lambda i, lp: (torch.tensor([[3, 1, 7], [2, 2, 5]]), lp),
         "unique within each position; position 1 repeats"),
        (lambda i, lp: (i, lp.index_put((torch.tensor(0), torch.tensor(1)),
                                        torch.tensor(float("nan")))), "NaN or \\+inf"),
        (lambda i, lp: (i, -lp), "log-probabilities \\(<= 0\\)"),
        (lambda i, lp: (i, torch.log(torch.tensor([[0.5, 0.4, 0.3], [0.6, 0.3, 0.05]]))),
         "sum to 1.2 > 1 at position 0"),
        (lambda i, lp: (i, torch.full_like(lp, float("-inf"))), "all -inf at position 0"),
    ],
)
def test_bad_inputs_raise_clear_errors(change, match):
    indices, logprobs = change(*_good())
    with pytest.raises(ValueError, match=match):
        SparseTeacher(indices, logprobs)


def test_bad_tail_and_rounding_tolerance():
    indices, logprobs = _good()
    with pytest.raises(ValueError, match="tail must be one of"):
        SparseTeacher(indices, logprobs, tail="drop")
    # a top-k summing to 1 + 1e-4 (float32 rounding) is accepted
    SparseTeacher(indices, torch.log(torch.tensor([[0.6, 0.3, 0.1001], [0.6, 0.3, 0.05]])))


def test_bad_student_raises_clear_errors():
    student, teacher = logits_pair((2, 3, 20), seed=3)
    t = SparseTeacher.from_logits(teacher, 4)
    with pytest.raises(ValueError, match="shape mismatch"):
        akl_core.divergence("fkl", student[:1], t)
    with pytest.raises(ValueError, match="out of range for a student vocabulary of 10"):
        akl_core.divergence("fkl", student, t, vocab_size=10)
    with pytest.raises(ValueError, match="only 3"):
        akl_core.divergence("fkl", student[..., :3], t)
    with pytest.raises(ValueError, match="must be a torch.Tensor"):
        akl_core.distillation_loss(student.tolist(), t)
    with pytest.raises(ValueError, match="float16, bfloat16, float32 or float64"):
        akl_core.divergence("fkl", student.long(), t)
    with pytest.raises(ValueError, match="unknown loss"):
        akl_core.divergence("kl", student, t)


# --- k = V is the dense computation ---------------------------------------------------------


@pytest.mark.parametrize("tail", TAILS)
@pytest.mark.parametrize("name,params", CASES, ids=IDS)
def test_k_equal_to_vocabulary_is_the_dense_result(name, params, tail):
    for seed, (scale, temperature) in enumerate([(0.5, 1.0), (2.0, 0.7), (4.0, 2.5)]):
        student, teacher = logits_pair((3, 2, 17), seed=seed, scale=scale, temperature=temperature)
        t = SparseTeacher.from_logits(teacher, 17, tail=tail)
        value, grad = _grad(name, student, t, temperature=temperature, **params)
        dense_value, dense_grad = _grad(name, student, teacher, temperature=temperature, **params)
        torch.testing.assert_close(value, dense_value, rtol=2e-5, atol=2e-6)
        torch.testing.assert_close(grad, dense_grad, rtol=2e-5, atol=2e-6)


def test_k_equal_to_vocabulary_with_masked_entries_is_the_dense_result():
    """Masked (-inf) vocabulary entries in both: the empty bucket and the -inf top-k entries."""
    student, teacher = logits_pair((4, 12), seed=4, scale=1.5, masked=3)
    s2 = student.clone()
    s2[:, -3:] = torch.finfo(torch.float32).min  # finfo.min is masked too
    t = SparseTeacher(*reversed(torch.log_softmax(teacher, -1).topk(12, -1)))
    for name in akl_core.LOSSES:
        for tail in TAILS:
            tt = SparseTeacher(t.indices, t.logprobs, tail=tail)
            torch.testing.assert_close(akl_core.divergence(name, s2, tt),
                                       akl_core.divergence(name, student, teacher))


# --- k < V against the independent reference ------------------------------------------------


@pytest.mark.parametrize("tail", TAILS)
@pytest.mark.parametrize("name,params", CASES, ids=IDS)
def test_values_and_gradients_match_the_reference(name, params, tail):
    for seed, (k, scale, temperature) in enumerate([(1, 1.0, 1.0), (4, 2.0, 1.0), (9, 3.0, 2.0)]):
        student, teacher = logits_pair((2, 3, 25), seed=seed, scale=scale, dtype=torch.float64)
        t = SparseTeacher.from_logits(teacher, k, tail=tail)
        value, grad = _grad(name, student, t, temperature=temperature, **params)
        expected, expected_grad = _reference(name, student, t, temperature, **params)
        torch.testing.assert_close(value, expected, rtol=1e-9, atol=1e-11)
        torch.testing.assert_close(grad, expected_grad, rtol=1e-8, atol=1e-11)


@pytest.mark.parametrize("tail", TAILS)
def test_float32_student_matches_the_reference(tail):
    student, teacher = logits_pair((3, 4, 300), seed=5, scale=3.0)
    t = SparseTeacher.from_logits(teacher, 16, tail=tail)
    for name in akl_core.LOSSES:
        value, grad = _grad(name, student, t)
        expected, expected_grad = _reference(name, student, t)
        torch.testing.assert_close(value.double(), expected, rtol=2e-4, atol=2e-5)
        torch.testing.assert_close(grad.double(), expected_grad, rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("tail", TAILS)
@pytest.mark.parametrize("name,params", GRADCHECK_CASES,
                         ids=[f"{n}-{p}" for n, p in GRADCHECK_CASES])
def test_gradcheck_through_the_student_logits(name, params, tail):
    student, teacher = logits_pair((3, 8), seed=6, dtype=torch.float64)
    t = SparseTeacher.from_logits(teacher, 3, tail=tail)
    s = student.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda z: akl_core.divergence(name, z, t, temperature=1.3, **params), (s,)
    )


def test_renormalize_is_distillkits_convention():
    """Teacher softmax(logprobs / T) over its k tokens; student softmax(logits[idx] / T)."""
    student, teacher = logits_pair((2, 5, 40), seed=7, scale=2.0, dtype=torch.float64)
    t = SparseTeacher.from_logits(teacher, 6, tail="renormalize")
    p = torch.softmax(t.logprobs / 2.0, -1)
    log_q = torch.log_softmax(student.gather(-1, t.indices) / 2.0, -1)
    expected = (p * (p.log() - log_q)).sum(-1)
    value = akl_core.divergence("fkl", student, t, temperature=2.0)
    torch.testing.assert_close(value, expected, rtol=1e-12, atol=1e-13)
    # the student's mass outside the k tokens gets no gradient at all
    _, grad = _grad("fkl", student, t)
    outside = torch.ones_like(grad, dtype=torch.bool).scatter(-1, t.indices, False)
    assert (grad[outside] == 0).all()
    # ... unlike the bucket, which pushes it down (the teacher has little mass there)
    _, grad_bucket = _grad("fkl", student, SparseTeacher(t.indices, t.logprobs))
    assert grad_bucket[outside].abs().sum() > 0


# --- the bucket: a lower bound, precise, never in the head ------------------------------------

BOUNDED = ["fkl", "rkl", "jsd", "tvd", "skl", "srkl"]  # f-divergences: data processing


@settings(max_examples=80, deadline=None)
@given(
    name=st.sampled_from(BOUNDED),
    # 0, or at least the parameters' gap (ParamSpec.gap refuses (0, 1e-10) on purpose)
    param=st.floats(0.0, 0.95).filter(lambda x: x == 0.0 or x >= 1e-10),
    vocab=st.integers(2, 40),
    k_frac=st.floats(0.0, 1.0),
    scale=st.sampled_from([0.1, 1.0, 4.0, 12.0]),
    masked=st.integers(0, 2),
    seed=st.integers(0, 2**16),
)
def test_bucket_value_is_at_most_the_dense_value(name, param, vocab, k_frac, scale, masked, seed):
    g = torch.Generator().manual_seed(seed)
    student = torch.randn(3, vocab, generator=g, dtype=torch.float64) * scale
    teacher = torch.randn(3, vocab, generator=g, dtype=torch.float64) * scale
    masked = min(masked, vocab - 1)
    if masked:
        student[:, :masked] = float("-inf")
        teacher[:, :masked] = float("-inf")
    k = max(1, min(vocab - masked, round(k_frac * (vocab - masked))))
    params = {"jsd": {"beta": param}, "skl": {"alpha": param}, "srkl": {"alpha": param}}
    params = params.get(name, {})
    t = SparseTeacher.from_logits(teacher, k)
    bucket = akl_core.divergence(name, student, t, **params)
    dense = akl_core.divergence(name, student, teacher, **params)
    assert torch.isfinite(bucket).all() and (bucket >= -1e-12).all()
    # The bound is exact for exact log-probs. Stored ones carry rounding (float64: ~1e-16 times
    # |logsumexp|), so the bucket's mass 1 - sum(top-k) is known only to ~1e-14: rows whose
    # missing mass is below 1e-9 are left out (their value is exact up to that resolution).
    missing = 1 - torch.softmax(teacher, -1).gather(-1, t.indices).sum(-1)
    resolved = (missing > 1e-9) | (k == vocab - masked)
    assert (bucket <= dense + 1e-9 * (1 + dense.abs()))[resolved].all()


def test_renormalize_is_not_a_bound():
    """Why the bucket is the default: renormalising can overshoot the dense value.

    p = (0.6, 0.3 | 0.1), q = (0.5, 1e-9 | 0.5), top-2 kept: the renormalised FKL (6.06)
    exceeds the full one (5.80); the bucket's (5.80, the same bins here) does not.
    """
    teacher = torch.tensor([[0.6, 0.3, 0.1]], dtype=torch.float64).log()
    student = torch.tensor([[0.5 - 1e-9, 1e-9, 0.5]], dtype=torch.float64).log()
    dense = akl_core.divergence("fkl", student, teacher)
    renorm = akl_core.divergence("fkl", student,
                                 SparseTeacher.from_logits(teacher, 2, tail="renormalize"))
    bucket = akl_core.divergence("fkl", student, SparseTeacher.from_logits(teacher, 2))
    assert renorm.item() > dense.item() + 0.2
    assert bucket.item() <= dense.item() + 1e-12


def test_student_remaining_mass_is_computed_without_cancellation():
    """A float32 student with ~1e-9 of its mass outside the top-k: the bucket's log-mass is
    exact to float32 relative precision (1 - sum q would give 0 or rounding noise)."""
    teacher = torch.randn(4, 1000, dtype=torch.float64)
    t = SparseTeacher.from_logits(teacher, 3)
    student = torch.full((4, 1000), -15.0)
    student.scatter_(-1, t.indices, 10.0)  # outside mass ~ 997 e^-25 / 3 ~ 4e-9 per row
    s_bins, _, _ = sparse._chunk_bins(student, t, 1.0, torch.float32, keep=False)
    log_rest = torch.log_softmax(s_bins.double(), -1)[:, -1]
    z = student.double()
    outside = torch.ones_like(z, dtype=torch.bool).scatter(-1, t.indices, False)
    exact = torch.logsumexp(z.masked_fill(~outside, float("-inf")), -1) - torch.logsumexp(z, -1)
    torch.testing.assert_close(log_rest, exact, rtol=1e-6, atol=0)
    naive = 1 - torch.softmax(student, -1).gather(-1, t.indices).sum(-1)
    assert ((naive.double() - exact.exp()).abs() / exact.exp()).max() > 0.5


def test_teacher_mass_rounding_to_one_is_finite_and_empty_on_both_sides_when_the_student_agrees():
    student, teacher = logits_pair((3, 20), seed=9, scale=2.0)
    idx = torch.log_softmax(teacher, -1).topk(5, -1).indices
    logprobs = torch.log_softmax(teacher.gather(-1, idx), -1)  # sums to 1: no missing mass
    t = SparseTeacher(idx, logprobs)
    # the student has mass outside: the bucket keeps a tiny teacher mass (one ulp), finite
    for name in akl_core.LOSSES:
        assert torch.isfinite(akl_core.divergence(name, student, t)).all()
    # a student masked outside the top-k too: the bucket is empty on both sides
    masked = torch.full_like(student, float("-inf")).scatter(-1, idx, student.gather(-1, idx))
    renorm = SparseTeacher(idx, logprobs, tail="renormalize")
    for name in akl_core.LOSSES:
        torch.testing.assert_close(akl_core.divergence(name, masked, t),
                                   akl_core.divergence(name, masked, renorm))


@pytest.mark.parametrize("boundary", ["reference", "paper"])
def test_bucket_is_never_in_the_head(boundary):
    # top-2 mass 0.3 < mu: the head is the whole top-k, the bucket (0.7) stays in the tail
    indices = torch.tensor([[2, 0]])
    logprobs = torch.log(torch.tensor([[0.2, 0.1]]))
    student = torch.log(torch.tensor([[0.3, 0.1, 0.4, 0.2]]))
    t = SparseTeacher(indices, logprobs)
    ht = akl_core.head_tail(student, t, boundary=boundary)
    assert ht.head_size.item() == 2
    assert ht.head_mass.item() == pytest.approx(0.3)
    assert ht.g_head.item() == pytest.approx(abs(0.2 - 0.4) + abs(0.1 - 0.3))
    assert ht.g_tail.item() == pytest.approx(abs(0.7 - 0.3))
    w = 0.4 / 0.8
    p = torch.tensor([0.2, 0.1, 0.7])
    q = torch.tensor([0.4, 0.3, 0.3])
    fkl, rkl = (p * (p / q).log()).sum(), (q * (q / p).log()).sum()
    torch.testing.assert_close(akl_core.divergence("akl", student, t, boundary=boundary),
                               (w * fkl + (1 - w) * rkl).reshape(1))


@pytest.mark.parametrize("tail", TAILS)
def test_head_tail_with_a_sparse_teacher(tail):
    student, teacher = logits_pair((2, 3, 30), seed=10, scale=2.0, dtype=torch.float64)
    dense = akl_core.head_tail(student, teacher).to_dict()
    full = akl_core.head_tail(student, SparseTeacher.from_logits(teacher, 30, tail=tail))
    for key, value in full.to_dict().items():
        torch.testing.assert_close(value, dense[key], rtol=1e-10, atol=1e-12)
    t = SparseTeacher.from_logits(teacher, 6, tail=tail)
    ht = akl_core.head_tail(student, t, mu=0.3)
    p, q = ref.sparse_bins(student, t.indices, t.logprobs, tail)
    if tail == "bucket":
        g_head, g_tail, w = ref.akl_parts_bucket(p, q, 0.3)
    else:
        g_head, g_tail, w = ref.akl_parts(p, q, 0.3)
    torch.testing.assert_close(ht.g_head.reshape(-1), g_head)
    torch.testing.assert_close(ht.g_tail.reshape(-1), g_tail)
    torch.testing.assert_close(ht.w.reshape(-1), w)
    torch.testing.assert_close(ht.teacher_entropy.reshape(-1), -(p * p.log()).sum(-1))


# --- the loss API around it --------------------------------------------------------------------


@pytest.mark.parametrize("tail", TAILS)
def test_labels_mask_reduction_and_temperature(tail):
    student, teacher = logits_pair((2, 5, 30), seed=11, scale=2.0)
    t = SparseTeacher.from_logits(teacher, 4, tail=tail)
    labels = torch.tensor([[1, 2, -100, -100, 3], [4, -100, 5, 6, 7]])
    mask = torch.tensor([[1, 1, 1, 0, 1], [1, 1, 1, 1, 0]])
    valid = (labels != -100) & mask.bool()
    for name in ("akl", "rkl", "jsd", "todi"):
        per_token = akl_core.divergence(name, student, t, temperature=2.0)
        s = student.clone().requires_grad_(True)
        loss = akl_core.distillation_loss(s, t, loss=name, labels=labels, mask=mask,
                                          temperature=2.0)
        torch.testing.assert_close(loss, per_token[valid].mean())
        loss.backward()
        assert (s.grad[~valid] == 0).all() and (s.grad[valid].abs().sum(-1) > 0).all()
        none = akl_core.distillation_loss(student, t, loss=name, labels=labels, mask=mask,
                                          temperature=2.0, reduction="none")
        torch.testing.assert_close(none, torch.where(valid, per_token, 0.0))
        total = akl_core.distillation_loss(student, t, loss=name, labels=labels, mask=mask,
                                           temperature=2.0, reduction="sum")
        torch.testing.assert_close(total, per_token[valid].sum())
        scaled = akl_core.distillation_loss(student, t, loss=name, labels=labels,
                                            temperature=2.0, num_items=10)
        torch.testing.assert_close(scaled, per_token[labels != -100].sum() / 10)
    nothing = torch.full_like(labels, -100)
    s = student.clone().requires_grad_(True)
    loss = akl_core.distillation_loss(s, t, labels=nothing)
    loss.backward()
    assert loss.item() == 0.0 and (s.grad == 0).all()


@pytest.mark.parametrize("tail", TAILS)
def test_chunking_does_not_change_results(tail, monkeypatch):
    student, teacher = logits_pair((7, 33), seed=12, scale=2.0)
    t = SparseTeacher.from_logits(teacher, 5, tail=tail)
    labels = torch.tensor([1, -100, 2, 3, -100, 4, 5])
    outs = []
    for chunk in (1 << 21, 33 * 2, 33):
        monkeypatch.setattr(sparse, "_CHUNK_ELEMENTS", chunk)
        for name in ("akl", "ab", "taid"):
            s = student.clone().requires_grad_(True)
            loss = akl_core.distillation_loss(s, t, loss=name, labels=labels)
            loss.backward()
            outs.append((chunk, name, loss.detach(), s.grad))
    for _chunk, name, loss, grad in outs[3:]:
        first = next(o for o in outs if o[1] == name)
        torch.testing.assert_close(loss, first[2])
        torch.testing.assert_close(grad, first[3])


def test_per_token_divergences_with_a_sparse_teacher():
    student, teacher = logits_pair((2, 3, 20), seed=13)
    t = SparseTeacher.from_logits(teacher, 5)
    values = akl_core.per_token_divergences(student, t)
    assert set(values) == set(akl_core.LOSSES)
    for name, value in values.items():
        torch.testing.assert_close(value, akl_core.divergence(name, student, t))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_students(dtype):
    student, teacher = logits_pair((3, 4, 50), seed=14, scale=2.0)
    t = SparseTeacher(*reversed(torch.log_softmax(teacher, -1).to(dtype).topk(8, -1)))
    s16 = student.to(dtype)
    for name in akl_core.LOSSES:
        s = s16.clone().requires_grad_(True)
        value = akl_core.divergence(name, s, t)
        value.sum().backward()
        assert value.dtype == torch.float32 and s.grad.dtype == dtype
        expected, _ = _reference(name, s16.float(), t)
        torch.testing.assert_close(value.double(), expected, rtol=1e-3, atol=1e-4)


def test_one_sided_zeros_on_the_bins_raise_like_the_dense_path():
    student, teacher = logits_pair((3, 20), seed=15)
    t = SparseTeacher.from_logits(teacher, 4)
    # a zero-probability teacher token among the top-k: RKL-type losses are infinite there
    logprobs = t.logprobs.clone()
    logprobs[1, 3] = float("-inf")
    zero = SparseTeacher(t.indices, logprobs)
    with pytest.raises(ValueError, match="rkl is infinite at 1 position.*first: position 1"):
        akl_core.divergence("rkl", student, zero)
    assert torch.isfinite(akl_core.divergence("fkl", student, zero)).all()
    # a student masked at a top-k token: FKL-type losses are infinite there
    masked = student.clone()
    masked[2].scatter_(-1, t.indices[2, :1], torch.finfo(torch.float32).min)
    with pytest.raises(ValueError, match="fkl is infinite at 1 position.*student's probability"):
        akl_core.divergence("fkl", masked, t)
    assert torch.isfinite(akl_core.divergence("rkl", masked, t)).all()
    # a student masked everywhere outside the top-k while the teacher has mass there
    outside = torch.full_like(student, float("-inf")).scatter(-1, t.indices,
                                                              student.gather(-1, t.indices))
    with pytest.raises(ValueError, match="fkl is infinite at 3 position"):
        akl_core.divergence("fkl", outside, t)
    with pytest.raises(ValueError, match="all -inf"):
        akl_core.divergence("rkl", torch.full_like(student, float("-inf")), t)
    bad = student.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="produced NaN"):
        akl_core.divergence("rkl", bad, t)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("tail", TAILS)
def test_cuda_matches_cpu(tail):
    student, teacher = logits_pair((8, 1000), seed=16, scale=3.0)
    t = SparseTeacher.from_logits(teacher, 32, tail=tail)
    for name in akl_core.LOSSES:
        v_cpu, g_cpu = _grad(name, student, t)
        v_gpu, g_gpu = _grad(name, student.cuda(), t.to("cuda"))
        assert v_gpu.device.type == "cuda"
        torch.testing.assert_close(v_gpu.cpu(), v_cpu, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(g_gpu.cpu(), g_cpu, rtol=1e-4, atol=1e-5)
