"""Per-position diagnostics of a text: one forward pass of the teacher (and optionally a
student), then akl_core's per-token diagnostics (used by the dashboard's Token inspector). No divergence is computed here: head/tail numbers come
from akl_core.head_tail, divergences from akl_core.per_token_divergences / akl_core.divergence.

Convention (as akl_core.lab.distill.ProbeRecord): position i is the models predicting tokens[i]
from the tokens before it; p = teacher, q = student, both softmax(logits / temperature).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

import akl_core

from .models import shared_vocab_size


@dataclass
class TextDiagnostics:
    """Per-position lists (length T = number of predicted tokens)."""

    tokens: list[str]
    head_size: list[int]
    head_mass: list[float]
    teacher_entropy: list[float]
    teacher_topk: list[list[list]]
    student_entropy: list[float] | None = None
    student_topk: list[list[list]] | None = None
    g_head: list[float] | None = None
    g_tail: list[float] | None = None
    w: list[float] | None = None
    divergences: dict[str, list[float]] = field(default_factory=dict)


def _topk(logits: torch.Tensor, tokenizer: Any, k: int, temperature: float) -> list[list[list]]:
    probs, idx = torch.softmax(logits / temperature, dim=-1).topk(k, dim=-1)
    return [[[tokenizer.decode([i]), float(p)] for p, i in zip(pr, ix)]
            for pr, ix in zip(probs.tolist(), idx.tolist())]


@torch.no_grad()
def text_diagnostics(
    teacher: Any,
    text: str,
    *,
    student: Any = None,
    loss: str | None = None,
    loss_params: dict | None = None,
    mu: float = 0.5,
    boundary: str = "reference",
    temperature: float = 1.0,
    topk: int = 10,
    max_length: int = 512,
) -> TextDiagnostics:
    """Teacher (and student) next-token diagnostics at every position of `text`.

    teacher / student: akl_core.lab.models.ModelBundle sharing one tokenizer. With a student, every
    catalogue divergence at default parameters is returned, plus `loss` with `loss_params`
    under the key f"{loss} (chosen)". Raises ValueError for empty / one-token text.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError("the text is empty: paste some text to inspect")
    if not isinstance(topk, int) or topk < 1:
        raise ValueError(f"topk must be a positive integer, got {topk!r}")
    tok = teacher.tokenizer
    ids = tok(text, return_tensors="pt", truncation=True, max_length=max_length)["input_ids"]
    if ids.shape[1] < 2:
        raise ValueError("the text is too short: it needs at least 2 tokens")
    vocab = len(tok)
    if student is not None:
        vocab = shared_vocab_size(teacher, student)
    t = teacher.model(input_ids=ids.to(teacher.device)).logits[0, :-1, :vocab].float().cpu()
    s = None
    if student is not None:
        was_training = student.model.training
        student.model.eval()
        try:
            s = student.model(input_ids=ids.to(student.device)).logits[0, :-1, :vocab]
        finally:
            student.model.train(was_training)
        s = s.float().cpu()
    ht = akl_core.head_tail(s if s is not None else t, t, mu=mu, boundary=boundary,
                            temperature=temperature)
    k = min(topk, vocab)
    out = TextDiagnostics(
        tokens=[tok.decode([i]) for i in ids[0, 1:].tolist()],
        head_size=[int(x) for x in ht.head_size.tolist()],
        head_mass=ht.head_mass.tolist(),
        teacher_entropy=ht.teacher_entropy.tolist(),
        teacher_topk=_topk(t, tok, k, temperature),
    )
    if s is not None:
        out.student_entropy = ht.student_entropy.tolist()
        out.student_topk = _topk(s, tok, k, temperature)
        out.g_head, out.g_tail, out.w = ht.g_head.tolist(), ht.g_tail.tolist(), ht.w.tolist()
        divs = akl_core.per_token_divergences(s, t, temperature=temperature)
        out.divergences = {name: v.float().tolist() for name, v in divs.items()}
        if loss is not None:
            value = akl_core.divergence(loss, s, t, temperature=temperature,
                                        **(loss_params or {}))
            out.divergences[f"{loss} (chosen)"] = value.float().tolist()
    return out
