"""Shared builders for the loss tests: random logits without near-ties at the head boundary."""

from __future__ import annotations

import torch

MUS = (0.3, 0.5, 0.8)


def near_boundary(logits: torch.Tensor, temperature: float = 1.0, mus=MUS, gap=1e-5) -> bool:
    """True if any position's sorted cumulative teacher mass lies within `gap` of a mu."""
    p = torch.softmax(logits.double().reshape(-1, logits.shape[-1]) / temperature, -1)
    cum = p.sort(-1, descending=True).values.cumsum(-1)
    return any(bool(((cum - mu).abs() < gap).any()) for mu in mus)


def logits_pair(
    shape: tuple[int, ...],
    *,
    seed: int = 0,
    scale: float = 1.0,
    dtype: torch.dtype = torch.float32,
    masked: int = 0,
    temperature: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(student, teacher) logits of `shape`, Gaussian times `scale`; the last `masked`
    vocabulary entries are -inf in both. Re-drawn until no head boundary is ambiguous."""
    for attempt in range(100):
        g = torch.Generator().manual_seed(seed * 1000 + attempt)
        student = torch.randn(shape, generator=g, dtype=torch.float64) * scale
        teacher = torch.randn(shape, generator=g, dtype=torch.float64) * scale
        if masked:
            student[..., -masked:] = float("-inf")
            teacher[..., -masked:] = float("-inf")
        teacher = teacher.to(dtype)
        if not near_boundary(teacher, temperature):
            return student.to(dtype), teacher
    raise RuntimeError("could not draw logits away from the head boundary")
