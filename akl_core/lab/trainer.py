"""KDTrainer: knowledge distillation with akl_core's losses on transformers' Trainer.

    from transformers import TrainingArguments
    from akl_core.lab.trainer import KDCollator, KDTrainer

    trainer = KDTrainer(
        model=student, teacher_model=teacher, loss="akl", loss_params={"mu": 0.5},
        kd_ratio=1.0, temperature=1.0,
        args=TrainingArguments("out", per_device_train_batch_size=8, max_steps=1000),
        train_dataset=rows,                          # dicts: input_ids, labels (-100 = no target)
        data_collator=KDCollator(tokenizer.pad_token_id),
    )
    trainer.train()

Per micro-batch (positions aligned as logits[:, :-1] against labels[:, 1:]; p = teacher, q =
student; the teacher runs under no_grad in eval mode):

    loss = kd_ratio * KD + (1 - kd_ratio) * CE,   both sums over valid positions / num_items

where num_items is the number of valid positions of the WHOLE optimizer step: every micro-batch
of the gradient accumulation, on every process (gathered), as the Trainer passes it in
``num_items_in_batch``. Each process returns its loss times the number of processes, because
DDP / FSDP / DeepSpeed average the gradients over processes; so gradients and the recorded
values equal those of one process with the whole batch (tested: 2 processes x batch b ==
1 process x batch 2b, and 2 accumulation steps x b == 2b).

Instead of a teacher model the batches may carry a sparse teacher (an offline teacher cache):
``teacher_topk_ids`` / ``teacher_topk_logprobs`` of shape [N, k] for the N valid positions of
the batch in row-major order (see KDCollator); they become an ``akl_core.SparseTeacher``.

Per-step diagnostics come from ``distillation_loss(..., return_stats=True)`` of the same
call; after every optimizer step ``trainer.last_step`` holds their means over the step's valid
positions (reduced over processes), and the Trainer's logs carry their means since the last log.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from transformers import Trainer, TrainerCallback

import akl_core

SPARSE_KEYS = ("teacher_topk_ids", "teacher_topk_logprobs")
KD_STATE_FILE = "akl_kd_state.json"
# Accumulated per optimizer step: losses already divided by num_items; stats as sums.
_STAT_FIELDS = ("fkl", "rkl", "w", "g_head", "g_tail", "head_size", "head_mass",
                "teacher_entropy", "student_entropy")
_FIELDS = ("kd_loss", "lm_loss", *_STAT_FIELDS, "positions", "tokens")


class _PhaseStop(Exception):
    """Raised by KDTrainer between the phases of a step when its ``stop_check`` says stop;
    akl_core.lab.engine.train turns it into a clean stop (the finished steps are kept, the
    interrupted step is dropped)."""


class KDCollator:
    """Right-pads rows of ``input_ids`` / ``labels`` (and optional ``attention_mask``) to the
    longest row of the batch: pad id, mask 0, label -100. Rows are dicts of 1-D lists/tensors.

    Sparse-teacher rows (``teacher_topk_ids`` / ``teacher_topk_logprobs``, [n_i, k] with n_i
    the row's valid positions) are concatenated in batch order. `pad_to_multiple_of` rounds
    the padded length up (tensor cores)."""

    def __init__(self, pad_token_id: int = 0, pad_to_multiple_of: int | None = None) -> None:
        self.pad_token_id = int(pad_token_id)
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, rows: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if not rows:
            raise ValueError("KDCollator got an empty batch")
        ids = [torch.as_tensor(r["input_ids"], dtype=torch.long).reshape(-1) for r in rows]
        width = max(len(x) for x in ids)
        if self.pad_to_multiple_of:
            m = self.pad_to_multiple_of
            width = (width + m - 1) // m * m
        out = {
            "input_ids": torch.full((len(rows), width), self.pad_token_id, dtype=torch.long),
            "attention_mask": torch.zeros((len(rows), width), dtype=torch.long),
            "labels": torch.full((len(rows), width), -100, dtype=torch.long),
        }
        for i, (row, x) in enumerate(zip(rows, ids)):
            n = len(x)
            out["input_ids"][i, :n] = x
            mask = row.get("attention_mask")
            out["attention_mask"][i, :n] = 1 if mask is None else torch.as_tensor(mask)[:n]
            labels = torch.as_tensor(row["labels"], dtype=torch.long).reshape(-1)
            if len(labels) != n:
                raise ValueError(f"row {i}: {len(labels)} labels for {n} input ids")
            out["labels"][i, :n] = labels
        for key in SPARSE_KEYS:
            if key in rows[0]:
                out[key] = torch.cat([torch.as_tensor(r[key]) for r in rows])
        return out


class _KDStepCallback(TrainerCallback):
    """Closes each optimizer step (reduce the diagnostics, TAID update) and saves the KD state
    into each checkpoint. Registered first, so later callbacks see ``trainer.last_step``."""

    def __init__(self, trainer: KDTrainer) -> None:
        self.trainer = trainer

    def on_train_begin(self, args, state, control, **kwargs):
        self.trainer._acc = None  # nothing from calls outside training

    def on_step_end(self, args, state, control, **kwargs):
        self.trainer._end_step(state)

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

            folder = os.path.join(args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}")
            if os.path.isdir(folder):
                with open(os.path.join(folder, KD_STATE_FILE), "w", encoding="utf-8") as f:
                    json.dump(self.trainer.kd_state(), f)


class KDTrainer(Trainer):
    """A ``transformers.Trainer`` whose loss is ``akl_core.distillation_loss`` (see the module).

    teacher_model: a causal LM sharing the student's vocabulary; put in eval mode with
        requires_grad off, and on the Trainer's device unless it has a device map. None: the
        batches carry a sparse teacher (``teacher_topk_*``, from a teacher cache).
    loss, loss_params: a name of ``akl_core.LOSSES`` and its parameters (validated now). For
        ``taid`` without ``t``, t follows ``akl_core.TAIDSchedule`` (saved in checkpoints).
    kd_ratio: weight of the KD term; (1 - kd_ratio) goes to the cross-entropy on the labels.
    temperature: divides both logits (no tau^2 factor).
    vocab_size: compare only the first logit columns (padded heads); default: all, and the
        two models must then have the same number of output rows.
    lr_lambda: optional multiplier of the learning rate per optimizer step (a LambdaLR
        replaces the Trainer's scheduler).
    Other arguments go to ``transformers.Trainer`` (``args``, ``train_dataset``, ...).
    ``args.remove_unused_columns`` is turned off (the sparse-teacher keys must reach
    compute_loss).
    """

    # compute_loss divides by the whole step's num_items itself: no further division by the
    # number of accumulation steps in Trainer.training_step.
    loss_is_scaled_for_ga = True

    def __init__(
        self,
        model: Any = None,
        args: Any = None,
        *,
        teacher_model: Any = None,
        loss: str = "akl",
        loss_params: dict | None = None,
        kd_ratio: float = 1.0,
        temperature: float = 1.0,
        vocab_size: int | None = None,
        lr_lambda: Callable[[int], float] | None = None,
        callbacks: list | None = None,
        **kwargs: Any,
    ) -> None:
        if loss not in akl_core.LOSSES:
            raise ValueError(f"loss must be one of {sorted(akl_core.LOSSES)}, got {loss!r}")
        self.kd_loss_name = loss
        self.kd_params = akl_core.resolve_params(loss, **(loss_params or {}))
        if isinstance(kd_ratio, bool) or not 0.0 <= float(kd_ratio) <= 1.0:
            raise ValueError(f"kd_ratio must be in [0, 1], got {kd_ratio!r}")
        if isinstance(temperature, bool) or not float(temperature) > 0 or \
                not math.isfinite(float(temperature)):
            raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
        if vocab_size is not None and (not isinstance(vocab_size, int) or vocab_size < 1):
            raise ValueError(f"vocab_size must be a positive integer, got {vocab_size!r}")
        self.kd_ratio = float(kd_ratio)
        self.temperature = float(temperature)
        self.vocab_size = vocab_size
        self.taid = (akl_core.TAIDSchedule()
                     if loss == "taid" and "t" not in (loss_params or {}) else None)
        self._lr_lambda = lr_lambda
        self.last_step: dict[str, Any] | None = None
        # Checked before each micro-batch's forward and after its backward (see training_step).
        self.stop_check: Callable[[], bool] | None = None
        self._acc: torch.Tensor | None = None
        self._log_sums: dict[str, float] = {}
        self._log_steps = 0
        super().__init__(model=model, args=args,
                         callbacks=[_KDStepCallback(self), *(callbacks or [])], **kwargs)
        self.args.remove_unused_columns = False
        self.teacher_model = teacher_model
        if teacher_model is not None:
            teacher_model.eval()
            teacher_model.requires_grad_(False)
            if getattr(teacher_model, "hf_device_map", None) is None:
                teacher_model.to(self.args.device)

    # -- the loss ------------------------------------------------------------------------------
    def training_step(self, model: Any, inputs: dict[str, Any],
                      num_items_in_batch: torch.Tensor | int | None = None) -> torch.Tensor:
        """Trainer.training_step (forward + backward of one micro-batch), with ``stop_check``
        asked before the forward and after the backward: True raises _PhaseStop, so Stop
        waits for at most one forward/backward (single process only; engine.train sets it)."""
        if self.stop_check is not None and self.stop_check():
            raise _PhaseStop
        loss = super().training_step(model, inputs, num_items_in_batch)
        if self.stop_check is not None and self.stop_check():
            raise _PhaseStop
        return loss

    def get_batch_samples(self, epoch_iterator: Any, num_batches: int,
                          device: Any) -> tuple[list, torch.Tensor | None]:
        """The step's micro-batches and ``num_items_in_batch``: the valid (shifted) label
        positions of all of them, summed over processes.

        transformers counts these only for models whose forward takes loss kwargs (then over
        ``labels[..., 1:]`` for causal LMs, gathered over processes when
        ``average_tokens_across_devices``); here they are counted for every model."""
        batches = []
        for _ in range(num_batches):
            try:
                batches.append(next(epoch_iterator))
            except StopIteration:
                break
        if not batches:
            return batches, None
        count = sum((b["labels"][..., 1:] != -100).sum() for b in batches).to(device)
        if self.accelerator.num_processes > 1:
            count = self.accelerator.gather(count.reshape(1)).sum()
        return batches, count

    def current_params(self) -> dict[str, Any]:
        """The loss parameters of the coming step (TAID's scheduled t filled in)."""
        if self.taid is None:
            return self.kd_params
        return {**self.kd_params, "t": float(self.taid.t)}

    def _teacher_rows(self, inputs: dict[str, Any], model_inputs: dict[str, Any],
                      valid: torch.Tensor, device: torch.device) -> Any:
        """The teacher at the valid positions: [N, V] logits, or a SparseTeacher."""
        if self.teacher_model is None:
            if not all(k in inputs for k in SPARSE_KEYS):
                raise ValueError("KDTrainer has no teacher_model and the batch carries no "
                                 f"sparse teacher ({', '.join(SPARSE_KEYS)})")
            sparse_cls = getattr(akl_core, "SparseTeacher", None)
            if sparse_cls is None:
                raise ValueError("this akl_core has no SparseTeacher: a teacher cache needs it")
            ids = inputs[SPARSE_KEYS[0]].to(device).long()
            # float64 keeps 1 - sum(p) (the tail bucket) exact when the tail is tiny
            logprobs = inputs[SPARSE_KEYS[1]].to(device)
            if ids.shape[0] != int(valid.sum()):
                raise ValueError(f"the sparse teacher has {ids.shape[0]} positions, the batch "
                                 f"{int(valid.sum())} valid ones: the cache does not match "
                                 "the data")
            return sparse_cls(ids, logprobs, tail="bucket")
        teacher_device = next(self.teacher_model.parameters()).device
        with torch.no_grad(), self.accelerator.autocast():
            t = self.teacher_model(**{k: v.to(teacher_device) for k, v in model_inputs.items()})
        return t.logits[:, :-1][valid.to(teacher_device)].to(device)

    def compute_loss(
        self,
        model: Any,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        """The KD (+ CE) loss of one micro-batch, normalised by the step's `num_items_in_batch`
        (see the module); accumulates the step's diagnostics while training."""
        labels = inputs["labels"]
        model_inputs = {k: v for k, v in inputs.items()
                        if k != "labels" and k not in SPARSE_KEYS}
        outputs = model(**model_inputs)
        logits = outputs.logits
        target = labels[:, 1:].to(logits.device)
        valid = target != -100
        s = logits[:, :-1][valid]  # [N, V] student logits at the valid positions
        t = self._teacher_rows(inputs, model_inputs, valid, logits.device)
        if num_items_in_batch is None:  # a plain call (not from Trainer.training_step)
            num_items_in_batch = valid.sum()
        vocab = self.vocab_size
        if vocab is None and isinstance(t, torch.Tensor) and t.shape[-1] != s.shape[-1]:
            raise ValueError(f"student ({s.shape[-1]}) and teacher ({t.shape[-1]}) have "
                             "different output sizes: pass vocab_size= (the shared tokenizer "
                             "size)")
        if self.state.global_step and not bool(torch.isfinite(s).all()):  # last update diverged
            raise ValueError(f"the student's logits became non-finite at step "
                             f"{self.state.global_step + 1}: the learning rate "
                             f"{self.args.learning_rate:g} is too high")
        kd, stats = akl_core.distillation_loss(
            s, t, loss=self.kd_loss_name, temperature=self.temperature, vocab_size=vocab,
            num_items=num_items_in_batch, return_stats=True, **self.current_params(),
        )
        n_items = (num_items_in_batch if isinstance(num_items_in_batch, torch.Tensor)
                   else torch.tensor(num_items_in_batch))
        n_items = n_items.to(device=s.device, dtype=torch.float32).clamp_min(1.0)
        if self.kd_ratio < 1.0:
            lm = F.cross_entropy(s.float(), target[valid], reduction="sum") / n_items
            loss = self.kd_ratio * kd + (1.0 - self.kd_ratio) * lm
        else:
            with torch.no_grad():
                lm = F.cross_entropy(s.detach().float(), target[valid], reduction="sum") / n_items
            loss = kd
        if model.training:
            self._accumulate(kd.detach(), lm.detach(), stats, valid,
                             model_inputs.get("attention_mask"))
            # DDP / FSDP / DeepSpeed average gradients over processes; num_items counts the
            # positions of all of them.
            loss = loss * self.accelerator.num_processes
        return (loss, outputs) if return_outputs else loss

    def _accumulate(self, kd: torch.Tensor, lm: torch.Tensor, stats: Any, valid: torch.Tensor,
                    attention: torch.Tensor | None) -> None:
        dev = kd.device
        dtype = torch.float32 if dev.type == "mps" else torch.float64
        parts = [kd.to(dtype), lm.to(dtype)]
        parts += [getattr(stats, name).to(dtype).sum() for name in _STAT_FIELDS]
        parts.append(valid.sum().to(dtype))
        tokens = (attention.sum() if attention is not None
                  else torch.tensor(valid.shape[0] * (valid.shape[1] + 1)))
        parts.append(tokens.to(device=dev, dtype=dtype))
        vec = torch.stack(parts)
        self._acc = vec if self._acc is None else self._acc + vec

    def _end_step(self, state: Any) -> None:
        """Reduce the step's sums over processes into ``last_step``; update TAID's t."""
        acc = self._acc
        self._acc = None
        if acc is None:
            return
        if self.accelerator.num_processes > 1:
            acc = self.accelerator.reduce(acc, reduction="sum")
        vals = dict(zip(_FIELDS, acc.tolist()))
        count = vals["positions"]
        kd, lm = vals["kd_loss"], vals["lm_loss"]
        loss = kd if self.kd_ratio >= 1.0 else self.kd_ratio * kd + (1 - self.kd_ratio) * lm
        if not math.isfinite(loss):
            raise ValueError(f"the loss became non-finite ({loss}) at step {state.global_step}; "
                             f"lower the learning rate (now {self.args.learning_rate})")
        step = {"loss": loss, "kd_loss": kd, "lm_loss": lm}
        step.update({name: vals[name] / count if count else 0.0 for name in _STAT_FIELDS})
        step["tokens"] = int(round(vals["tokens"]))
        step["positions"] = int(round(count))
        step["taid_t"] = float(self.taid.t) if self.taid is not None else None
        if self.taid is not None:
            self.taid.update(kd, state.global_step - 1, max(state.max_steps, 1))
        self.last_step = step
        for key in ("kd_loss", "lm_loss", "g_head", "g_tail", "w", "fkl", "rkl"):
            self._log_sums[key] = self._log_sums.get(key, 0.0) + step[key]
        self._log_steps += 1

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """The Trainer's logs, plus the KD diagnostics' means since the last training log."""
        if "loss" in logs and self._log_steps:
            logs = {**logs, **{k: v / self._log_steps for k, v in self._log_sums.items()}}
            self._log_sums, self._log_steps = {}, 0
        super().log(logs, start_time)

    # -- scheduler, checkpoints ------------------------------------------------------------------
    def create_scheduler(self, num_training_steps: int, optimizer: Any = None) -> Any:
        if self._lr_lambda is not None and self.lr_scheduler is None:
            self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(
                optimizer if optimizer is not None else self.optimizer, self._lr_lambda)
            self._created_lr_scheduler = True
        return super().create_scheduler(num_training_steps, optimizer)

    def kd_state(self) -> dict[str, Any]:
        """What a checkpoint needs beyond the Trainer's own state (TAID's schedule)."""
        if self.taid is None:
            return {}
        return {"taid": {"t": self.taid.t, "m": self.taid.m, "prev": self.taid._prev_loss}}

    def load_kd_state(self, folder: str | os.PathLike) -> None:
        """Restore :meth:`kd_state` from a checkpoint folder (missing file: nothing to do)."""
        path = os.path.join(folder, KD_STATE_FILE)
        if not os.path.isfile(path):
            return
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        if self.taid is not None and "taid" in data:
            self.taid.t = float(data["taid"]["t"])
            self.taid.m = float(data["taid"]["m"])
            prev = data["taid"]["prev"]
            self.taid._prev_loss = None if prev is None else float(prev)

    def train(self, resume_from_checkpoint: str | bool | None = None, *args: Any,
              **kwargs: Any) -> Any:
        """transformers.Trainer.train, restoring the KD state of the checkpoint resumed from."""
        if resume_from_checkpoint:
            folder = resume_from_checkpoint
            if folder is True:
                from transformers.trainer_utils import get_last_checkpoint

                folder = get_last_checkpoint(self.args.output_dir)
            if folder:
                self.load_kd_state(folder)
        return super().train(resume_from_checkpoint, *args, **kwargs)
