"""The KD loss from hidden states and an output layer: logits computed chunk by chunk, never whole.

    loss = fused_linear_distillation_loss(student_hidden, lm_head.weight,
                                          teacher_logits=teacher_logits, loss="akl", labels=labels)

is `distillation_loss(student_hidden @ lm_head.weight.T, teacher_logits, ...)` without ever
holding the `[N, V]` student logits, their gradient or the teacher's logits (when the teacher
is given as hidden states + weight). p is the teacher (detached), q the student.

How (the chunked-loss pattern of Liger-Kernel's fused linear losses, written for our
catalogue): one autograd Function whose forward walks over chunks of `chunk_size` valid rows.
For each chunk it computes the logits z = h W^T (+ b) in the input dtype, the teacher's chunk
(sliced, or h_T W_T^T under no_grad), the per-row divergence and its gradient g = dL/dz with
the public `distillation_loss` (autograd on the chunk, divergences in float32 or float64),
plus the hard-label cross-entropy in closed form, and then folds g back at once:
grad_hidden[rows] = g W, grad_W += g^T h, grad_b += sum(g). The backward only scales the
stored gradients by the incoming scalar. With reduction="none" the row weights of the
backward are unknown at forward time, so the forward computes values only and the backward
recomputes the chunks (twice the matmuls, the same bounded memory).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch.autograd.function import once_differentiable

from ._checks import FLOAT_DTYPES, check_position_mask, check_temperature, compute_dtype
from .divergences import get_loss
from .losses import REDUCTIONS, distillation_loss

# Default chunk: max(_MIN_ROWS, _CHUNK_ELEMENTS // V) rows. The three matmuls of a chunk read
# the whole weight, so they need a few hundred rows to run near full speed (measured on CPU:
# 64-row chunks cost 1.7x the matmul time of 512-row ones); the chunk's float32 temporaries
# (a handful of [rows, V] buffers) stay far below the whole logits' size for long batches.
_CHUNK_ELEMENTS = 1 << 24
_MIN_ROWS = 256


class _Teacher:
    """The teacher side: dense logits, a duck-typed sparse top-k teacher, or hidden + weight."""

    def __init__(
        self,
        logits: Any = None,
        hidden: torch.Tensor | None = None,
        weight: torch.Tensor | None = None,
        bias: torch.Tensor | None = None,
        vocab: int = 0,
    ) -> None:
        self.logits, self.hidden, self.weight, self.bias, self.vocab = (
            logits, hidden, weight, bias, vocab)
        self.sparse = logits is not None and not isinstance(logits, torch.Tensor)
        if self.sparse:
            self.k = logits.indices.shape[-1]
            self.indices = logits.indices.reshape(-1, self.k)
            self.logprobs = logits.logprobs.reshape(-1, self.k)
        elif logits is not None:
            self.flat = logits.reshape(-1, logits.shape[-1])
        else:
            self.flat_hidden = hidden.reshape(-1, hidden.shape[-1])

    @torch.no_grad()
    def chunk(self, index: slice | torch.Tensor) -> Any:
        """The teacher for the chunk's rows: `[R, V]` logits or a sparse teacher of R rows."""
        if self.sparse:
            t = self.logits
            return type(t)(self.indices[index], self.logprobs[index], tail=t.tail)
        if self.logits is not None:
            return self.flat[index, : self.vocab]
        h = self.flat_hidden[index]
        return _linear(h, self.weight[: self.vocab],
                       None if self.bias is None else self.bias[: self.vocab])


def _linear(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """One chunk's logits `[R, V]` = h W^T (+ b), in the inputs' dtype."""
    if bias is None:
        return h @ weight.T
    return torch.addmm(bias, h, weight.T)


class _Plan:
    """Everything a chunk pass needs besides the student tensors."""

    def __init__(self, teacher: _Teacher, loss: str, params: dict[str, Any], temperature: float,
                 vocab: int, hard_weight: float, targets: torch.Tensor | None,
                 rows: torch.Tensor | None, n_rows: int, chunk: int, need: tuple[bool, ...],
                 scale: float, per_row: bool) -> None:
        self.teacher, self.loss, self.params, self.temperature = teacher, loss, params, temperature
        self.vocab, self.hard_weight, self.targets, self.rows = vocab, hard_weight, targets, rows
        self.n_rows, self.chunk, self.need, self.scale = n_rows, chunk, need, scale
        self.per_row = per_row

    def chunks(self) -> list[slice | torch.Tensor]:
        count = self.n_rows if self.rows is None else self.rows.numel()
        starts = range(0, count, self.chunk)
        if self.rows is None:
            return [slice(s, min(s + self.chunk, count)) for s in starts]
        return [self.rows[s : s + self.chunk] for s in starts]


def _run(
    plan: _Plan,
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    row_weights: torch.Tensor | float | None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """One pass over the chunks: per-row values `[N]` and, if `row_weights` is given, the
    gradients of sum_r row_weights[r] * value[r] w.r.t. (hidden, weight, bias)."""
    dtype = compute_dtype(hidden.dtype)
    values = torch.zeros(plan.n_rows, dtype=dtype, device=hidden.device)
    want_grad = row_weights is not None
    need_h, need_w, need_b = plan.need if want_grad else (False, False, False)
    need_b = need_b and bias is not None
    w_cut = weight[: plan.vocab]
    b_cut = None if bias is None else bias[: plan.vocab]
    grad_h = grad_w = grad_b = None
    if need_h:
        grad_h = hidden.new_zeros(hidden.shape) if plan.rows is not None else torch.empty_like(hidden)
    # Low-precision weights accumulate their gradient in float32 (one rounding at the end).
    acc_dtype = compute_dtype(weight.dtype)
    if need_w:
        grad_w = torch.zeros(weight.shape, dtype=acc_dtype, device=weight.device)
    if need_b:
        grad_b = torch.zeros(bias.shape, dtype=acc_dtype, device=bias.device)
    hw = plan.hard_weight
    for index in plan.chunks():
        h = hidden[index]
        z = _linear(h, w_cut, b_cut).to(dtype)
        teacher = plan.teacher.chunk(index)
        g = None
        if want_grad:
            rw = row_weights[index] if isinstance(row_weights, torch.Tensor) else row_weights
            with torch.enable_grad():
                leaf = z.detach().requires_grad_(True)
                kd = distillation_loss(leaf, teacher, loss=plan.loss, reduction="none",
                                       temperature=plan.temperature, **plan.params)
                kd_weight = rw * (1.0 - hw)
                if not isinstance(kd_weight, torch.Tensor):
                    kd_weight = torch.full_like(kd, kd_weight)
                (g,) = torch.autograd.grad(kd, leaf, grad_outputs=kd_weight.to(kd.dtype))
            kd = kd.detach()
        else:
            kd = distillation_loss(z, teacher, loss=plan.loss, reduction="none",
                                   temperature=plan.temperature, **plan.params)
        value = kd if hw == 0.0 else kd * (1.0 - hw)
        if hw > 0.0:
            target = plan.targets[index].unsqueeze(-1)
            lse = torch.logsumexp(z, dim=-1, keepdim=True)
            value = value + hw * (lse - z.gather(-1, target)).squeeze(-1)
            if g is not None:
                soft = z.sub_(lse).exp_()  # z is not needed any more: softmax in place
                soft.scatter_add_(-1, target, soft.new_full(target.shape, -1.0))
                ce_weight = rw * hw
                g.add_(soft.mul_(ce_weight.unsqueeze(-1) if isinstance(ce_weight, torch.Tensor)
                                 else ce_weight))
        values[index] = value
        if g is None:
            continue
        gw = g.to(weight.dtype)
        if need_h:
            grad_h[index] = gw @ w_cut
        if need_w:
            cut = grad_w[: plan.vocab]
            if acc_dtype == weight.dtype:
                cut.addmm_(gw.T, h)
            else:
                cut.add_(gw.T @ h)
        if need_b:
            grad_b[: plan.vocab].add_(g.sum(0))
    return values, grad_h, _cast(grad_w, weight), _cast(grad_b, bias)


def _cast(grad: torch.Tensor | None, like: torch.Tensor | None) -> torch.Tensor | None:
    return grad if grad is None or like is None else grad.to(like.dtype)


class _FusedLinearDistillation(torch.autograd.Function):
    """Scalar loss (reduction mean/sum: gradients computed in forward, scaled in backward) or
    per-row values (reduction none: the backward recomputes the chunks with its row weights)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        plan: _Plan,
    ) -> torch.Tensor:
        ctx.plan = plan
        if plan.per_row:
            values, *_ = _run(plan, hidden, weight, bias, None)
            ctx.save_for_backward(hidden, weight, bias)
            return values
        any_grad = any(plan.need)
        values, grad_h, grad_w, grad_b = _run(plan, hidden, weight, bias,
                                              plan.scale if any_grad else None)
        ctx.save_for_backward(grad_h, grad_w, grad_b)
        return values.sum() * plan.scale

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[Any, ...]:
        plan: _Plan = ctx.plan
        if plan.per_row:
            hidden, weight, bias = ctx.saved_tensors
            _, grad_h, grad_w, grad_b = _run(plan, hidden, weight, bias, grad_out)
            return grad_h, grad_w, grad_b, None
        grads = list(ctx.saved_tensors)
        if not bool(grad_out == 1):
            grads = [None if g is None else g * grad_out.to(g.dtype) for g in grads]
        return grads[0], grads[1], grads[2], None


def _tensor(name: str, value: Any, dims: int | None = None) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if value.dtype not in FLOAT_DTYPES:
        raise ValueError(f"{name} must be float16, bfloat16, float32 or float64, got {value.dtype}")
    if dims is not None and value.dim() != dims:
        raise ValueError(f"{name} must be {dims}-D, got shape {tuple(value.shape)}")
    if dims is None and value.dim() < 1:
        raise ValueError(f"{name} must have shape [..., H]; got a 0-d tensor")
    return value


def _check_layer(prefix: str, hidden: Any, weight: Any, bias: Any) -> tuple[int, int]:
    """Check a (hidden [..., H], weight [V, H], bias [V]) triple; returns (V, H)."""
    hidden = _tensor(f"{prefix}_hidden", hidden)
    weight = _tensor(f"{prefix}_weight", weight, dims=2)
    size = hidden.shape[-1]
    if weight.shape[1] != size:
        raise ValueError(
            f"{prefix}_weight has shape {tuple(weight.shape)} but {prefix}_hidden has H = "
            f"{size} features; the weight must be [V, H] (an lm_head weight, not its transpose)"
        )
    tensors = [(f"{prefix}_weight", weight)]
    if bias is not None:
        bias = _tensor(f"{prefix}_bias", bias, dims=1)
        if bias.shape[0] != weight.shape[0]:
            raise ValueError(f"{prefix}_bias has {bias.shape[0]} entries but {prefix}_weight has "
                             f"V = {weight.shape[0]} rows")
        tensors.append((f"{prefix}_bias", bias))
    for name, t in tensors:
        if t.dtype != hidden.dtype:
            raise ValueError(f"{name} is {t.dtype} but {prefix}_hidden is {hidden.dtype}; "
                             f"the matmul needs one dtype (cast one of them)")
    return weight.shape[0], size


def _check_device(reference: torch.Tensor, **tensors: Any) -> None:
    for name, t in tensors.items():
        if isinstance(t, torch.Tensor) and t.device != reference.device:
            raise ValueError(f"{name} is on {t.device} but student_hidden on {reference.device}; "
                             f"move every input to one device")


def fused_linear_distillation_loss(
    student_hidden: torch.Tensor,
    student_weight: torch.Tensor,
    *,
    student_bias: torch.Tensor | None = None,
    teacher_logits: Any = None,
    teacher_hidden: torch.Tensor | None = None,
    teacher_weight: torch.Tensor | None = None,
    teacher_bias: torch.Tensor | None = None,
    loss: str = "akl",
    labels: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    ignore_index: int = -100,
    hard_weight: float = 0.0,
    temperature: float = 1.0,
    reduction: str = "mean",
    num_items: int | float | torch.Tensor | None = None,
    chunk_size: int | None = None,
    vocab_size: int | None = None,
    **params: Any,
) -> torch.Tensor:
    """`distillation_loss` from hidden states: the student logits `student_hidden @
    student_weight.T (+ student_bias)` are computed `chunk_size` rows at a time, never whole.

    student_hidden `[..., H]` (the lm_head's input), student_weight `[V, H]`, student_bias `[V]`.
    The teacher (detached, never differentiated) is EITHER `teacher_logits` `[..., V]` (or a
    sparse top-k teacher such as `akl_core.SparseTeacher`) OR `teacher_hidden` `[..., Ht]` +
    `teacher_weight` `[V, Ht]` (+ `teacher_bias`), whose logits are computed per chunk under
    no_grad. Returns the loss (float32; float64 for float64 inputs) with gradients for
    student_hidden, student_weight and student_bias, in their own dtypes. Matmuls run in the
    inputs' dtype, divergences in float32 (float64 for float64).

    total per position = (1 - hard_weight) * KD + hard_weight * CE, CE the hard-label
    cross-entropy of the student logits (temperature 1) at `labels` (hard_weight = 1 - kd_ratio).
    labels, mask, ignore_index, reduction ("mean" pooled over valid positions, "sum", "none"),
    num_items, temperature (divides both logits for KD; no tau^2) and vocab_size (cuts both
    vocabularies) mean exactly what they mean in `distillation_loss`; only valid positions are
    computed. `chunk_size`: rows per chunk (default max(256, 2^24 // V)). `params`:
    the loss's parameters (`akl_core.LOSSES[loss].params`).
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    resolved = get_loss(loss).resolve(params)
    temperature = check_temperature(temperature)
    if isinstance(hard_weight, bool) or not isinstance(hard_weight, (int, float)) or not (
        0.0 <= hard_weight <= 1.0
    ):
        raise ValueError(f"hard_weight must be a number in [0, 1], got {hard_weight!r}")
    hard_weight = float(hard_weight)
    if chunk_size is not None and (
        isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1
    ):
        raise ValueError(f"chunk_size must be a positive int (rows per chunk), got {chunk_size!r}")

    vocab, size = _check_layer("student", student_hidden, student_weight, student_bias)
    positions = student_hidden.shape[:-1]
    teacher, teacher_vocab = _teacher_side(
        positions, teacher_logits, teacher_hidden, teacher_weight, teacher_bias)
    sparse = teacher_logits if teacher.sparse else None
    _check_device(student_hidden, student_weight=student_weight, student_bias=student_bias,
                  teacher_logits=None if teacher.sparse else teacher_logits,
                  teacher_hidden=teacher_hidden, teacher_weight=teacher_weight,
                  teacher_bias=teacher_bias,
                  **({} if sparse is None else {"teacher_logits.indices": sparse.indices,
                                                "teacher_logits.logprobs": sparse.logprobs}))
    vocab = _cut_vocab(vocab, teacher_vocab, vocab_size, teacher.sparse)
    teacher.vocab = vocab

    labels = check_position_mask("labels", labels, positions)
    mask = check_position_mask("mask", mask, positions)
    n_rows = math.prod(positions)
    valid = None
    if labels is not None:
        valid = labels.to(student_hidden.device).reshape(-1) != ignore_index
    if mask is not None:
        m = mask.to(student_hidden.device).reshape(-1).bool()
        valid = m if valid is None else valid & m
    rows = None if valid is None or bool(valid.all()) else valid.nonzero().squeeze(-1)
    count = n_rows if rows is None else rows.numel()
    targets = None
    if hard_weight > 0.0:
        targets = _check_targets(labels, rows, vocab, student_hidden.device)

    scale = 1.0
    if reduction == "mean":
        if num_items is not None:
            denom = float(num_items.item() if isinstance(num_items, torch.Tensor) else num_items)
            if not denom > 0:
                raise ValueError(f"num_items must be > 0, got {num_items!r}")
            scale = 1.0 / denom
        elif count > 0:
            scale = 1.0 / count
    grad_on = torch.is_grad_enabled()
    need = (grad_on and student_hidden.requires_grad, grad_on and student_weight.requires_grad,
            grad_on and student_bias is not None and student_bias.requires_grad)
    chunk = chunk_size if chunk_size is not None else max(_MIN_ROWS, _CHUNK_ELEMENTS // vocab)
    plan = _Plan(teacher, loss, resolved, temperature, vocab, hard_weight, targets, rows,
                 n_rows, chunk, need, scale, per_row=reduction == "none")
    out = _FusedLinearDistillation.apply(
        student_hidden.reshape(n_rows, size), student_weight, student_bias, plan)
    return out.reshape(positions) if reduction == "none" else out


def _teacher_side(
    positions: torch.Size,
    logits: Any,
    hidden: torch.Tensor | None,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
) -> tuple[_Teacher, int]:
    """Validate the teacher arguments; returns the teacher and its vocabulary size."""
    if logits is not None and (hidden is not None or weight is not None or bias is not None):
        raise ValueError("give the teacher EITHER as teacher_logits OR as teacher_hidden + "
                         "teacher_weight (+ teacher_bias), not both")
    if logits is None:
        if hidden is None or weight is None:
            raise ValueError("the teacher is missing: pass teacher_logits [..., V], or "
                             "teacher_hidden [..., Ht] together with teacher_weight [V, Ht]")
        teacher_vocab, _ = _check_layer("teacher", hidden, weight, bias)
        if hidden.shape[:-1] != positions:
            raise ValueError(f"teacher_hidden has positions {tuple(hidden.shape[:-1])} but "
                             f"student_hidden {tuple(positions)}; they must agree on every "
                             f"dimension but the last (H)")
        return _Teacher(hidden=hidden.detach(), weight=weight.detach(),
                        bias=None if bias is None else bias.detach()), teacher_vocab
    if all(hasattr(logits, a) for a in ("indices", "logprobs", "tail")):
        lead = tuple(logits.indices.shape[:-1])
        if lead != tuple(positions):
            raise ValueError(f"the sparse teacher has positions {lead} but student_hidden "
                             f"{tuple(positions)}")
        return _Teacher(logits=logits), 0
    logits = _tensor("teacher_logits", logits)
    if logits.shape[:-1] != positions:
        raise ValueError(f"teacher_logits has shape {tuple(logits.shape)} but student_hidden "
                         f"has positions {tuple(positions)}; they must agree on every dimension "
                         f"but the last")
    return _Teacher(logits=logits.detach()), logits.shape[-1]


def _cut_vocab(vocab: int, teacher_vocab: int, vocab_size: int | None, sparse: bool) -> int:
    """The vocabulary both sides are cut to (`vocab_size`, or V when both agree)."""
    if vocab_size is not None:
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 1:
            raise ValueError(f"vocab_size must be a positive int, got {vocab_size!r}")
        limit = vocab if sparse else min(vocab, teacher_vocab)
        if vocab_size > limit:
            raise ValueError(f"vocab_size={vocab_size} exceeds the vocabulary sizes (student "
                             f"{vocab}{'' if sparse else f', teacher {teacher_vocab}'})")
        return vocab_size
    if not sparse and teacher_vocab != vocab:
        raise ValueError(
            f"vocabulary size mismatch: student_weight has V = {vocab} rows, the teacher "
            f"{teacher_vocab} entries. If both models share one tokenizer and one output layer "
            f"is padded, pass vocab_size=<tokenizer size> (at most {min(vocab, teacher_vocab)})")
    return vocab


def _check_targets(
    labels: torch.Tensor | None, rows: torch.Tensor | None, vocab: int, device: torch.device
) -> torch.Tensor:
    """The hard-label targets (flat, int64), checked to lie in [0, vocab) at valid positions."""
    if labels is None:
        raise ValueError("hard_weight > 0 needs labels (the hard-label cross-entropy's targets)")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"labels must be integer token ids, got {labels.dtype}")
    targets = labels.to(device).reshape(-1).long()
    live = targets if rows is None else targets[rows]
    if live.numel() and (int(live.min()) < 0 or int(live.max()) >= vocab):
        raise ValueError(f"labels must lie in [0, {vocab}) at valid positions (or equal "
                         f"ignore_index); got values in [{int(live.min())}, {int(live.max())}]")
    return targets
