"""Evaluation by generation: bounded responses on test prompts, Rouge-L and distinct-n.

Greedy decoding always; with `samples=k` also k sampled responses per prompt (pure sampling:
temperature 1, top-p 1, no top-k by default, as in the MiniLLM evaluation scripts the paper's
code builds on), sample set j drawn with torch seed `sample_seed + j`, scores averaged over the
k sets (their standard deviation is reported too).

Rouge-L (F-measure x 100, the `rouge-score` package, stemming on) is computed against the
teacher's responses and, when the data has them, against gold references. Distinct-n is the
number of distinct n-grams over the total number of n-grams in all responses (whitespace
tokens, lower-cased). The teacher's own scores (against gold, its distinct-n, and its Rouge-L
against its own responses, which is 100 unless a response is empty) are reported for scale.
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
    samples: int = 0,
    sample_seed: int = 0,
    temperature: float = 1.0,
    top_p: float = 1.0,
) -> dict[str, Any]:
    """Evaluate `student` on `examples` (akl_core.lab.data.Example, gold in `.response` if any).

    The teacher's responses are `teacher_responses` when given, else generated from `teacher`
    with the same settings; with neither, only gold Rouge-L and diversity are reported.
    Returns a JSON-able dict: {"student": scores, "teacher": scores or None, "n_examples",
    "max_new_tokens", "seconds", "generations": [{id, instruction, context, student, teacher,
    gold}]}, scores as in `text_scores` (Rouge-L x 100) of the greedy responses.
    samples > 0 adds "sampled": {"n_samples", "seed", "temperature", "top_p", "student" (mean
    scores over the sample sets), "student_std", "per_sample"} and each generation's
    "student_samples" (see `sample`).
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
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 0:
        raise ValueError(f"samples must be a non-negative integer, got {samples!r}")
    student_out = generate(student, examples, max_new_tokens=max_new_tokens,
                           batch_size=batch_size, progress=_prefixed(progress, "student"))
    sampled = None
    if samples:
        sampled = sample(student, examples, n_samples=samples, seed=sample_seed,
                         temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
                         batch_size=batch_size, progress=_prefixed(progress, "student samples"))
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
        result["teacher"] = text_scores(teacher_responses, teacher=teacher_responses,
                                        gold=gold if has_gold else None)
    if sampled is not None:
        per_sample = [text_scores([row[j] for row in sampled], teacher=teacher_responses,
                                  gold=gold if has_gold else None) for j in range(samples)]
        mean, std = _mean_std(per_sample)
        result["sampled"] = {"n_samples": samples, "seed": sample_seed,
                             "temperature": temperature, "top_p": top_p, "student": mean,
                             "student_std": std, "per_sample": per_sample}
    result["generations"] = [
        {
            "id": str(getattr(ex, "id", i)),
            "instruction": getattr(ex, "instruction", ""),
            "context": getattr(ex, "context", ""),
            "student": s,
            "teacher": teacher_responses[i] if teacher_responses is not None else None,
            "gold": gold[i],
            **({"student_samples": sampled[i]} if sampled is not None else {}),
        }
        for i, (ex, s) in enumerate(zip(examples, student_out))
    ]
    result["seconds"] = time.perf_counter() - start
    for part in ("student", "teacher"):
        if result[part]:
            result[part] = _finite(result[part])
    if sampled is not None:
        for part in ("student", "student_std"):
            result["sampled"][part] = _finite(result["sampled"][part])
        result["sampled"]["per_sample"] = [_finite(x) for x in result["sampled"]["per_sample"]]
    return result


def _finite(scores: dict[str, Any]) -> dict[str, Any]:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in scores.items()}


def _mean_std(rows: Sequence[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Per key: mean and standard deviation (ddof=0) over rows; None where a row has None."""
    mean: dict[str, Any] = {}
    std: dict[str, Any] = {}
    for key in rows[0]:
        vals = [r[key] for r in rows]
        if any(v is None for v in vals):
            mean[key] = std[key] = None
            continue
        m = sum(vals) / len(vals)
        mean[key] = m
        std[key] = math.sqrt(sum((v - m) ** 2 for v in vals) / len(vals))
    return mean, std


def sample(
    bundle: Any,
    examples: Sequence[Any],
    *,
    n_samples: int = 4,
    seed: int = 0,
    temperature: float = 1.0,
    top_p: float = 1.0,
    max_new_tokens: int = 64,
    batch_size: int = 8,
    progress: Progress | None = None,
) -> list[list[str]]:
    """`n_samples` sampled responses per example: out[i][j] is example i's sample j.

    Same prompts and stopping as `generate`; ancestral sampling from softmax(logits /
    temperature), nucleus-cut at `top_p` (1.0 = no cut), no top-k. Sample set j is drawn with
    torch's generator seeded `seed + j` (batches in prompt-length order), so a run is
    reproducible for the same seed, batch_size and device; the caller's RNG state is restored.
    """
    from akl_core.lab import data

    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if not isinstance(temperature, (int, float)) or not (0 < temperature < math.inf):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    if not isinstance(top_p, (int, float)) or not (0 < top_p <= 1):
        raise ValueError(f"top_p must be in (0, 1], got {top_p!r}")
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    import torch

    examples = list(examples)
    prompts = [data.chat_prompt(bundle.tokenizer, ex) for ex in examples]
    tokenizer, model = bundle.tokenizer, bundle.model
    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out: list[list[str]] = [[""] * n_samples for _ in prompts]
    total = n_samples * len(prompts)
    done = 0
    was_training = model.training
    model.eval()
    devices = [bundle.device] if str(bundle.device).startswith("cuda") else []
    try:
        for j in range(n_samples):
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(seed + j)
                for start in range(0, len(order), batch_size):
                    idx = order[start : start + batch_size]
                    ids, mask = data.left_padded([encoded[i] for i in idx], pad_id)
                    with torch.no_grad():
                        result = model.generate(
                            input_ids=ids.to(bundle.device),
                            attention_mask=mask.to(bundle.device),
                            max_new_tokens=max_new_tokens, do_sample=True, num_beams=1,
                            temperature=float(temperature), top_p=float(top_p), top_k=0,
                            pad_token_id=pad_id, eos_token_id=tokenizer.eos_token_id,
                        )
                    new = result[:, ids.shape[1] :].cpu()
                    for row, i in enumerate(idx):
                        out[i][j] = tokenizer.decode(new[row], skip_special_tokens=True).strip()
                    done += len(idx)
                    if progress is not None:
                        progress("sampling", done, total)
    finally:
        model.train(was_training)
    return out


def _prefixed(progress: Progress | None, who: str) -> Progress | None:
    if progress is None:
        return None
    return lambda stage, done, total: progress(f"{stage} ({who})", done, total)
