"""Input validation shared by every public entry point: clear ValueErrors, never deep torch errors."""

from __future__ import annotations

import math
import numbers

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 inputs are computed in float64; float16 / bfloat16 / float32 in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def check_positive(name: str, value: float) -> float:
    """Return `value` as a float, or raise if it is not a finite number > 0."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number > 0, got {value!r}") from None
    if not math.isfinite(number) or number <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return number


def check_temperature(temperature: float) -> float:
    """Return `temperature` as a float, or raise if it is not a finite number > 0."""
    return check_positive("temperature", temperature)


def check_logits(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    vocab_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Check a student/teacher pair of `[..., V]` logits and return them (cut to `vocab_size`).

    The teacher is returned detached. Raises ValueError for non-tensors, non-float dtypes,
    mismatched devices or leading shapes, and a vocabulary mismatch (naming both sizes).
    """
    for label, tensor in (("student_logits", student_logits), ("teacher_logits", teacher_logits)):
        if not isinstance(tensor, torch.Tensor):
            raise ValueError(f"{label} must be a torch.Tensor, got {type(tensor).__name__}")
        if tensor.dtype not in FLOAT_DTYPES:
            raise ValueError(
                f"{label} must be float16, bfloat16, float32 or float64, got {tensor.dtype}"
            )
        if tensor.dim() < 1:
            raise ValueError(f"{label} must have shape [..., V]; got a 0-d tensor")
    if student_logits.device != teacher_logits.device:
        raise ValueError(
            f"student_logits are on {student_logits.device} but teacher_logits on "
            f"{teacher_logits.device}; move both to the same device"
        )
    if student_logits.shape[:-1] != teacher_logits.shape[:-1]:
        raise ValueError(
            f"shape mismatch: student_logits {tuple(student_logits.shape)} vs teacher_logits "
            f"{tuple(teacher_logits.shape)}; they must agree on every dimension but the last (V)"
        )
    vs, vt = student_logits.shape[-1], teacher_logits.shape[-1]
    if vocab_size is not None:
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 1:
            raise ValueError(f"vocab_size must be a positive int, got {vocab_size!r}")
        if vocab_size > min(vs, vt):
            raise ValueError(
                f"vocab_size={vocab_size} exceeds the logits' vocabulary sizes "
                f"(student {vs}, teacher {vt})"
            )
        student_logits = student_logits[..., :vocab_size]
        teacher_logits = teacher_logits[..., :vocab_size]
    elif vs != vt:
        raise ValueError(
            f"vocabulary size mismatch: student logits have {vs} entries, teacher logits {vt}. "
            f"If both models share one tokenizer and one output layer is padded, pass "
            f"vocab_size=<tokenizer size> (at most {min(vs, vt)}) to cut both."
        )
    if student_logits.shape[-1] < 1:
        raise ValueError("the vocabulary dimension is empty (V = 0)")
    return student_logits, teacher_logits.detach()


def check_position_mask(
    name: str, tensor: torch.Tensor | None, positions_shape: torch.Size
) -> torch.Tensor | None:
    """Check that a labels/mask tensor has the logits' leading shape `[...]`."""
    if tensor is None:
        return None
    if not isinstance(tensor, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    if tensor.shape != positions_shape:
        raise ValueError(
            f"{name} has shape {tuple(tensor.shape)} but the logits have positions of shape "
            f"{tuple(positions_shape)} (the logits' shape without the vocabulary dimension). "
            f"Shift labels to the logits yourself: logits[:, :-1] pairs with labels[:, 1:]."
        )
    return tensor


def check_num_items(
    num_items: int | float | torch.Tensor | None, reduction: str
) -> float | None:
    """Return `num_items` as a finite float > 0 (None stays None), or raise ValueError.

    `num_items` is the denominator of reduction="mean" only: with "sum" or "none" it would be
    ignored, so it is refused there. A tensor must hold exactly one number.
    """
    if num_items is None:
        return None
    if reduction != "mean":
        raise ValueError(
            f"num_items is the denominator of reduction='mean'; it has no effect with "
            f"reduction={reduction!r}: drop it, or divide the sum yourself"
        )
    if isinstance(num_items, torch.Tensor):
        if num_items.numel() != 1:
            raise ValueError(
                f"num_items must be one number; got a tensor of shape {tuple(num_items.shape)}"
            )
        if num_items.dtype == torch.bool:
            raise ValueError(f"num_items must be > 0 (a finite number), got {num_items!r}")
        num_items = num_items.item()
    if isinstance(num_items, bool) or not isinstance(num_items, numbers.Real):
        raise ValueError(f"num_items must be > 0 (a finite number), got {num_items!r}")
    if not math.isfinite(num_items) or num_items <= 0:
        raise ValueError(f"num_items must be > 0 (a finite number), got {num_items!r}")
    return float(num_items)


def check_labels(labels: torch.Tensor | None) -> torch.Tensor | None:
    """Labels must be integer token ids (e.g. -100 where ignored); bool or float is refused."""
    if labels is None:
        return None
    if labels.dtype == torch.bool or labels.is_floating_point() or labels.is_complex():
        raise ValueError(
            f"labels must be integer token ids (ignore_index where a position is ignored), got "
            f"dtype {labels.dtype}; pass a bool keep-mask as mask= instead"
        )
    return labels


def check_mask(mask: torch.Tensor | None) -> torch.Tensor | None:
    """A mask must be bool, or numbers that are exactly 0 or 1 (no 0.5, no NaN); returns bool."""
    if mask is None or mask.dtype == torch.bool:
        return mask
    if mask.is_complex():
        raise ValueError(f"mask must be bool or hold only 0 and 1, got dtype {mask.dtype}")
    bad = (mask != 0) & (mask != 1)  # NaN compares unequal to both
    if bool(bad.any()):
        first = mask[bad].reshape(-1)[0].item()
        raise ValueError(
            f"mask must be bool or hold only 0 and 1 (1 = keep the position), found {first!r} "
            f"at {int(bad.sum())} position(s)"
        )
    return mask != 0
