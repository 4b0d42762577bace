"""Evaluation by generation: greedy, bounded responses on test prompts, Rouge-L and distinct-n.

Rouge-L (F-measure x 100, the `rouge-score` package, stemming on) is computed against the
teacher's responses and, when the data has them, against gold references. Distinct-n is the
number of distinct n-grams over the total number of n-grams in all responses (whitespace
tokens, lower-cased). The teacher's own scores (against gold, and its distinct-n) are reported
for scale.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

Progress = Callable[[str, int, int], None]


def _check_texts(texts: Sequence[str], what: str) -> list[str]:
    if isinstance(texts, str):
        raise ValueError(f"{what} must be a list of strings, not one string")
    out = list(texts)
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise ValueError(f"{what}[{i}] is {type(t).__name__}, not a string")
    return out


def rouge_l(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Mean Rouge-L F-measure x 100 of predictions against references (same length)."""
    from rouge_score import rouge_scorer

    preds = _check_texts(predictions, "predictions")
    refs = _check_texts(references, "references")
    if len(preds) != len(refs):
        raise ValueError(f"{len(preds)} predictions but {len(refs)} references")
    if not preds:
        raise ValueError("no predictions to score")
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    scores = [scorer.score(r, p)["rougeL"].fmeasure for p, r in zip(preds, refs)]
    return 100.0 * sum(scores) / len(scores)


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct n-grams / total n-grams over all texts (whitespace tokens, lower-case); 0 if none."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    total, seen = 0, set()
    for t in _check_texts(texts, "texts"):
        words = t.lower().split()
        grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
        total += len(grams)
        seen.update(grams)
    return len(seen) / total if total else 0.0


def text_scores(texts: Sequence[str], *, teacher: Sequence[str] | None = None,
                gold: Sequence[str | None] | None = None) -> dict[str, float | None]:
    """Rouge-L against teacher responses / gold references (where present), distinct-1/2,
    mean length in words."""
    texts = _check_texts(texts, "texts")
    out: dict[str, float | None] = {
        "rougeL_teacher": rouge_l(texts, teacher) if teacher is not None else None,
        "rougeL_gold": None,
        "n_gold": 0,
    }
    if gold is not None:
        pairs = [(t, g) for t, g in zip(texts, gold) if g]
        if pairs:
            out["rougeL_gold"] = rouge_l([p for p, _ in pairs], [g for _, g in pairs])
            out["n_gold"] = len(pairs)
    out["distinct_1"] = distinct_n(texts, 1)
    out["distinct_2"] = distinct_n(texts, 2)
    out["mean_words"] = sum(len(t.split()) for t in texts) / len(texts) if texts else 0.0
    return out


def generate(
    bundle: Any,
    examples: Sequence[Any],
    *,
    max_new_tokens: int = 64,
    batch_size: int = 8,
    progress: Progress | None = None,
) -> list[str]:
    """Greedy responses of `bundle` (a ModelBundle) to `examples`, prompted with the chat
    template (akl_core.lab.data.chat_prompt), at most `max_new_tokens` each, stopping at the end of
    the turn; the same generation as the teacher's responses (akl_core.lab.data.generate).
    Returns the decoded responses (special tokens removed, stripped), in order."""
    from akl_core.lab import data

    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    prompts = [data.chat_prompt(bundle.tokenizer, ex) for ex in examples]
    cb = None
    if progress is not None:
        def cb(done: int, total: int) -> None:
            progress("generating", done, total)
    return data.generate(bundle, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size,
                         progress=cb)


def evaluate(
    student: Any,
    examples: Sequence[Any],
    *,
    teacher: Any = None,
    teacher_responses: Sequence[str] | None = None,
    max_new_tokens: int = 64,
    batch_size: int = 8,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Evaluate `student` on `examples` (akl_core.lab.data.Example, gold in `.response` if any).

    The teacher's responses are `teacher_responses` when given, else generated from `teacher`
    with the same settings; with neither, only gold Rouge-L and diversity are reported.
    Returns a JSON-able dict: {"student": scores, "teacher": scores or None, "n_examples",
    "max_new_tokens", "seconds", "generations": [{id, instruction, context, student, teacher,
    gold}]}, scores as in `text_scores` (Rouge-L x 100).
    """
    examples = list(examples)
    if not examples:
        raise ValueError("no examples to evaluate")
    start = time.perf_counter()
    if teacher_responses is None and teacher is not None:
        teacher_responses = generate(teacher, examples, max_new_tokens=max_new_tokens,
                                     batch_size=batch_size,
                                     progress=_prefixed(progress, "teacher"))
    if teacher_responses is not None:
        teacher_responses = _check_texts(teacher_responses, "teacher_responses")
        if len(teacher_responses) != len(examples):
            raise ValueError(f"{len(teacher_responses)} teacher responses for "
                             f"{len(examples)} examples")
    student_out = generate(student, examples, max_new_tokens=max_new_tokens,
                           batch_size=batch_size, progress=_prefixed(progress, "student"))
    gold = [getattr(ex, "response", None) or None for ex in examples]
    has_gold = any(gold)
    result: dict[str, Any] = {
        "student": text_scores(student_out, teacher=teacher_responses,
                               gold=gold if has_gold else None),
        "teacher": None,
        "n_examples": len(examples),
        "max_new_tokens": max_new_tokens,
    }
    if teacher_responses is not None:
        t_scores = text_scores(teacher_responses, gold=gold if has_gold else None)
        t_scores["rougeL_teacher"] = 100.0
        result["teacher"] = t_scores
    result["generations"] = [
        {
            "id": str(getattr(ex, "id", i)),
            "instruction": getattr(ex, "instruction", ""),
            "context": getattr(ex, "context", ""),
            "student": s,
            "teacher": teacher_responses[i] if teacher_responses is not None else None,
            "gold": gold[i],
        }
        for i, (ex, s) in enumerate(zip(examples, student_out))
    ]
    result["seconds"] = time.perf_counter() - start
    for part in ("student", "teacher"):
        if result[part]:
            result[part] = {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                            for k, v in result[part].items()}
    return result


def _prefixed(progress: Progress | None, who: str) -> Progress | None:
    if progress is None:
        return None
    return lambda stage, done, total: progress(f"{stage} ({who})", done, total)
