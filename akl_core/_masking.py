"""Masked vocabulary entries: the rule, and which divergences are infinite where one side masks.

Rule: a vocabulary entry is MASKED when its logit is -inf or <= torch.finfo(logits.dtype).min
(the value Hugging Face code fills masks with). Its probability is exactly 0, at any
temperature, exactly as for -inf. Any other logit, however negative, is a real logit.

- Masked in BOTH the teacher and the student: the entry contributes exactly 0.
- Masked in ONE side only: p = 0 < q ("teacher-zero") or q = 0 < p ("student-zero"). Some
  divergences are +inf there (e.g. RKL = sum q log(q/p) has log(q/0)); `SUPPORT` says which,
  per loss and parameters. For those, `check_masks` raises a ValueError naming the loss, the
  side, the number of positions and the first one, instead of letting the kernels return a
  number that depends on the internal log-probability floor. The others are finite and exact.
- A position whose logits are masked everywhere (on either side) has no distribution: error.

Derivation (p teacher, q student, one entry with a one-sided zero):
    fkl  p log(p/q): +inf where q = 0 < p          rkl: +inf where p = 0 < q
    fkl_rkl: teacher-zero +inf iff lam > 0, student-zero +inf iff lam < 1
    akl, akl_r: +inf on both sides (the zero entry sits in the tail, so the RKL weight 1 - w > 0;
      a student-zero entry makes g_head or g_tail > 0; 0 * inf only in the degenerate case
      q = p on the whole head, which is rejected too)
    jsd: finite for 0 < beta < 1 (M > 0 wherever p or q is); beta = 1 is RKL, beta = 0 is FKL
    tvd: always finite
    skl  KL(p || a p + (1-a) q): student-zero +inf iff a = 0; srkl symmetric (teacher-zero)
    ab (alpha, beta): teacher-zero +inf iff alpha = 0 (the q^b log(q/p) term), student-zero
      +inf iff beta = 0 (the p^a log(p/q) term); both > 0 stays finite
    taid: p_t = softmax((1-t) u + t log p) is 0 wherever q (t < 1) or p (t > 0) is, so
      KL(p_t || q) is finite except at t = 1 (p_t = p), student-zero
    todi: +inf on both sides (a -> 0 where p = 0 leaves q log(q/0); a -> 1 where q = 0 leaves
      p log(p/0)), for every beta
tests/test_masking.py checks every row against the float64 reference's limit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

Sides = tuple[bool, bool]  # (infinite where teacher-zero, infinite where student-zero)

SUPPORT: dict[str, Callable[[dict[str, Any]], Sides]] = {
    "fkl": lambda p: (False, True),
    "rkl": lambda p: (True, False),
    "fkl_rkl": lambda p: (p["lam"] > 0.0, p["lam"] < 1.0),
    "akl": lambda p: (True, True),
    "akl_r": lambda p: (True, True),
    "jsd": lambda p: (p["beta"] == 1.0, p["beta"] == 0.0),
    "tvd": lambda p: (False, False),
    "skl": lambda p: (False, p["alpha"] == 0.0),
    "srkl": lambda p: (p["alpha"] == 0.0, False),
    "ab": lambda p: (p["alpha"] == 0.0, p["beta"] == 0.0),
    "taid": lambda p: (False, p["t"] == 1.0),
    "todi": lambda p: (True, True),
}

_CHUNK_ELEMENTS = 1 << 20


def infinite_sides(name: str, params: dict[str, Any]) -> Sides:
    """(teacher-zero infinite, student-zero infinite) for loss `name` at resolved `params`.

    A loss without a rule is treated as infinite on both sides (the safe answer).
    """
    rule = SUPPORT.get(name)
    return rule(params) if rule is not None else (True, True)


def is_masked(logits: torch.Tensor) -> torch.Tensor:
    """Bool tensor: True where the logit is -inf or <= finfo(logits.dtype).min."""
    return logits <= torch.finfo(logits.dtype).min


def _has_masked(tensor: torch.Tensor) -> bool:
    return tensor.numel() > 0 and bool(tensor.detach().amin() <= torch.finfo(tensor.dtype).min)


def _position(flat: int, shape: Sequence[int]) -> str:
    if len(shape) <= 1:
        return str(flat)
    index = torch.unravel_index(torch.tensor(flat), tuple(shape))
    return "(" + ", ".join(str(int(i)) for i in index) + ")"


def _finite_names(side: int) -> str:
    from .divergences import LOSSES  # late import: divergences does not need this module

    names = [n for n, spec in LOSSES.items() if not infinite_sides(n, spec.defaults())[side]]
    return ", ".join(names)


def check_masks(
    losses: Sequence[tuple[str, dict[str, Any]]],
    student: torch.Tensor,
    teacher: torch.Tensor,
    rows: torch.Tensor | None,
    shape: Sequence[int],
    *,
    teacher_label: str = "teacher",
    positions: torch.Tensor | None = None,
) -> None:
    """Raise ValueError for masked-everywhere positions, and for one-sided masked entries where
    one of `losses` ((name, params) pairs) is infinite. `student`, `teacher`: `[N, V]`; `rows`:
    the positions that count (None: all); `shape`: the positions' shape, for messages;
    `positions`: the flat position of each of the N rows, when they are a subset (messages).

    Costs one min-reduction per tensor when nothing is masked; scans rows only otherwise.
    """
    if not (_has_masked(student) or _has_masked(teacher)):
        return
    count = student.shape[0] if rows is None else rows.numel()
    step = max(1, _CHUNK_ELEMENTS // max(1, student.shape[-1]))
    found: dict[str, list[torch.Tensor]] = {"teacher_all": [], "student_all": [], "teacher": [],
                                            "student": []}
    for start in range(0, count, step):
        if rows is None:
            index = torch.arange(start, min(start + step, count), device=student.device)
        else:
            index = rows[start : start + step]
        s_masked = is_masked(student.detach().index_select(0, index))
        t_masked = is_masked(teacher.detach().index_select(0, index))
        found["teacher_all"].append(index[t_masked.all(-1)])
        found["student_all"].append(index[s_masked.all(-1)])
        found["teacher"].append(index[(t_masked & ~s_masked).any(-1)])
        found["student"].append(index[(s_masked & ~t_masked).any(-1)])
    hits: dict[str, list[int]] = {}
    for key, parts in found.items():
        flat = torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long)
        hits[key] = (flat if positions is None else positions[flat]).tolist()
    for side in ("teacher", "student"):
        bad = hits[f"{side}_all"]
        if bad:
            label = teacher_label if side == "teacher" else "student"
            raise ValueError(
                f"{len(bad)} position(s) (first: position {_position(bad[0], shape)}) have "
                f"{label} logits that are all -inf (or <= finfo.min): no distribution is left "
                f"to compare. Leave at least one vocabulary entry unmasked, or leave the "
                f"position out with labels=-100 or mask=False."
            )
    for name, params in losses:
        teacher_zero, student_zero = infinite_sides(name, params)
        for side, infinite in (("teacher", teacher_zero), ("student", student_zero)):
            bad = hits[side]
            if not (infinite and bad):
                continue
            other = "student" if side == "teacher" else "teacher"
            fix = (
                "Mask the student alike (the same entries -inf in both), give a top-k teacher "
                "as akl_core.SparseTeacher(indices, logprobs) (its tail bucket keeps the "
                "teacher's missing mass), leave those positions out with labels or mask"
                if side == "teacher"
                else "Mask the teacher alike (the same entries -inf in both) or unmask the "
                "student, leave those positions out with labels or mask"
            )
            raise ValueError(
                f"{name} is infinite at {len(bad)} position(s) (first: position "
                f"{_position(bad[0], shape)}): the {side}'s probability is 0 there for a "
                f"vocabulary entry (logit -inf or <= finfo.min) where the {other}'s probability "
                f"is > 0. {fix}, or use a loss that stays finite there (at default "
                f"parameters: {_finite_names(0 if side == 'teacher' else 1)})."
            )
