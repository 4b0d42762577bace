"""akl_core: exact, chunked knowledge-distillation divergences with head/tail diagnostics.

p is always the TEACHER distribution and q the STUDENT's; logits are `[..., V]`.

    import akl_core
    loss = akl_core.distillation_loss(student_logits, teacher_logits, loss="akl", labels=labels)
    diag = akl_core.head_tail(student_logits, teacher_logits)   # g_head, g_tail, w, ...
    top_k = akl_core.SparseTeacher(indices, logprobs)             # a top-k teacher, anywhere
"""

from . import _openmp  # noqa: F401  (first: OpenMP's spin default, before torch loads)
from .divergences import LOSSES, LossSpec, ParamSpec, get_loss, resolve_params
from .fused import fused_linear_distillation_loss
from .headtail import BOUNDARIES, HeadTail, head_mask, head_tail
from .losses import distillation_loss, divergence, per_token_divergences
from .sparse import SparseTeacher
from .stats import KDStats
from .taid import TAIDSchedule

__all__ = [
    "BOUNDARIES",
    "LOSSES",
    "HeadTail",
    "KDStats",
    "LossSpec",
    "ParamSpec",
    "SparseTeacher",
    "TAIDSchedule",
    "distillation_loss",
    "divergence",
    "fused_linear_distillation_loss",
    "get_loss",
    "head_mask",
    "head_tail",
    "per_token_divergences",
    "resolve_params",
]

__version__ = "0.1.0"
