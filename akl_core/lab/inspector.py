"""Per-position diagnostics of a pasted text (the dashboard's Token inspector): tokenise, then
akl_core.lab.diagnostics.model_diagnostics (the same function as the engine's probes).

Convention (as akl_core.lab.distill.ProbeRecord): position i is the models predicting tokens[i]
from the tokens before it; p = teacher, q = student, both softmax(logits / temperature).
"""

from __future__ import annotations

from typing import Any

from .diagnostics import PositionDiagnostics, model_diagnostics
from .models import shared_vocab_size

TextDiagnostics = PositionDiagnostics  # the name this module used before


def context_token(teacher: Any, text: str, *, max_length: int = 512) -> str:
    """The text's first token as a string: the context nothing predicts (the positions of
    text_diagnostics start at the second token)."""
    ids = teacher.tokenizer(text, truncation=True, max_length=max_length)["input_ids"]
    return teacher.tokenizer.decode(ids[:1]) if ids else ""


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
) -> PositionDiagnostics:
    """Teacher (and student) next-token diagnostics at every position of `text`.

    teacher / student: akl_core.lab.models.ModelBundle sharing one tokenizer. The head/tail
    split uses `mu` / `boundary`. With a student, every catalogue divergence at default
    parameters is returned in ``divergences``, plus `loss` with `loss_params` under the key
    f"{loss} (chosen)". Raises ValueError for empty / one-token text.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError("the text is empty: paste some text to inspect")
    if not isinstance(topk, int) or topk < 1:
        raise ValueError(f"topk must be a positive integer, got {topk!r}")
    tok = teacher.tokenizer
    ids = tok(text, return_tensors="pt", truncation=True, max_length=max_length)["input_ids"]
    if ids.shape[1] < 2:
        raise ValueError("the text is too short: it needs at least 2 tokens")
    vocab = shared_vocab_size(teacher, student) if student is not None else len(tok)
    return model_diagnostics(
        teacher, ids[0], student=student, loss=loss or "akl", loss_params=loss_params,
        temperature=temperature, topk=topk, vocab_size=vocab, mu=mu, boundary=boundary,
        all_divergences=student is not None and loss is not None,
    )
