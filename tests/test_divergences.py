"""Every divergence against the independent float64 reference: values and student gradients."""

from __future__ import annotations

import pytest
import torch
from torch.autograd.gradcheck import GradcheckError

import akl_core
from tests import reference as ref
from tests.helpers import logits_pair

SHAPES = [(6, 9), (2, 3, 17), (1, 1, 2), (4, 300)]
SCALES = [0.3, 1.0, 4.0]  # flat, medium, peaked distributions
TEMPERATURES = [0.7, 1.0, 2.5]

PARAM_CASES = {
    "fkl": [{}],
    "rkl": [{}],
    "fkl_rkl": [{"lam": 0.0}, {"lam": 0.3}, {"lam": 1.0}],
    "akl": [{}, {"mu": 0.3}, {"mu": 0.8, "boundary": "paper"}, {"boundary": "paper"}],
    "akl_r": [{}, {"mu": 0.8}],
    "jsd": [{"beta": 0.0}, {"beta": 0.2}, {"beta": 0.5, "normalized": True}, {"beta": 1.0}],
    "tvd": [{}],
    "skl": [{"alpha": 0.0}, {"alpha": 0.1}, {"alpha": 0.6}],
    "srkl": [{"alpha": 0.0}, {"alpha": 0.1}, {"alpha": 0.6}],
    "ab": [{"alpha": 0.5, "beta": 0.5}, {"alpha": 0.2, "beta": 0.9}, {"alpha": 1.0, "beta": 0.0},
           {"alpha": 0.0, "beta": 1.0}, {"alpha": 0.7, "beta": 0.0}, {"alpha": 0.0, "beta": 0.3},
           {"alpha": 0.0, "beta": 0.0}, {"alpha": 1.0, "beta": 1.0}],
    "taid": [{"t": 0.0}, {"t": 0.4}, {"t": 1.0}],
    "todi": [{}, {"beta": 0.0}, {"beta": 0.3}, {"beta": 5.0}],
}
CASES = [(name, params) for name, cases in PARAM_CASES.items() for params in cases]


def test_every_registered_loss_is_covered():
    assert set(PARAM_CASES) == set(akl_core.LOSSES)


def _reference_grad(name, student, teacher, temperature, params):
    zs = student.detach().double().requires_grad_(True)
    ref.reference_value(name, zs, teacher, temperature, **params).sum().backward()
    return zs.grad


@pytest.mark.parametrize("name,params", CASES, ids=[f"{n}-{p}" for n, p in CASES])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_values_and_gradients_match_reference(name, params, shape):
    for i, (scale, temperature) in enumerate(zip(SCALES, TEMPERATURES)):
        student, teacher = logits_pair(shape, seed=i, scale=scale, temperature=temperature)
        s = student.clone().requires_grad_(True)
        value = akl_core.divergence(name, s, teacher, temperature=temperature, **params)
        value.sum().backward()
        expected = ref.reference_value(name, student, teacher, temperature, **params)
        assert value.shape == shape[:-1]
        torch.testing.assert_close(value.double(), expected, rtol=2e-4, atol=2e-5)
        grad_ref = _reference_grad(name, student, teacher, temperature, params)
        torch.testing.assert_close(s.grad.double(), grad_ref, rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("name,params", CASES, ids=[f"{n}-{p}" for n, p in CASES])
def test_float64_matches_reference_tightly(name, params):
    student, teacher = logits_pair((5, 40), seed=7, scale=2.0, dtype=torch.float64)
    s = student.clone().requires_grad_(True)
    value = akl_core.divergence(name, s, teacher, **params)
    value.sum().backward()
    expected = ref.reference_value(name, student, teacher, **params)
    torch.testing.assert_close(value, expected, rtol=1e-9, atol=1e-11)
    grad_ref = _reference_grad(name, student, teacher, 1.0, params)
    torch.testing.assert_close(s.grad, grad_ref, rtol=1e-8, atol=1e-11)


@pytest.mark.parametrize("name,params", CASES, ids=[f"{n}-{p}" for n, p in CASES])
def test_masked_vocabulary_entries(name, params):
    """-inf entries (masked vocabulary, the same in both) contribute 0 and get 0 gradient."""
    student, teacher = logits_pair((4, 12), seed=3, scale=1.5, masked=3)
    s = student.clone().requires_grad_(True)
    value = akl_core.divergence(name, s, teacher, **params)
    value.sum().backward()
    assert torch.isfinite(value).all()
    assert torch.isfinite(s.grad).all()
    assert (s.grad[:, -3:] == 0).all()
    live_s, live_t = student[:, :-3], teacher[:, :-3]
    expected = ref.reference_value(name, live_s, live_t, **params)
    torch.testing.assert_close(value.double(), expected, rtol=2e-4, atol=2e-5)
    grad_ref = _reference_grad(name, live_s, live_t, 1.0, params)
    torch.testing.assert_close(s.grad[:, :-3].double(), grad_ref, rtol=2e-4, atol=2e-5)


def test_masked_with_finfo_min_like_huggingface():
    student, teacher = logits_pair((3, 10), seed=4)
    fmin = torch.finfo(torch.float32).min
    student[:, :2] = fmin
    teacher[:, :2] = fmin
    for name in akl_core.LOSSES:
        value = akl_core.divergence(name, student, teacher)
        expected = ref.reference_value(name, student[:, 2:], teacher[:, 2:])
        torch.testing.assert_close(value.double(), expected, rtol=2e-4, atol=2e-5)


# Losses with a detached part (AKL's weights, TAID's target, ToDi's per-entry weights) are
# not the full derivative of their value; ToDi with beta = 0 has constant weights 1/2.
STOP_GRADIENT = ("akl", "akl_r", "taid", "todi")
GRADCHECK_CASES = [
    (name, params) for name, params in CASES
    if name not in STOP_GRADIENT or (name == "todi" and params.get("beta") == 0.0)
]


@pytest.mark.parametrize("name,params", GRADCHECK_CASES, ids=[f"{n}-{p}" for n, p in GRADCHECK_CASES])
def test_gradcheck_float64(name, params):
    student, teacher = logits_pair((3, 6), seed=11, dtype=torch.float64)
    s = student.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda z: akl_core.divergence(name, z, teacher, temperature=1.3, **params), (s,)
    )


@pytest.mark.parametrize("name", STOP_GRADIENT)
def test_stop_gradient_losses_are_not_the_full_derivative(name):
    """AKL's weights, TAID's target and ToDi's weights are detached by definition, so their gradient is the
    frozen-weight derivative (checked against the reference above), NOT the full derivative
    of the value: gradcheck must fail here, which shows the detach is real."""
    student, teacher = logits_pair((3, 6), seed=11, dtype=torch.float64, scale=2.0)
    s = student.clone().requires_grad_(True)
    with pytest.raises(GradcheckError):
        torch.autograd.gradcheck(lambda z: akl_core.divergence(name, z, teacher), (s,))


def test_akl_frozen_weight_finite_differences():
    """d AKL / dz with w held at its value at z equals central finite differences."""
    student, teacher = logits_pair((2, 7), seed=5, dtype=torch.float64, scale=2.0)
    s = student.clone().requires_grad_(True)
    akl_core.divergence("akl", s, teacher).sum().backward()
    w = akl_core.head_tail(student, teacher).w
    fkl = lambda z: akl_core.divergence("fkl", z, teacher)  # noqa: E731
    rkl = lambda z: akl_core.divergence("rkl", z, teacher)  # noqa: E731
    eps = 1e-6
    for r in range(2):
        for j in range(7):
            plus, minus = student.clone(), student.clone()
            plus[r, j] += eps
            minus[r, j] -= eps
            frozen = lambda z: w * fkl(z) + (1 - w) * rkl(z)  # noqa: E731
            fd = (frozen(plus)[r] - frozen(minus)[r]) / (2 * eps)
            assert abs(float(fd) - float(s.grad[r, j])) < 1e-7


def test_akl_gradient_differs_from_attached_weights():
    """The oracle above could fail: with w attached the gradient is measurably different."""
    student, teacher = logits_pair((4, 9), seed=6, dtype=torch.float64, scale=2.0)
    s = student.clone().requires_grad_(True)
    akl_core.divergence("akl", s, teacher).sum().backward()
    zs = student.clone().requires_grad_(True)
    p, q = ref.probs(teacher), ref.probs(zs)
    head = ref.head_members(p, 0.5, "reference")
    gaps = (p - q).abs()  # NOT detached: the common bug
    w = (gaps * head).sum(-1) / gaps.sum(-1)
    (w * ref.kl(p, q) + (1 - w) * ref.kl(q, p)).sum().backward()
    assert (s.grad - zs.grad).abs().max() > 1e-4


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_inputs_are_computed_in_float32(dtype):
    student, teacher = logits_pair((3, 4, 50), seed=2, scale=2.0)
    s16, t16 = student.to(dtype), teacher.to(dtype)
    for name in akl_core.LOSSES:
        s = s16.clone().requires_grad_(True)
        value = akl_core.divergence(name, s, t16)
        value.sum().backward()
        assert value.dtype == torch.float32
        assert s.grad.dtype == dtype
        expected = ref.reference_value(name, s16.float(), t16.float())
        torch.testing.assert_close(value.double(), expected, rtol=1e-3, atol=1e-4)


def test_teacher_never_gets_gradients():
    student, teacher = logits_pair((3, 20), seed=1)
    t = teacher.clone().requires_grad_(True)
    for name in akl_core.LOSSES:
        s = student.clone().requires_grad_(True)
        akl_core.divergence(name, s, t).sum().backward()
        assert t.grad is None
        assert s.grad is not None


def test_no_grad_inputs_give_plain_values():
    student, teacher = logits_pair((3, 20), seed=1)
    value = akl_core.divergence("akl", student, teacher)
    assert not value.requires_grad


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    student, teacher = logits_pair((8, 1000), seed=9, scale=3.0)
    for name in akl_core.LOSSES:
        s_cpu = student.clone().requires_grad_(True)
        s_gpu = student.cuda().requires_grad_(True)
        v_cpu = akl_core.divergence(name, s_cpu, teacher)
        v_gpu = akl_core.divergence(name, s_gpu, teacher.cuda())
        v_cpu.sum().backward()
        v_gpu.sum().backward()
        assert v_gpu.device.type == "cuda"
        torch.testing.assert_close(v_gpu.cpu(), v_cpu, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(s_gpu.grad.cpu(), s_cpu.grad, rtol=1e-4, atol=1e-5)


def test_autograd_kernel_extension_point_matches_closed_form_and_reference():
    """A new loss can start as a plain formula (autograd_kernel); through the chunk runner it
    must give the reference value and gradient, like the closed-form kernel."""
    from akl_core import losses
    from akl_core.divergences import autograd_kernel, jsd

    @autograd_kernel
    def jsd_by_autograd(d, beta, normalized):
        log_m = (beta * d.p + (1 - beta) * d.q).log()
        return (beta * (d.p * (d.lp - log_m)).sum(-1)
                + (1 - beta) * (d.q * (d.lq - log_m)).sum(-1))

    student, teacher = logits_pair((5, 40), seed=19, scale=2.0, dtype=torch.float64)
    params = {"beta": 0.3, "normalized": False}
    expected = ref.reference_value("jsd", student, teacher, 1.5, beta=0.3)
    grad_ref = _reference_grad("jsd", student, teacher, 1.5, {"beta": 0.3})
    for kernel in (jsd, jsd_by_autograd):
        values, grad, _ = losses.run_chunks(student, teacher, kernel, params, temperature=1.5,
                                            need_grad=True, chunk_size=2)
        torch.testing.assert_close(values, expected, rtol=1e-9, atol=1e-11)
        torch.testing.assert_close(grad, grad_ref, rtol=1e-8, atol=1e-11)


@pytest.mark.parametrize("beta", [1e-5, 1e-3, 1 - 1e-4])
def test_normalized_jsd_keeps_float32_precision_near_the_ends(beta):
    """The normalized JSD divides by beta (1 - beta): log M is taken relative to the near side
    by log1p there, else float32 rounding of log M would be amplified by 1 / beta."""
    student, teacher = logits_pair((4, 60), seed=20, scale=2.0)
    s = student.clone().requires_grad_(True)
    value = akl_core.divergence("jsd", s, teacher, beta=beta, normalized=True)
    value.sum().backward()
    params = {"beta": beta, "normalized": True}
    expected = ref.reference_value("jsd", student, teacher, **params)
    torch.testing.assert_close(value.double(), expected, rtol=2e-4, atol=2e-5)
    grad_ref = _reference_grad("jsd", student, teacher, 1.0, params)
    torch.testing.assert_close(s.grad.double(), grad_ref, rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize(("alpha", "beta"), [(0.5, 0.5), (0.2, 0.9), (0.7, 0.1), (1.0, 1.0)])
def test_ab_fast_form_equals_the_careful_form_and_leaves_close_rows_open(alpha, beta):
    """The runner's fast pass (three row sums) against the per-entry form, in float64: equal on
    rows far apart; a row whose student is close to the teacher is marked open (redone)."""
    from akl_core._dists import make_dists
    from akl_core.divergences import ab

    student, teacher = logits_pair((6, 50), seed=21, scale=2.0, dtype=torch.float64)
    student[-1] = teacher[-1] + 1e-3 * torch.randn(50, dtype=torch.float64)
    careful = make_dists(student, teacher, 1.0, torch.float64)
    careful.grad_scale = 0.5
    value_ref, grad_ref = ab(careful, True, alpha, beta)
    fast = make_dists(student, teacher, 1.0, torch.float64)
    fast.grad_scale, fast.redo = 0.5, torch.zeros(6, dtype=torch.bool)
    value, grad = ab(fast, True, alpha, beta)
    assert fast.found.get("value_open") and fast.redo.tolist() == [False] * 5 + [True]
    torch.testing.assert_close(value[:5], value_ref[:5], rtol=1e-10, atol=1e-12)
    grad = grad * fast.grad_scale  # the scale the kernel did not fold in, if any
    grad_ref = grad_ref * careful.grad_scale
    torch.testing.assert_close(grad[:5], grad_ref[:5], rtol=1e-9, atol=1e-12)


def test_long_rows_sum_to_float32_accuracy():
    # 49152-entry rows: TVD and AKL's weight rest on sum |p - q|, which one running float32
    # total gets ~1e-4 wrong here (akl_core.headtail.l1_distance sums in blocks)
    g = torch.Generator().manual_seed(0)
    s, t = (torch.randn(8, 49152, generator=g) * 4 for _ in range(2))
    p, q = torch.softmax(t.double(), -1), torch.softmax(s.double(), -1)
    l1 = (p - q).abs().sum(-1)
    got = akl_core.divergence("tvd", s, t).double()
    assert ((got - l1 / 2).abs() / (l1 / 2)).max() < 1e-5
    ht = akl_core.head_tail(s, t)
    total = (ht.g_head + ht.g_tail).double()
    assert ((total - l1).abs() / l1).max() < 1e-5
