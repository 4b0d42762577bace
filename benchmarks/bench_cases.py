"""The cases of the loss benchmark: what each one computes (forward + backward), and baselines.

A case builds, from the dumped inputs, the tensors that receive gradients and a function
returning the scalar loss. Baselines written here the straightforward way:
- torch fkl: log_softmax + F.kl_div(log_target=True), autograd (what most trainers do);
- sort akl: AKL as the reference code computes it (a full sort of the teacher's probs per
  position, cumsum masks, the two gaps, FKL and RKL by autograd);
- TRL's generalized_jsd_loss (its own source from the installed trl; see `trl_gjsd`);
- Liger-Kernel's LigerFusedLinearJSDLoss (pure torch, compiled=False, default chunk 1024).
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

import akl_core

FUSED_LOSSES = ("fkl", "rkl", "akl", "jsd")
LIGER_BETA = {"fkl": 0.0, "rkl": 1.0, "jsd": 0.5, "akl": 0.5}  # Liger's nearest to each loss


@dataclass(frozen=True)
class Case:
    name: str
    group: str  # "logits" (input: student logits) or "hidden" (input: hidden states + lm_head)
    needs: tuple[str, ...]  # dumped tensors it loads
    build: Callable[[dict[str, torch.Tensor]], tuple[list[torch.Tensor], Callable[[], torch.Tensor]]]
    versus: str | None = None  # a case also timed interleaved in this case's process


def plain_fkl(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return F.kl_div(F.log_softmax(s, -1), F.log_softmax(t, -1), log_target=True,
                    reduction="batchmean")


def sort_akl(s: torch.Tensor, t: torch.Tensor, mu: float = 0.5) -> torch.Tensor:
    """AKL the reference code's way: full sort per position, masks, two KLs (mean over rows)."""
    p = F.softmax(t, -1)
    q = F.softmax(s, -1)
    sorted_p, idx = p.sort(-1, descending=True)
    sorted_q = q.detach().gather(-1, idx)
    gaps = (sorted_p - sorted_q).abs()
    tail = sorted_p.cumsum(-1) > mu
    tail[:, 0] = False
    g_head = gaps.masked_fill(tail, 0).sum(-1)
    g_tail = gaps.masked_fill(~tail, 0).sum(-1)
    w = g_head / (g_head + g_tail)
    log_p, log_q = F.log_softmax(t, -1), F.log_softmax(s, -1)
    fkl = (p * (log_p - log_q)).sum(-1)
    rkl = (q * (log_q - log_p)).sum(-1)
    return (w * fkl + (1 - w) * rkl).mean()


def trl_gjsd() -> tuple[Callable[..., torch.Tensor] | None, str]:
    """TRL's generalized_jsd_loss and how it was obtained (or None and why not).

    Importing TRL's GKD trainer pulls `datasets` (not installed here). The function itself
    only needs torch, so its exact source is read from the installed file and executed.
    """
    try:
        from trl.experimental.gkd import GKDTrainer  # type: ignore[import-not-found]

        return GKDTrainer.generalized_jsd_loss, "imported"
    except Exception as exc:  # noqa: BLE001 - any import failure: fall back to the source
        why = f"{type(exc).__name__}: {exc}"
    spec = importlib.util.find_spec("trl")
    if spec is None or spec.origin is None:
        return None, "trl is not installed"
    version = importlib.import_module("trl").__version__
    for path in sorted(Path(spec.origin).parent.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        if "def generalized_jsd_loss" not in text:
            continue
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef) and node.name == "generalized_jsd_loss":
                source = textwrap.dedent(ast.get_source_segment(text, node) or "")
                namespace = {"torch": torch, "F": F}
                exec(compile(source, str(path), "exec"), namespace)  # noqa: S102
                rel = path.relative_to(Path(spec.origin).parent.parent)
                return namespace["generalized_jsd_loss"], (
                    f"trl {version}: its source executed from {rel} (the import needs {why})")
    return None, f"generalized_jsd_loss not found in trl {version}"


def liger_jsd() -> tuple[type | None, str]:
    try:
        from liger_kernel.chunked_loss import LigerFusedLinearJSDLoss  # type: ignore

        version = importlib.metadata.version("liger-kernel")
        return LigerFusedLinearJSDLoss, f"liger-kernel {version} (compiled=False)"
    except Exception as exc:  # noqa: BLE001
        return None, f"liger-kernel not importable: {type(exc).__name__}: {exc}"


def _leaf(t: torch.Tensor) -> torch.Tensor:
    return t.detach().clone().requires_grad_(True)


def _logits_case(name: str, fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Case:
    def build(x):
        s = _leaf(x["student_logits"])
        return [s], lambda: fn(s, x["teacher_logits"])
    return Case(name, "logits", ("student_logits", "teacher_logits"), build)


def _stats_case(loss: str) -> Case:
    def fn(s, t):
        value, _ = akl_core.distillation_loss(s, t, loss=loss, return_stats=True)
        return value
    case = _logits_case(f"akl_core {loss} +stats", fn)
    return Case(case.name, case.group, case.needs, case.build, versus=f"akl_core {loss}")


def _naive_case(loss: str) -> Case:
    def build(x):
        h, w = _leaf(x["student_hidden"]), _leaf(x["student_weight"])
        return [h, w], lambda: akl_core.distillation_loss(h @ w.T, x["teacher_logits"], loss=loss)
    return Case(f"naive {loss}", "hidden",
                ("student_hidden", "student_weight", "teacher_logits"), build)


def _fused_case(loss: str, teacher: str) -> Case:
    def build(x):
        h, w = _leaf(x["student_hidden"]), _leaf(x["student_weight"])
        kw = ({"teacher_logits": x["teacher_logits"]} if teacher == "logits" else
              {"teacher_hidden": x["teacher_hidden"], "teacher_weight": x["teacher_weight"]})
        return [h, w], lambda: akl_core.fused_linear_distillation_loss(h, w, loss=loss, **kw)
    needs = ("student_hidden", "student_weight") + (
        ("teacher_logits",) if teacher == "logits" else ("teacher_hidden", "teacher_weight"))
    suffix = "" if teacher == "hidden" else " (teacher logits)"
    return Case(f"fused {loss}{suffix}", "hidden", needs, build)


def _liger_case(beta: float, label: str) -> Case:
    def build(x):
        cls, why = liger_jsd()
        if cls is None:
            raise Unavailable(why)
        module = cls(weight_hard_loss=0.0, weight_soft_loss=1.0, beta=beta, compiled=False)
        h, w = _leaf(x["student_hidden"]), _leaf(x["student_weight"])
        return [h, w], lambda: module(h, w, x["teacher_hidden"], x["teacher_weight"], x["labels"])
    return Case(f"liger {label}", "hidden", ("student_hidden", "student_weight", "teacher_hidden",
                                            "teacher_weight", "labels"), build)


def _trl_case(beta: float, label: str) -> Case:
    def fn(s, t):
        gjsd, why = trl_gjsd()
        if gjsd is None:
            raise Unavailable(why)
        return gjsd(s, t, beta=beta)
    return _logits_case(f"trl {label}", fn)


class Unavailable(RuntimeError):
    """A baseline that cannot run here (its message says why)."""


def all_cases() -> dict[str, Case]:
    cases = [_logits_case("torch fkl", plain_fkl), _logits_case("sort akl", sort_akl),
             _trl_case(0.0, "gjsd b=0 (fkl)"), _trl_case(0.5, "gjsd b=0.5 (jsd)")]
    cases += [_logits_case(f"akl_core {name}",
                           lambda s, t, name=name: akl_core.distillation_loss(s, t, loss=name))
              for name in akl_core.LOSSES]
    cases += [_stats_case("fkl"), _stats_case("akl")]
    cases += [_naive_case(loss) for loss in FUSED_LOSSES]
    cases += [_fused_case(loss, "hidden") for loss in FUSED_LOSSES]
    cases += [_fused_case("akl", "logits")]
    cases += [_liger_case(0.0, "b=0 (fkl)"), _liger_case(1.0, "b=1 (rkl)"),
              _liger_case(0.5, "b=0.5 (jsd)")]
    return {c.name: c for c in cases}


def default_cases() -> list[str]:
    """The cases a plain run times: all but the naive hidden-state ones (`--cases` adds them)."""
    return [name for name in all_cases() if not name.startswith("naive ")]


def liger_for(loss: str) -> str:
    """The Liger case a fused loss is compared with."""
    beta = LIGER_BETA[loss]
    return {0.0: "liger b=0 (fkl)", 1.0: "liger b=1 (rkl)", 0.5: "liger b=0.5 (jsd)"}[beta]
