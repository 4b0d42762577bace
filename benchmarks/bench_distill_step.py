"""Tokens per second of one distillation step, split into its parts.

Default: the bundled teacher (SmolLM2-135M-Instruct) -> truncate:4 student, 8 x 128 tokens of
real text (every position a KD target: the worst case), one step per loss, timed as

    teacher forward (no_grad) | student forward | loss forward | backward | optimizer step

plus the per-step head/tail diagnostics the engine records. The median of --repeats steps
after one warm-up step. A script, not a test:

    python benchmarks/bench_distill_step.py                 # default pair, fkl rkl akl
    python benchmarks/bench_distill_step.py --tiny          # tiny random models, seconds
    python benchmarks/bench_distill_step.py --losses akl --batch 4 --seq 256 --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import akl_core  # noqa: E402
from akl_core.lab import data, models  # noqa: E402


def real_batch(tokenizer, batch: int, seq: int) -> dict[str, torch.Tensor]:
    """`batch` rows of `seq` tokens cut from the bundled prompts; labels on every token."""
    texts = [f"{e.instruction}\n{e.context}" for e in data.load_bundled("all")]
    ids: list[int] = []
    for t in texts:
        ids += tokenizer(t, add_special_tokens=False)["input_ids"]
        if len(ids) >= batch * seq:
            break
    if len(ids) < batch * seq:
        raise SystemExit(f"not enough text for {batch} x {seq} tokens")
    x = torch.tensor(ids[: batch * seq]).view(batch, seq)
    return {"input_ids": x, "attention_mask": torch.ones_like(x), "labels": x.clone()}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def one_step(teacher, student, opt, batch, loss: str, vocab: int) -> dict[str, float]:
    """Time the parts of one step (seconds)."""
    dev = student.device
    ids = batch["input_ids"].to(dev)
    attn = batch["attention_mask"].to(dev)
    labels = batch["labels"].to(dev)[:, 1:]
    t = {}
    sync(dev)
    c0 = time.process_time()
    t0 = time.perf_counter()
    with torch.no_grad():
        t_logits = teacher.model(input_ids=ids, attention_mask=attn).logits[:, :-1]
    sync(dev)
    t1 = time.perf_counter()
    s_logits = student.model(input_ids=ids, attention_mask=attn).logits[:, :-1]
    sync(dev)
    t2 = time.perf_counter()
    kd = akl_core.distillation_loss(s_logits, t_logits, loss=loss, labels=labels,
                                    vocab_size=vocab)
    sync(dev)
    t3 = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    kd.backward()
    sync(dev)
    t4 = time.perf_counter()
    opt.step()
    sync(dev)
    t5 = time.perf_counter()
    valid = labels != -100
    s_v, t_v = s_logits.detach()[valid][..., :vocab], t_logits[valid][..., :vocab]
    akl_core.head_tail(s_v, t_v)
    akl_core.per_token_divergences(s_v, t_v, names=["fkl", "rkl"])
    sync(dev)
    t6 = time.perf_counter()
    t["teacher_fwd"] = t1 - t0
    t["student_fwd"] = t2 - t1
    t["loss_fwd"] = t3 - t2
    t["backward"] = t4 - t3
    t["opt_step"] = t5 - t4
    t["diagnostics"] = t6 - t5
    t["step"] = t6 - t0
    t["cpu"] = time.process_time() - c0
    return t


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiny", action="store_true",
                    help="tiny random teacher (2 layers) and tiny:1 student, 2 x 32 tokens")
    ap.add_argument("--student", default="truncate:4", help="student spec")
    ap.add_argument("--losses", nargs="+", default=["fkl", "rkl", "akl"])
    ap.add_argument("--batch", type=int, default=None, help="rows (default 8; 2 with --tiny)")
    ap.add_argument("--seq", type=int, default=None, help="tokens per row (128; 32 --tiny)")
    ap.add_argument("--repeats", type=int, default=3, help="timed steps per loss")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--device", default=None, help="torch device (default: cuda if present)")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    batch_n = a.batch or (2 if a.tiny else 8)
    seq = a.seq or (32 if a.tiny else 128)
    t0 = time.perf_counter()
    teacher = models.load_teacher(None, device=a.device,
                                  progress=lambda m: print(m, file=sys.stderr))
    if a.tiny:
        tiny = models.make_tiny_model(teacher.vocab_size, layers=2, hidden=64, seed=0,
                                      config_from=teacher.model.config).to(teacher.device)
        teacher = models.ModelBundle(tiny, teacher.tokenizer, "tiny teacher", teacher.device)
        student = models.load_student("tiny:1", teacher, seed=0)
    else:
        student = models.load_student(a.student, teacher, seed=0)
    print(f"loaded in {time.perf_counter() - t0:.1f} s; teacher {teacher.name} "
          f"({teacher.num_parameters() / 1e6:.1f} M params), student {student.name} "
          f"({student.num_parameters() / 1e6:.1f} M params); device {student.device}; "
          f"threads {torch.get_num_threads()}; batch {batch_n} x {seq} tokens")
    vocab = models.shared_vocab_size(teacher, student)
    batch = real_batch(teacher.tokenizer, batch_n, seq)
    teacher.model.eval()
    student.model.train()
    opt = torch.optim.AdamW([p for p in student.model.parameters() if p.requires_grad], lr=1e-5)
    tokens = batch_n * seq
    parts = ["teacher_fwd", "student_fwd", "loss_fwd", "backward", "opt_step", "diagnostics"]
    print(f"{'loss':8s} " + " ".join(f"{p:>11s}" for p in parts)
          + f" {'step':>8s} {'tok/s':>8s} {'cpu s':>8s}")
    for loss in a.losses:
        one_step(teacher, student, opt, batch, loss, vocab)  # warm-up
        runs = [one_step(teacher, student, opt, batch, loss, vocab) for _ in range(a.repeats)]
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        print(f"{loss:8s} " + " ".join(f"{med[p]:10.3f}s" for p in parts)
              + f" {med['step']:7.2f}s {tokens / med['step']:8.0f} {med['cpu']:7.2f}s",
              flush=True)
    print("loss_fwd + backward is the cost of the divergence itself (backward also covers the "
          "student); diagnostics = akl_core.head_tail + FKL/RKL over all positions, as the "
          "engine records each step. cpu s = process CPU time of the step (all threads): on a busy "
          "machine, cpu s / threads estimates the wall time the step would take on idle cores.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
