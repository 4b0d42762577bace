"""Teacher caches on the bundled pair: bytes per response token, the quantisation error on the
loss, and what the teacher forward costs (what a cache saves per step).

For each k and quantisation a cache of the bundled teacher over the first --examples bundled
training prompts (targets = the teacher's committed responses, max length --max-length) is
built; then, with a truncate:4 student's logits on the same tokens, the per-token FKL and RKL
against the teacher's top-k + tail bucket (akl_core.lab.teacher_cache.sparse_kd_reference, the
quantity a SparseTeacher with tail="bucket" stands for) are compared with the exact float32
cache: the relative error of their mean is the quantisation error on the loss. Then one
engine step of --batch rows is timed with the teacher against the teacher forward alone, and,
when akl_core.SparseTeacher exists, the engine step from the cache. A script, not a test:

    python benchmarks/bench_teacher_cache.py --examples 32 --threads 1
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import akl_core  # noqa: E402
from akl_core.lab import engine, models, teacher_cache  # noqa: E402
from akl_core.lab.distill import DistillConfig  # noqa: E402
from akl_core.lab.trainer import KDCollator  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--examples", type=int, default=32, help="bundled training prompts")
    ap.add_argument("--max-length", type=int, default=128, help="tokens per row")
    ap.add_argument("--ks", default="50,64,128", help="comma-separated k values (u8)")
    ap.add_argument("--batch", type=int, default=8, help="rows per timed step")
    ap.add_argument("--steps", type=int, default=2, help="timed steps (after one warm-up)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    teacher = models.load_teacher(None, device="cpu")
    student = models.load_student("truncate:4", teacher, seed=0)
    config = DistillConfig(max_examples=a.examples, max_length=a.max_length, batch_size=a.batch,
                           probe_every=0, steps=a.steps + 1).validate()
    tmp = Path(tempfile.mkdtemp(prefix="akl-cache-bench-"))
    try:
        exact_dir = tmp / "f32-64"
        teacher_cache.build(teacher, config, exact_dir, k=64, quantization="f32")
        exact = teacher_cache.TeacherCache.open(exact_dir)
        rows, _, _ = exact.load()
        logits = []
        with torch.no_grad():
            for row in rows:
                out = student.model(input_ids=row["input_ids"][None]).logits[0, :-1]
                logits.append(out[row["labels"][1:] != -100])
        s = torch.cat(logits)
        print(f"{a.examples} examples, {s.shape[0]} response tokens; student truncate:4 "
              f"(untrained: its distributions are far from the teacher's)")
        print(f"{'k':>4} {'quant':>5} {'bytes/token':>11} {'FKL rel. err':>13} "
              f"{'RKL rel. err':>13} {'build s':>8}")
        for k in [int(x) for x in a.ks.split(",")]:
            ref_dir = tmp / f"f32-{k}"
            if k != 64:
                teacher_cache.build(teacher, config, ref_dir, k=k, quantization="f32")
            ref = teacher_cache.TeacherCache.open(ref_dir).load()
            for q in ("u8", "f16", "f32"):
                if q == "f16" and k != 64:
                    continue
                path = tmp / f"{q}-{k}"
                if not path.exists():
                    teacher_cache.build(teacher, config, path, k=k, quantization=q)
                cache = teacher_cache.TeacherCache.open(path)
                _, ids, lp = cache.load()
                errs = []
                for loss in ("fkl", "rkl"):
                    want = teacher_cache.sparse_kd_reference(s, ref[1], ref[2], loss).mean()
                    got = teacher_cache.sparse_kd_reference(s, ids, lp, loss).mean()
                    errs.append(float((got - want).abs() / want))
                m = cache.manifest
                print(f"{k:4d} {q:>5} {m['bytes_per_token']:11.1f} {errs[0]:13.2e} "
                      f"{errs[1]:13.2e} {m['seconds']:8.1f}", flush=True)
        # what the teacher costs per step
        batch = KDCollator(teacher.tokenizer.pad_token_id)(rows[: a.batch])
        fwd = []
        with torch.no_grad():
            for _ in range(a.steps + 1):
                t0 = time.perf_counter()
                teacher.model(input_ids=batch["input_ids"],
                              attention_mask=batch["attention_mask"])
                fwd.append(time.perf_counter() - t0)
        with_teacher = engine.train(config, teacher=teacher,
                                    student=models.load_student("truncate:4", teacher, seed=0),
                                    rows=rows, device="cpu")
        step = statistics.median(r.step_time for r in with_teacher.records[1:])
        tf = statistics.median(fwd[1:])
        print(f"engine step ({a.batch} rows) with the teacher: {step:.2f} s; the teacher "
              f"forward alone: {tf:.2f} s ({tf / step:.0%} of the step)")
        if hasattr(akl_core, "SparseTeacher"):
            u8 = teacher_cache.TeacherCache.open(tmp / "u8-64")
            cached_rows = u8.rows_for(config, engine.load_examples(config), teacher.tokenizer)
            from_cache = engine.train(
                config, teacher=None, student=models.load_student("truncate:4", teacher, seed=0),
                rows=cached_rows, device="cpu")
            step_c = statistics.median(r.step_time for r in from_cache.records[1:])
            print(f"engine step from the u8 k=64 cache: {step_c:.2f} s "
                  f"({1 - step_c / step:.0%} saved)")
        else:
            print("akl_core.SparseTeacher is not on this branch: no step from the cache timed")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
