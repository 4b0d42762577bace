"""Per-position diagnostics returned by `distillation_loss(..., return_stats=True)`."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch


@dataclass
class KDStats:
    """Detached per-position tensors of the positions' shape `[...]`; 0 where not `valid`.

    value: the chosen loss per position; fkl = KL(p||q), rkl = KL(q||p) (p = teacher,
    q = student); w, g_head, g_tail, head_size (int64), head_mass: the head/tail split (the
    loss's own mu/boundary for akl/akl_r, else 0.5/"reference"); teacher_entropy,
    student_entropy in nats; valid: bool, the positions the loss counts.
    """

    value: torch.Tensor
    fkl: torch.Tensor
    rkl: torch.Tensor
    w: torch.Tensor
    g_head: torch.Tensor
    g_tail: torch.Tensor
    head_size: torch.Tensor
    head_mass: torch.Tensor
    teacher_entropy: torch.Tensor
    student_entropy: torch.Tensor
    valid: torch.Tensor

    def to_dict(self) -> dict[str, torch.Tensor]:
        """The fields as a dict of tensors."""
        return asdict(self)

    def summary(self) -> dict[str, float]:
        """Means over valid positions of every field but `valid` (0.0 for an empty batch)."""
        count = int(self.valid.sum())
        out = {}
        for name, tensor in self.to_dict().items():
            if name == "valid":
                continue
            total = float(tensor[self.valid].double().sum()) if count else 0.0
            out[name] = total / count if count else 0.0
        return out
