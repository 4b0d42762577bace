"""bfloat16 inputs on REAL rows: the bundled teacher vs its truncate:4 student, every loss within
1% (relative norm) of the float64 reference, values and gradients."""

from __future__ import annotations

import pytest
import torch

import akl_core
from tests import reference as ref

POSITIONS = 160


@pytest.fixture(scope="module")
def real_rows(bundled_teacher):
    """(student, teacher) bf16 logits `[POSITIONS, V]` at response positions of bundled data."""
    from akl_core.lab.data import load_bundled, teacher_responses, tokenize_for_kd
    from akl_core.lab.models import load_student

    student = load_student("truncate:4", bundled_teacher)
    examples = load_bundled("train")[:6]
    responses = teacher_responses(bundled_teacher, examples)
    enc = tokenize_for_kd(bundled_teacher.tokenizer, examples, responses, max_length=160)
    with torch.no_grad():
        inputs = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
        t = bundled_teacher.model(**inputs).logits[:, :-1]
        s = student.model(**inputs).logits[:, :-1]
    valid = enc["labels"][:, 1:] != -100
    assert int(valid.sum()) >= POSITIONS
    return s[valid][:POSITIONS].bfloat16(), t[valid][:POSITIONS].bfloat16()


def _relative(got: torch.Tensor, expected: torch.Tensor) -> float:
    return float((got.detach().double() - expected).norm() / expected.norm())


@pytest.mark.slow
@pytest.mark.parametrize("name", list(akl_core.LOSSES))
def test_bf16_values_and_gradients_within_one_percent_of_float64(real_rows, name):
    student, teacher = real_rows
    s = student.clone().requires_grad_(True)
    value = akl_core.divergence(name, s, teacher)
    value.sum().backward()
    # the reference sees the same (bf16-rounded) logits, in float64
    z = student.double().requires_grad_(True)
    expected = ref.reference_value(name, z, teacher.double())
    expected.sum().backward()
    assert _relative(value, expected.detach()) <= 0.01, name
    assert _relative(s.grad, z.grad) <= 0.01, name
    assert value.dtype == torch.float32 and s.grad.dtype == torch.bfloat16
