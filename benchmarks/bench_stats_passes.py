"""What return_stats adds to FKL, pass by pass, on one chunk of real rows.

    python benchmarks/bench_stats_passes.py            # real inputs, three conditions
    python benchmarks/bench_stats_passes.py --data random --n 64 --v 4096 --rounds 1  # smoke

Times, on one chunk of the size the chunk runner picks for N positions (akl_core.losses
.chunk_rows), each pass of FKL's forward+backward and each pass that return_stats adds, with
akl_core's own functions: all passes once per round, `--rounds` rounds, the median per pass.
Beside them, the cheapest full read of one `[R, V]` array that PyTorch offers (a row sum):
the stats must read at least 6 such arrays in separate passes (the teacher's log-probs for
its top-1; q - p for the L1 gap; q, log q, p and log p for the entropies), 4 if one fused pass
read them all, so `reads x row sum / loss passes` is a floor on their cost that no rearrangement
of PyTorch ops gets under. Conditions as in bench_losses.py: 1 thread, 2 threads, and 2
threads beside `--contention` processes that loop a 2-thread matmul.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

import akl_core  # noqa: E402, F401  (first: its OpenMP spin default)

# isort: split
import bench_inputs  # noqa: E402
import torch  # noqa: E402
from bench_losses import CONDITIONS, start_contention, stop_contention  # noqa: E402

from akl_core._dists import BUFFERS, make_dists, rowdot_pair, rowdot_two  # noqa: E402
from akl_core._topk import block_maxima, top1_index  # noqa: E402
from akl_core.headtail import _head_stats_fast, l1_distance  # noqa: E402
from akl_core.losses import chunk_rows  # noqa: E402

SEPARATE_READS, FUSED_READS = 6, 4


def passes(student: torch.Tensor, teacher: torch.Tensor, mu: float = 0.5
           ) -> dict[str, dict[str, Callable[[], object]]]:
    """{group: {pass: fn}} on one chunk: FKL's passes (loss), return_stats' (stats), a row sum."""
    rows, vocab = student.shape
    buffers = torch.empty((BUFFERS, rows, vocab))
    grad = torch.empty(rows, vocab)
    d = make_dists(student, teacher, 1.0, torch.float32, buffers=buffers)
    maxima = d.teacher_maxima()
    top = (d.top_p, d.top_idx)
    return {
        "loss": {
            "log-softmax x2, exp (make_dists)":
                lambda: make_dists(student, teacher, 1.0, torch.float32, buffers=buffers),
            "log ratio lp - lq": lambda: torch.sub(d.lp, d.lq, out=grad),
            "fkl, rkl: one batched GEMM": lambda: rowdot_pair(d.q, d.p, grad),
            "gradient q - p": lambda: torch.sub(d.q, d.p, out=grad),
            "gradient x 1/count": lambda: grad.mul_(1.0 / rows),
        },
        "stats": {
            "block maxima of lp": lambda: block_maxima(d.lp),
            "top-1 from the maxima": lambda: top1_index(d.lp, maxima),
            "top-64 of rows whose top-1 < mu": lambda: _head_stats_fast(
                d.p, d.q, mu, "reference", top, torch.zeros(rows, dtype=torch.bool), maxima),
            "L1 gap (cdist)": lambda: l1_distance(d.q, d.p),
            "entropies: one batched GEMM": lambda: rowdot_two(d.q, d.lq, d.p, d.lp),
        },
        "reference": {"row sum of one [R, V] array": lambda: d.q.sum(-1)},
    }


def time_passes(groups: dict[str, dict[str, Callable[[], object]]], rounds: int
                ) -> dict[str, dict[str, float]]:
    """Median seconds per pass; every pass runs once per round (a warm-up round first)."""
    times: dict[str, dict[str, list[float]]] = {g: {n: [] for n in fns} for g, fns in groups.items()}
    for r in range(rounds + 1):
        for group, fns in groups.items():
            for name, fn in fns.items():
                start = time.perf_counter()
                fn()
                if r:
                    times[group][name].append(time.perf_counter() - start)
    return {g: {n: statistics.median(t) for n, t in ts.items()} for g, ts in times.items()}


def report(label: str, med: dict[str, dict[str, float]]) -> list[str]:
    loss, stats = sum(med["loss"].values()), sum(med["stats"].values())
    read = med["reference"]["row sum of one [R, V] array"]
    lines = [f"### {label}", "", "| pass | ms | share of the loss's passes |", "|---|---|---|"]
    for group in ("loss", "stats", "reference"):
        for name, t in med[group].items():
            lines.append(f"| {group}: {name} | {t * 1e3:.2f} | {t / loss:.1%} |")
    lines += [
        f"| **loss passes** | {loss * 1e3:.2f} | 100% |",
        f"| **stats passes** | {stats * 1e3:.2f} | **+{stats / loss:.0%}** |",
        "",
        f"Floor: {SEPARATE_READS} separate reads at row-sum speed "
        f"+{SEPARATE_READS * read / loss:.0%}, {FUSED_READS} in one fused pass "
        f"+{FUSED_READS * read / loss:.0%} (target +10%).",
        "",
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=("real", "random"), default="real")
    parser.add_argument("--n", type=int, default=2048, help="positions the chunk is sized for")
    parser.add_argument("--v", type=int, default=49152, help="vocabulary of random inputs")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--conditions", nargs="+", choices=tuple(CONDITIONS),
                        default=list(CONDITIONS))
    parser.add_argument("--contention", type=int, default=2)
    parser.add_argument("--cache", type=Path, default=bench_inputs.CACHE)
    parser.add_argument("--out", type=Path, default=None, help="markdown output file")
    args = parser.parse_args()
    from safetensors import safe_open

    path = bench_inputs.ensure_inputs(args.data, args.n, args.v, 32, args.cache)
    with safe_open(str(path), framework="pt") as f:
        n, vocab = f.get_slice("student_logits").get_shape()
        rows = chunk_rows(min(args.n, n), vocab, 4, torch.float32, BUFFERS)
        student = f.get_slice("student_logits")[:rows].contiguous()
        teacher = f.get_slice("teacher_logits")[:rows].contiguous()
    lines = [
        f"`python {' '.join(sys.argv)}`", "",
        f"{args.data} rows: one chunk of {rows} x {vocab} (the automatic chunk at "
        f"N={min(args.n, n)}), float32; median of {args.rounds} rounds; torch "
        f"{torch.__version__}; started {time.strftime('%Y-%m-%d %H:%M')}.", "",
    ]
    for key in args.conditions:
        label, threads, contended = CONDITIONS[key]
        torch.set_num_threads(threads)
        jobs = start_contention(args.contention) if contended else []
        try:
            lines += report(label.format(k=args.contention),
                            time_passes(passes(student, teacher), args.rounds))
        finally:
            stop_contention(jobs)
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
