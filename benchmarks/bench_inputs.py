"""Inputs of the loss benchmark, written once as safetensors under .cache/bench/.

Real (the default): the bundled teacher (SmolLM2-135M-Instruct) and its truncate:4 student,
teacher-forced on the bundled training prompts with the teacher's committed responses; the
first N response positions (the positions a KD loss counts). Saved per position:
teacher_logits / student_logits [N, V], student_hidden / teacher_hidden [N, H] (the inputs
of each lm_head), student_weight / teacher_weight [V, H] (the lm_head weights) and labels [N]
(the next tokens), all float32.

Random (`--data random`, for smoke runs and the test): the same names with random hidden
states and weights, logits = hidden @ weight.T; no model needed.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / ".cache" / "bench"
NAMES = ("teacher_logits", "student_logits", "student_hidden", "student_weight",
         "teacher_hidden", "teacher_weight", "labels")


def input_path(kind: str, n: int, v: int, h: int, cache: Path = CACHE) -> Path:
    """Where the inputs of that kind and size live (a real dump may be reused for a smaller n)."""
    if kind == "random":
        return cache / f"random_n{n}_v{v}_h{h}.safetensors"
    bigger = sorted(cache.glob("real_n*.safetensors"),
                    key=lambda p: int(p.stem.split("_n")[1]))
    for path in bigger:
        if int(path.stem.split("_n")[1]) >= n:
            return path
    return cache / f"real_n{n}.safetensors"


def ensure_inputs(kind: str, n: int, v: int, h: int, cache: Path = CACHE,
                  force: bool = False) -> Path:
    """The path of the inputs, dumped first when missing (or when `force`)."""
    path = input_path(kind, n, v, h, cache)
    if path.exists() and not force:
        return path
    path = cache / (f"real_n{n}.safetensors" if kind == "real" else path.name)
    tensors = dump_real(n) if kind == "real" else make_random(n, v, h)
    save(tensors, path)
    return path


def save(tensors: dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file({k: t.contiguous() for k, t in tensors.items()}, str(tmp))
    tmp.replace(path)


def make_random(n: int, v: int, h: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random hidden states and heads whose softmax is peaked like an LM's (a few big logits)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for side in ("student", "teacher"):
        hidden = torch.randn(n, h, generator=g)
        weight = torch.randn(v, h, generator=g) * (4.0 / math.sqrt(h))
        out[f"{side}_hidden"], out[f"{side}_weight"] = hidden, weight
        out[f"{side}_logits"] = hidden @ weight.T
    out["labels"] = torch.randint(0, v, (n,), generator=g)
    return out


@torch.no_grad()
def dump_real(n: int, batch_size: int = 8, max_length: int = 256) -> dict[str, torch.Tensor]:
    """N response positions of the bundled pair on the bundled training data (see module doc)."""
    from akl_core.lab import data, models

    print(f"dumping {n} real positions (bundled teacher and its truncate:4 student) ...",
          flush=True)
    teacher = models.load_teacher(None, device="cpu")
    student = models.load_student("truncate:4", teacher)
    examples = data.load_bundled("train")
    responses = data.teacher_responses(teacher, examples)
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in NAMES if "weight" not in k}
    count = 0
    for start in range(0, len(examples), batch_size):
        batch = data.tokenize_for_kd(teacher.tokenizer, examples[start : start + batch_size],
                                     responses[start : start + batch_size],
                                     max_length=max_length)
        valid = batch["labels"][:, 1:] != -100  # logits at t-1 predict the label at t
        for side, bundle in (("teacher", teacher), ("student", student)):
            hidden, logits = _forward(bundle.model, batch)
            parts[f"{side}_hidden"].append(hidden[:, :-1][valid])
            parts[f"{side}_logits"].append(logits[:, :-1][valid].float())
        parts["labels"].append(batch["labels"][:, 1:][valid])
        count += int(valid.sum())
        print(f"  {min(count, n)}/{n} positions", flush=True)
        if count >= n:
            break
    if count < n:
        raise SystemExit(f"the bundled training data has only {count} response positions")
    out = {k: torch.cat(v)[:n].contiguous() for k, v in parts.items()}
    out["student_weight"] = student.model.get_output_embeddings().weight.detach().float().clone()
    out["teacher_weight"] = teacher.model.get_output_embeddings().weight.detach().float().clone()
    for side in ("student", "teacher"):  # the logits are the head applied to the saved inputs
        rows = slice(0, 64)
        again = out[f"{side}_hidden"][rows] @ out[f"{side}_weight"].T
        err = float((again - out[f"{side}_logits"][rows]).abs().max())
        if err > 1e-3 * float(again.abs().max()):
            raise SystemExit(f"{side}: hidden @ weight.T differs from the logits by {err}")
    return out


def _forward(model, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """(the lm_head's input, the logits) of one batch."""
    seen = {}

    def keep_input(module, args, output) -> None:  # returns None: the output is unchanged
        seen["h"] = args[0]

    hook = model.get_output_embeddings().register_forward_hook(keep_input)
    try:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    finally:
        hook.remove()
    return seen["h"].float(), logits
