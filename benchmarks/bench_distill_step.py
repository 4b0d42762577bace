"""Seconds per distillation step: the real engine (KDTrainer through akl_core.lab.engine.train)
against the loop it replaced (DistillSession, kept here as a frozen copy of its step), in one
run, on the same rows in the same order.

Default: the bundled teacher (SmolLM2-135M-Instruct) -> truncate:4 student, 8 x 128 tokens of
real text per step (every position a KD target: the worst case), AKL. Each round runs the old
loop for --steps steps, then the engine for --steps + 1 steps (its first step, which builds the
optimizer, is dropped), each from a fresh copy of the student; the engine's time per step is
its records' step_time (data loading, the Trainer's bookkeeping and the per-step diagnostics
included; no probes). Medians over all rounds. A script, not a test:

    python benchmarks/bench_distill_step.py                       # default pair
    python benchmarks/bench_distill_step.py --tiny                # tiny random models, seconds
    python benchmarks/bench_distill_step.py --loss fkl --batch 4 --seq 256 --threads 2
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import akl_core  # noqa: E402
from akl_core.lab import data, engine, models  # noqa: E402
from akl_core.lab.distill import DistillConfig  # noqa: E402
from akl_core.lab.trainer import KDCollator  # noqa: E402


def real_rows(tokenizer, n: int, seq: int) -> list[dict[str, torch.Tensor]]:
    """`n` rows of `seq` tokens cut from the bundled prompts; labels on every token."""
    texts = [f"{e.instruction}\n{e.context}" for e in data.load_bundled("all")]
    ids: list[int] = []
    for t in texts:
        ids += tokenizer(t, add_special_tokens=False)["input_ids"]
        if len(ids) >= n * seq:
            break
    if len(ids) < n * seq:
        raise SystemExit(f"not enough text for {n} x {seq} tokens")
    x = torch.tensor(ids[: n * seq]).view(n, seq)
    return [{"input_ids": r.clone(), "labels": r.clone()} for r in x]


# ----------------------------------------------------------------------------------------------
# The replaced loop: DistillSession._step / _forward (akl_core/lab/distill.py at ec1fbe5)
# ----------------------------------------------------------------------------------------------


def old_step(teacher, student, batch, opt, cfg: DistillConfig, vocab: int) -> float:
    """One step of the old loop, as it was (forwards, loss, CE, backward, clip, AdamW step,
    then head_tail + FKL/RKL over the valid positions); returns the loss."""
    device = student.device
    ids = batch["input_ids"].to(device)
    attn = batch["attention_mask"].to(device)
    labels = batch["labels"].to(device)
    with torch.no_grad():
        t_logits = teacher.model(input_ids=ids, attention_mask=attn).logits
    s_logits = student.model(input_ids=ids, attention_mask=attn).logits
    s, lab, t = s_logits[:, :-1], labels[:, 1:], t_logits[:, :-1]
    params = akl_core.resolve_params(cfg.loss, **cfg.loss_params)
    kd = akl_core.distillation_loss(s, t, loss=cfg.loss, labels=lab,
                                    temperature=cfg.temperature, vocab_size=vocab, **params)
    valid = lab != -100
    s_v = s[valid]
    with torch.no_grad():
        lm = F.cross_entropy(s_v.detach().float(), lab[valid])
    loss = kd
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(student.model.parameters(), cfg.grad_clip)
    opt.step()
    mu, boundary = cfg.head_params()
    ht = akl_core.head_tail(s_v.detach(), t[valid], mu=mu, boundary=boundary,
                            temperature=cfg.temperature, vocab_size=vocab)
    divs = akl_core.per_token_divergences(s_v.detach()[..., :vocab], t[valid][..., :vocab],
                                          names=["fkl", "rkl"], temperature=cfg.temperature)
    return float(loss) + 0 * float(lm) + 0 * float(ht.w.mean()) + 0 * float(divs["fkl"].mean())


def time_old(teacher, student0, rows, cfg, vocab, steps) -> tuple[list[float], list[float]]:
    student = copy.deepcopy(student0)
    student.model.train()
    opt = torch.optim.AdamW([p for p in student.model.parameters() if p.requires_grad],
                            lr=cfg.lr, weight_decay=cfg.weight_decay)
    stream = engine.StreamDataset(rows, steps * cfg.batch_size, cfg.seed)
    collate = KDCollator(0)
    times, cpu = [], []
    for k in range(steps):
        t0, c0 = time.perf_counter(), time.process_time()
        batch = collate([stream[i] for i in range(k * cfg.batch_size, (k + 1) * cfg.batch_size)])
        old_step(teacher, student, batch, opt, cfg, vocab)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return times, cpu


def time_new(teacher, student0, rows, cfg, steps) -> tuple[list[float], list[float]]:
    """Wall seconds per step (the records' step_time) and process CPU seconds between
    consecutive records, steps 2.. of steps + 1."""
    student = copy.deepcopy(student0)
    config = DistillConfig(**{**cfg.to_dict(), "steps": steps + 1})
    marks: list[float] = []
    outcome = engine.train(config, teacher=teacher,
                           student=student, rows=rows, device=str(student.device),
                           on_record=lambda r: marks.append(time.process_time()))
    return ([r.step_time for r in outcome.records[1:]],
            [b - a for a, b in zip(marks, marks[1:])])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiny", action="store_true",
                    help="tiny random teacher (2 layers) and tiny:1 student, 2 x 32 tokens")
    ap.add_argument("--student", default="truncate:4", help="student spec")
    ap.add_argument("--loss", default="akl", help="loss name")
    ap.add_argument("--batch", type=int, default=None, help="rows (default 8; 2 with --tiny)")
    ap.add_argument("--seq", type=int, default=None, help="tokens per row (128; 32 --tiny)")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per loop and round")
    ap.add_argument("--rounds", type=int, default=2, help="old/new alternations")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--device", default="cpu", help="torch device")
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
          f"threads {torch.get_num_threads()}; batch {batch_n} x {seq} tokens; loss {a.loss}")
    vocab = models.shared_vocab_size(teacher, student)
    rows = real_rows(teacher.tokenizer, max(batch_n * 4, 16), seq)
    cfg = DistillConfig(loss=a.loss, batch_size=batch_n, lr=1e-5, probe_every=0,
                        max_length=seq, steps=a.steps).validate()
    teacher.model.eval()
    res: dict[str, list[float]] = {"old": [], "old_cpu": [], "new": [], "new_cpu": []}

    def fmt(xs: list[float]) -> str:
        return " ".join(f"{x:.2f}" for x in xs)

    for r in range(a.rounds):
        old, old_cpu = time_old(teacher, student, rows, cfg, vocab, a.steps)
        new, new_cpu = time_new(teacher, student, rows, cfg, a.steps)
        for key, xs in (("old", old), ("old_cpu", old_cpu), ("new", new), ("new_cpu", new_cpu)):
            res[key] += xs
        print(f"round {r + 1}: old loop {fmt(old)} s (cpu {fmt(old_cpu)}) | engine {fmt(new)} s "
              f"(cpu {fmt(new_cpu)})", flush=True)
    med = {key: statistics.median(xs) for key, xs in res.items()}
    tokens = batch_n * seq
    print(f"median per step, wall: old loop {med['old']:.3f} s ({tokens / med['old']:.0f} tok/s), "
          f"engine (KDTrainer) {med['new']:.3f} s ({tokens / med['new']:.0f} tok/s); "
          f"engine / old = {med['new'] / med['old']:.3f}")
    print(f"median per step, process CPU: old loop {med['old_cpu']:.3f} s, engine "
          f"{med['new_cpu']:.3f} s; engine / old = {med['new_cpu'] / med['old_cpu']:.3f} "
          "(CPU time is the steadier measure on a shared machine)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
