"""Per-position diagnostics of next-token distributions: one function for the engine's probes,
the Token inspector and the notebooks.

Convention: position i is the model predicting ``tokens[i]`` from the tokens before it;
p = teacher, q = student, both softmax(logits / temperature). Every number comes from
``akl_core.distillation_loss(..., return_stats=True)`` (the chosen loss per token, FKL, RKL
and the head/tail split) and, on request, ``akl_core.per_token_divergences`` (the whole
catalogue); nothing is computed here.

    d = model_diagnostics(teacher, input_ids, student=student, loss="akl", topk=5)
    d.w[i], d.g_head[i], d.teacher_topk[i]   # [[token string, probability], ...]
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch

import akl_core


@dataclass
class PositionDiagnostics:
    """Per-position lists (length T = number of predicted tokens).

    Teacher-only fields are always set; the student fields (entropy, top-k, w, g_head, g_tail,
    loss_value = the chosen loss, fkl = KL(p||q), rkl = KL(q||p)) only with a student.
    head_size / head_mass: the teacher's head (the loss's mu/boundary for akl/akl_r, else
    mu = 0.5, "reference", unless given). teacher_topk / student_topk: per position a list
    of [token string, probability] pairs, most probable first. divergences: every catalogue
    divergence at default parameters per token (when asked for).
    """

    tokens: list[str]
    token_ids: list[int]
    head_size: list[int]
    head_mass: list[float]
    teacher_entropy: list[float]
    teacher_topk: list[list[list]]
    student_entropy: list[float] | None = None
    student_topk: list[list[list]] | None = None
    w: list[float] | None = None
    g_head: list[float] | None = None
    g_tail: list[float] | None = None
    loss_value: list[float] | None = None
    fkl: list[float] | None = None
    rkl: list[float] | None = None
    divergences: dict[str, list[float]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def topk_tokens(
    logits: torch.Tensor, tokenizer: Any, k: int, temperature: float = 1.0
) -> list[list[list]]:
    """The `k` most probable tokens of softmax(logits / temperature) per row of `[T, V]` logits,
    as [[token string, probability], ...] lists, most probable first."""
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"topk must be a positive integer, got {k!r}")
    k = min(k, logits.shape[-1])
    probs, idx = torch.softmax(logits.float() / temperature, dim=-1).topk(k, dim=-1)
    return [[[tokenizer.decode([i]), float(p)] for p, i in zip(pr, ix)]
            for pr, ix in zip(probs.tolist(), idx.tolist())]


@torch.no_grad()
def position_diagnostics(
    teacher_logits: torch.Tensor,
    token_ids: torch.Tensor | list[int],
    tokenizer: Any,
    *,
    student_logits: torch.Tensor | None = None,
    loss: str = "akl",
    loss_params: dict | None = None,
    temperature: float = 1.0,
    topk: int = 5,
    vocab_size: int | None = None,
    mu: float | None = None,
    boundary: str | None = None,
    all_divergences: bool = False,
) -> PositionDiagnostics:
    """Diagnostics of `[T, V]` teacher (and student) logits whose rows predict `token_ids` [T].

    The chosen `loss` (with `loss_params`) gives loss_value and, for akl/akl_r, the head's
    mu/boundary; `mu`/`boundary` override the head split (the inspector's own setting).
    `vocab_size` cuts both logits (padded heads). Raises ValueError on bad shapes.
    """
    t = teacher_logits
    if t.dim() != 2:
        raise ValueError(f"teacher_logits must be [T, V], got shape {tuple(t.shape)}")
    ids = torch.as_tensor(token_ids).reshape(-1).tolist()
    if len(ids) != t.shape[0]:
        raise ValueError(f"{len(ids)} token ids for {t.shape[0]} positions")
    if vocab_size is not None:
        t = t[..., :vocab_size]
    t = t.float()
    s = None
    if student_logits is not None:
        s = student_logits[..., :vocab_size] if vocab_size is not None else student_logits
        s = s.float().to(t.device)
        if s.shape != t.shape:
            raise ValueError(f"student logits {tuple(s.shape)} and teacher logits "
                             f"{tuple(t.shape)} differ: pass vocab_size for padded heads")
    params = akl_core.resolve_params(loss, **(loss_params or {}))
    _, stats = akl_core.distillation_loss(
        s if s is not None else t, t, loss=loss, temperature=temperature, reduction="none",
        return_stats=True, **params,
    )
    head_size, head_mass = stats.head_size, stats.head_mass
    g_head, g_tail, w = stats.g_head, stats.g_tail, stats.w
    if mu is not None or boundary is not None:
        ht = akl_core.head_tail(
            s if s is not None else t, t, mu=0.5 if mu is None else mu,
            boundary=boundary or "reference", temperature=temperature,
        )
        head_size, head_mass, g_head, g_tail, w = (ht.head_size, ht.head_mass, ht.g_head,
                                                   ht.g_tail, ht.w)
    out = PositionDiagnostics(
        tokens=[tokenizer.decode([i]) for i in ids],
        token_ids=[int(i) for i in ids],
        head_size=[int(x) for x in head_size.tolist()],
        head_mass=head_mass.tolist(),
        teacher_entropy=stats.teacher_entropy.tolist(),
        teacher_topk=topk_tokens(t, tokenizer, topk, temperature),
    )
    if s is None:
        return out
    out.student_entropy = stats.student_entropy.tolist()
    out.student_topk = topk_tokens(s, tokenizer, topk, temperature)
    out.w, out.g_head, out.g_tail = w.tolist(), g_head.tolist(), g_tail.tolist()
    out.loss_value = stats.value.float().tolist()
    out.fkl, out.rkl = stats.fkl.float().tolist(), stats.rkl.float().tolist()
    if all_divergences:
        divs = akl_core.per_token_divergences(s, t, temperature=temperature)
        out.divergences = {name: v.float().tolist() for name, v in divs.items()}
        out.divergences[f"{loss} (chosen)"] = out.loss_value
    return out


def _logits(bundle: Any, input_ids: torch.Tensor) -> torch.Tensor:
    """[L-1, V] float32 CPU logits of a bundle (or a bare model) over one sequence, eval mode."""
    model = bundle if isinstance(bundle, torch.nn.Module) else bundle.model
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        logits = model(input_ids=input_ids.reshape(1, -1).to(device)).logits[0, :-1]
    finally:
        model.train(was_training)
    return logits.float().cpu()


@torch.no_grad()
def model_diagnostics(
    teacher: Any,
    input_ids: torch.Tensor,
    *,
    student: Any = None,
    predict: torch.Tensor | None = None,
    tokenizer: Any = None,
    teacher_logits: torch.Tensor | None = None,
    **kwargs: Any,
) -> PositionDiagnostics:
    """Forward one sequence `input_ids` [L] through the teacher (and student) and diagnose the
    positions predicting input_ids[1:] (all, or those where `predict` [L-1] bool is True).

    teacher / student: ModelBundles (or bare models with `tokenizer=`); the student is put in
    eval mode for the forward and back after. `teacher_logits` [L-1, V] replaces the teacher
    forward (rows for the kept positions only; then `teacher` may be None). Other keyword
    arguments go to :func:`position_diagnostics`.
    """
    input_ids = torch.as_tensor(input_ids).reshape(-1).cpu()
    if input_ids.numel() < 2:
        raise ValueError("the text is too short: it needs at least 2 tokens")
    tok = tokenizer if tokenizer is not None else getattr(teacher, "tokenizer", None)
    if tok is None:
        raise ValueError("no tokenizer: pass a ModelBundle or tokenizer=")
    t = teacher_logits if teacher_logits is not None else _logits(teacher, input_ids)
    s = _logits(student, input_ids) if student is not None else None
    targets = input_ids[1:]
    if predict is not None:
        keep = torch.as_tensor(predict).reshape(-1).bool().cpu()
        if keep.numel() != targets.numel():
            raise ValueError(f"predict has {keep.numel()} entries for {targets.numel()} positions")
        if teacher_logits is None:
            t = t[keep]
        s = s[keep] if s is not None else None
        targets = targets[keep]
    return position_diagnostics(t, targets, tok, student_logits=s, **kwargs)
