"""Bias of top-k teachers (akl_core.SparseTeacher) against the dense teacher, on real rows.

    python benchmarks/bench_sparse_bias.py [--examples 8] [--k 8 32 128] [--json out.json]

Teacher: the bundled SmolLM2-135M-Instruct; student: its truncate:4 student (first 4 layers),
both teacher-forced on the committed teacher responses of the first --examples prompts of the
bundled validation split; every response position is one row (float32 logits, V = 49152).
The sparse teacher is SparseTeacher.from_logits(teacher_logits, k) (float32 log-softmax top-k,
as an offline cache would store it), with tail="bucket" and tail="renormalize".

Per loss of the catalogue (default parameters), per k and tail:
- value: the mean over rows of (sparse - dense) / dense, in percent (negative: underestimates);
- grad: the cosine between the sparse and the dense gradient w.r.t. the student logits, per row,
  averaged over rows (1 = the same training direction).
Prints two markdown tables and the teacher's mean top-k mass.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

import akl_core
from akl_core import SparseTeacher


def real_rows(examples: int, max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(student, teacher) float32 logits `[N, V]` at the response positions."""
    from akl_core.lab.data import load_bundled, teacher_responses, tokenize_for_kd
    from akl_core.lab.models import load_student, load_teacher

    teacher = load_teacher(None, device="cpu")
    student = load_student("truncate:4", teacher)
    chosen = load_bundled("validation")[:examples]
    encoded = tokenize_for_kd(teacher.tokenizer, chosen, teacher_responses(teacher, chosen),
                              max_length=max_length)
    with torch.no_grad():
        kwargs = {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}
        t_logits = teacher.model(**kwargs).logits[:, :-1]
        s_logits = student.model(**kwargs).logits[:, :-1]
    valid = encoded["labels"][:, 1:] != -100
    return s_logits[valid].float().contiguous(), t_logits[valid].float().contiguous()


def value_and_grad(name: str, student: torch.Tensor, teacher) -> tuple[torch.Tensor, torch.Tensor]:
    s = student.clone().requires_grad_(True)
    value = akl_core.divergence(name, s, teacher)
    value.sum().backward()
    return value.detach().double(), s.grad.double()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--examples", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=160)
    parser.add_argument("--k", type=int, nargs="+", default=[8, 32, 128])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=None, help="also write the numbers to this file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    student, teacher = real_rows(args.examples, args.max_length)
    n, vocab = teacher.shape
    print(f"{n} response positions x V={vocab} (bundled teacher vs truncate:4), "
          f"{time.perf_counter() - start:.0f} s to load and run the models\n")
    mass = torch.softmax(teacher, -1).topk(max(args.k), -1).values.cumsum(-1)
    top_mass = {k: float(mass[:, k - 1].mean()) for k in args.k}
    print("teacher's mean top-k mass: " +
          ", ".join(f"k={k}: {m:.4f}" for k, m in top_mass.items()) + "\n")

    sparse = {(tail, k): SparseTeacher.from_logits(teacher, k, tail=tail)
              for tail in ("bucket", "renormalize") for k in args.k}
    results: dict[str, dict[str, dict[str, float]]] = {}
    for name in akl_core.LOSSES:
        dense_v, dense_g = value_and_grad(name, student, teacher)
        results[name] = {}
        for (tail, k), t in sparse.items():
            v, g = value_and_grad(name, student, t)
            rel = ((v - dense_v) / dense_v).mean().item() * 100
            cos = torch.nn.functional.cosine_similarity(g, dense_g, dim=-1).mean().item()
            results[name][f"{tail}:{k}"] = {"value_rel_pct": rel, "grad_cos": cos}
    cols = [f"{tail}:{k}" for tail in ("bucket", "renormalize") for k in args.k]
    header = ("| loss | " + " | ".join(f"bucket k={k}" for k in args.k) + " | " +
              " | ".join(f"renormalize k={k}" for k in args.k) + " |")
    rule = "|---" * (1 + len(cols)) + "|"
    for title, key, fmt in (("Mean relative error of the value, % (sparse vs dense)",
                             "value_rel_pct", "{:+.2f}"),
                            ("Mean cosine of the student-logit gradient with the dense one",
                             "grad_cos", "{:.4f}")):
        print(f"{title}\n\n{header}\n{rule}")
        for name, row in results.items():
            print(f"| {name} | " + " | ".join(fmt.format(row[c][key]) for c in cols) + " |")
        print()
    print(f"total {time.perf_counter() - start:.0f} s")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"positions": n, "vocab": vocab, "top_k_mass": top_mass,
                       "results": results}, fh, indent=1)


if __name__ == "__main__":
    main()
