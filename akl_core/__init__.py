"""akl_core: exact, chunked knowledge-distillation divergences with head/tail diagnostics.

p is always the TEACHER distribution and q the STUDENT's; logits are `[..., V]`.

    import akl_core
    loss = akl_core.distillation_loss(student_logits, teacher_logits, loss="akl", labels=labels)
    diag = akl_core.head_tail(student_logits, teacher_logits)   # g_head, g_tail, w, ...
"""

from .divergences import LOSSES, LossSpec, ParamSpec, get_loss, resolve_params
from .headtail import BOUNDARIES, HeadTail, head_mask, head_tail
from .losses import distillation_loss, divergence, per_token_divergences
from .stats import KDStats
from .taid import TAIDSchedule

__all__ = [
    "BOUNDARIES",
    "LOSSES",
    "HeadTail",
    "KDStats",
    "LossSpec",
    "ParamSpec",
    "TAIDSchedule",
    "distillation_loss",
    "divergence",
    "get_loss",
    "head_mask",
    "head_tail",
    "per_token_divergences",
    "resolve_params",
]

__version__ = "0.1.0"
