"""Evaluation: Rouge-L, distinct-n, greedy generation and the evaluate() report."""

from __future__ import annotations

import json

import pytest

from akl_core.lab.evaluate import distinct_n, evaluate, generate, rouge_l, text_scores
from tests import small_lm


@pytest.fixture(scope="module")
def teacher():
    return small_lm.small_teacher()


def test_rouge_l_values():
    assert rouge_l(["the cat sat on the mat"], ["the cat sat on the mat"]) == pytest.approx(100)
    assert rouge_l(["dogs bark loudly"], ["the cat sat"]) == 0.0
    # LCS "the cat the mat" = 4 of 6 and 4 of 4 words: F = 2*(2/3*1)/(2/3+1) = 0.8
    assert rouge_l(["the cat the mat"], ["the cat sat on the mat"]) == pytest.approx(80.0)
    assert rouge_l(["a b", "x"], ["a b", "y"]) == pytest.approx(50.0)
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        rouge_l(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="one string"):
        rouge_l("abc", "abc")


def test_distinct_n_values():
    assert distinct_n(["a a a a"], 1) == pytest.approx(0.25)
    assert distinct_n(["a b a b"], 2) == pytest.approx(2 / 3)
    assert distinct_n(["A b", "a B"], 1) == pytest.approx(0.5)  # lower-cased
    assert distinct_n(["one", ""], 2) == 0.0
    with pytest.raises(ValueError, match="n must be"):
        distinct_n(["a"], 0)


def test_text_scores_gold_only_where_present():
    s = text_scores(["the cat", "a dog"], teacher=["the cat", "a cow"], gold=["the cat", None])
    assert s["rougeL_teacher"] == pytest.approx(75.0)
    assert s["rougeL_gold"] == pytest.approx(100.0) and s["n_gold"] == 1
    assert s["mean_words"] == 2.0


def test_generate_is_greedy_and_bounded(teacher):
    exs = small_lm.examples(3, split="test")
    a = generate(teacher, exs, max_new_tokens=6, batch_size=2)
    b = generate(teacher, exs, max_new_tokens=6, batch_size=3)
    assert a == b and len(a) == 3 and all(isinstance(t, str) for t in a)
    short = generate(teacher, exs, max_new_tokens=2)
    assert all(x.startswith(y) and len(y) < len(x) for x, y in zip(a, short)), (a, short)
    calls = []
    generate(teacher, exs[:2], max_new_tokens=2, progress=lambda *c: calls.append(c))
    assert calls[-1] == ("generating", 2, 2)
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(teacher, exs, max_new_tokens=0)


def test_evaluate_report(teacher):
    exs = small_lm.examples(3, split="test")
    exs[2].response = None
    student = small_lm.small_student(teacher, seed=5)
    stages = []
    result = evaluate(student, exs, teacher=teacher, max_new_tokens=5, batch_size=2,
                      progress=lambda stage, d, t: stages.append(stage))
    json.dumps(result, allow_nan=False)
    assert result["n_examples"] == 3 and len(result["generations"]) == 3
    g = result["generations"][0]
    assert set(g) == {"id", "instruction", "context", "student", "teacher", "gold"}
    assert result["generations"][2]["gold"] is None
    assert result["student"]["n_gold"] == 2
    assert result["teacher"]["rougeL_teacher"] == 100.0
    assert 0.0 <= result["student"]["rougeL_teacher"] <= 100.0
    assert any("teacher" in s for s in stages) and any("student" in s for s in stages)
    # the teacher evaluated as a student reproduces its own responses exactly
    same = evaluate(teacher, exs, teacher_responses=[x["teacher"] for x in result["generations"]],
                    max_new_tokens=5)
    assert same["student"]["rougeL_teacher"] == pytest.approx(100.0) or all(
        not x["teacher"] for x in result["generations"])
    assert same["student"]["distinct_1"] == pytest.approx(result["teacher"]["distinct_1"])
    with pytest.raises(ValueError, match="2 teacher responses for 3"):
        evaluate(student, exs, teacher_responses=["a", "b"])
    with pytest.raises(ValueError, match="no examples"):
        evaluate(student, [])


@pytest.mark.slow
def test_real_teacher_scores_itself(bundled_teacher):
    """Greedy generation of the bundled teacher equals its (cached) responses: Rouge-L 100."""
    from akl_core.lab import data

    exs = data.load_bundled("test")[:2]
    resp = data.teacher_responses(bundled_teacher, exs, max_new_tokens=24)
    result = evaluate(bundled_teacher, exs, teacher_responses=resp, max_new_tokens=24)
    assert result["student"]["rougeL_teacher"] == pytest.approx(100.0)
    assert result["student"]["mean_words"] > 3
    assert all(g["student"] == g["teacher"] for g in result["generations"])
