"""Evaluation: Rouge-L, distinct-n, greedy generation and the evaluate() report."""

from __future__ import annotations

import json

import pytest
import torch

from akl_core.lab.evaluate import distinct_n, evaluate, generate, rouge_l, sample, text_scores
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
    assert "sampled" not in result
    assert result["generations"][2]["gold"] is None
    assert result["student"]["n_gold"] == 2
    assert 0.0 <= result["student"]["rougeL_teacher"] <= 100.0
    assert any("teacher" in s for s in stages) and any("student" in s for s in stages)
    # the scores are those of the texts in the report, recomputed independently here
    t_texts = [x["teacher"] for x in result["generations"]]
    s_texts = [x["student"] for x in result["generations"]]
    assert all(t_texts), "the small teacher must say something for this test to mean anything"
    assert result["student"]["rougeL_teacher"] == pytest.approx(rouge_l(s_texts, t_texts))
    assert result["student"]["rougeL_gold"] == pytest.approx(
        rouge_l(s_texts[:2], [e.response for e in exs[:2]]))
    # the teacher's Rouge-L against its own responses is measured, not assumed
    assert result["teacher"]["rougeL_teacher"] == pytest.approx(rouge_l(t_texts, t_texts))
    assert result["teacher"]["rougeL_gold"] == pytest.approx(
        rouge_l(t_texts[:2], [e.response for e in exs[:2]]))
    # the teacher evaluated as a student reproduces its own (non-empty) responses exactly
    same = evaluate(teacher, exs, teacher_responses=t_texts, max_new_tokens=5)
    assert [x["student"] for x in same["generations"]] == t_texts
    assert same["student"]["rougeL_teacher"] == pytest.approx(100.0)
    assert same["student"]["distinct_1"] == pytest.approx(result["teacher"]["distinct_1"])
    with pytest.raises(ValueError, match="2 teacher responses for 3"):
        evaluate(student, exs, teacher_responses=["a", "b"])
    with pytest.raises(ValueError, match="no examples"):
        evaluate(student, [])


def test_teacher_rouge_against_itself_is_not_hard_coded(teacher):
    """An empty teacher response scores 0 against itself (rouge-score's convention), so the
    teacher's own Rouge-L is below 100 when one of its responses is empty."""
    exs = small_lm.examples(2, split="test")
    student = small_lm.small_student(teacher, seed=5)
    result = evaluate(student, exs, teacher_responses=["a real answer", ""], max_new_tokens=2)
    assert result["teacher"]["rougeL_teacher"] == pytest.approx(50.0)


def test_sampled_decoding_is_seeded_and_scored(teacher):
    exs = small_lm.examples(3, split="test")
    student = small_lm.small_student(teacher, seed=5)
    torch.manual_seed(1234)
    before = torch.rand(1)
    torch.manual_seed(1234)
    a = sample(student, exs, n_samples=3, seed=7, max_new_tokens=6, batch_size=2)
    after = torch.rand(1)
    assert torch.equal(before, after), "sampling must not move the caller's RNG"
    assert len(a) == 3 and all(len(row) == 3 for row in a)
    assert a == sample(student, exs, n_samples=3, seed=7, max_new_tokens=6, batch_size=2)
    # sample set j uses seed + j: sets 1.. of seed 7 are sets 0.. of seed 8
    b = sample(student, exs, n_samples=2, seed=8, max_new_tokens=6, batch_size=2)
    assert [row[1:] for row in a] == b
    # a random student samples differently in different sets, and unlike its greedy answer
    assert len({tuple(row[j] for row in a) for j in range(3)}) > 1
    greedy = generate(student, exs, max_new_tokens=6)
    assert any(g not in row for g, row in zip(greedy, a))
    result = evaluate(student, exs, teacher_responses=greedy, max_new_tokens=6, batch_size=2,
                      samples=3, sample_seed=7)
    json.dumps(result, allow_nan=False)
    sampled = result["sampled"]
    assert sampled["n_samples"] == 3 and len(sampled["per_sample"]) == 3
    assert [g["student_samples"] for g in result["generations"]] == a
    per = [rouge_l([row[j] for row in a], greedy) for j in range(3)]
    assert sampled["student"]["rougeL_teacher"] == pytest.approx(sum(per) / 3)
    mean = sum(per) / 3
    std = (sum((x - mean) ** 2 for x in per) / 3) ** 0.5
    assert sampled["student_std"]["rougeL_teacher"] == pytest.approx(std)
    assert result["student"]["rougeL_teacher"] == pytest.approx(100.0)  # greedy vs itself
    for bad, match in [({"n_samples": 0}, "n_samples"), ({"top_p": 0.0}, "top_p"),
                       ({"temperature": 0.0}, "temperature"), ({"seed": -1}, "seed")]:
        with pytest.raises(ValueError, match=match):
            sample(student, exs, **bad)
    with pytest.raises(ValueError, match="samples"):
        evaluate(student, exs, samples=-1)


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
