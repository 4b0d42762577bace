"""Property-based checks over shapes, dtypes and parameter ranges: finite, never NaN, >= 0."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import akl_core


@st.composite
def loss_and_params(draw):
    name = draw(st.sampled_from(sorted(akl_core.LOSSES)))
    params = {}
    for pname, spec in akl_core.LOSSES[name].params.items():
        if spec.choices is not None:
            params[pname] = draw(st.sampled_from(spec.choices))
        else:
            low = spec.low + (1e-3 if spec.low_open else 0.0)
            high = spec.high - (1e-3 if spec.high_open else 0.0)
            value = draw(st.sampled_from([low, high]) | st.floats(low, high))
            if spec.gap and (0 < value - low < spec.gap or 0 < high - value < spec.gap):
                value = low  # too close to an end for any float: refused (tests/test_input_checks)
            params[pname] = value
    return name, params


@settings(max_examples=120, deadline=None)
@given(
    case=loss_and_params(),
    lead=st.lists(st.integers(1, 3), min_size=0, max_size=2),
    vocab=st.integers(1, 40),
    dtype=st.sampled_from([torch.float32, torch.bfloat16, torch.float16, torch.float64]),
    scale=st.sampled_from([0.0, 0.1, 1.0, 8.0, 30.0]),
    temperature=st.sampled_from([0.3, 1.0, 3.0]),
    masked=st.integers(0, 3),
    seed=st.integers(0, 2**16),
)
def test_losses_are_finite_and_non_negative(case, lead, vocab, dtype, scale, temperature,
                                            masked, seed):
    name, params = case
    g = torch.Generator().manual_seed(seed)
    shape = (*lead, vocab)
    student = (torch.randn(shape, generator=g) * scale).to(dtype)
    teacher = (torch.randn(shape, generator=g) * scale).to(dtype)
    masked = min(masked, vocab - 1)
    if masked:
        student[..., :masked] = float("-inf")
        teacher[..., :masked] = float("-inf")
    s = student.clone().requires_grad_(True)
    value = akl_core.divergence(name, s, teacher, temperature=temperature, **params)
    value.sum().backward()
    assert value.shape == tuple(lead)
    assert torch.isfinite(value).all()
    assert torch.isfinite(s.grad.float()).all()
    assert (value >= -1e-4).all()
    ht = akl_core.head_tail(student, teacher, temperature=temperature)
    assert ((ht.w >= 0) & (ht.w <= 1)).all()
    assert (ht.head_size >= 1).all() and (ht.head_size <= vocab).all()
