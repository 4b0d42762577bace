"""Speed and peak extra memory of akl_core's losses beside plain PyTorch, TRL and Liger-Kernel.

    python benchmarks/bench_losses.py                 # real inputs, N=2048, three conditions
    python benchmarks/bench_losses.py --dump          # (re)write the real inputs only
    python benchmarks/bench_losses.py --quick --data random      # a smoke run in seconds

Inputs (benchmarks/bench_inputs.py): by default REAL ones, dumped once into .cache/bench/ (the
bundled teacher and its truncate:4 student on N response positions of the bundled training
data: logits, lm_head inputs and weights), or random ones (`--data random`).

Each case (benchmarks/bench_cases.py) runs in its own subprocess: it loads only the tensors it
needs, runs forward + backward once to warm up, then `--repeats` times; we report the median
time and the peak RSS above the RSS right before the call (VmHWM, reset through
/proc/self/clear_refs), i.e. the extra memory of the step, gradient buffers included. Three
conditions in one invocation: 1 thread; 2 threads; 2 threads while `--contention` other
processes each loop a 2-thread torch matmul (a neighbouring ML job, a notebook kernel).

Output: a markdown table with each time as a ratio to `torch fkl` (log_softmax + kl_div) in
the same condition, extra memory as a multiple of the student logits' size (N x V x 4 bytes),
and the targets of issue #8 checked per condition. The table also goes to .cache/bench/.
Liger-Kernel and TRL are optional: install them outside the project's environment, e.g.
`pip install --no-deps --target /work/benchdeps trl liger-kernel`, and put that folder on
PYTHONPATH for the run only. Timings on a shared machine are noisy: compare ratios.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

import akl_core  # noqa: E402, F401  (first: its OpenMP spin default, inherited by the workers)

# isort: split
import bench_cases  # noqa: E402
import bench_inputs  # noqa: E402
import torch  # noqa: E402

CONTENTION_JOB = (
    "import torch\n"
    "torch.set_num_threads(2)\n"
    "a = torch.randn(1024, 1024)\n"
    "print('ready', flush=True)\n"
    "while True:\n"
    "    a @ a\n"
)
CONDITIONS = {"1": ("1 thread", 1, False), "2": ("2 threads", 2, False),
              "2c": ("2 threads + {k} matmul jobs", 2, True)}
BASELINE = "torch fkl"  # every time is reported as a ratio to it, timed in the same process
PER_ROW = ("teacher_logits", "student_logits", "student_hidden", "teacher_hidden", "labels")


# --- the worker: one case, one condition, in its own process ----------------------------------


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field):
                return int(line.split()[1])
    return 0


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def run_worker(args: argparse.Namespace) -> dict:
    from safetensors import safe_open

    torch.set_num_threads(args.threads)
    cases = bench_cases.all_cases()
    case, base_case = cases[args.worker], cases[BASELINE]
    x = {}
    with safe_open(args.inputs, framework="pt") as f:
        for name in set(case.needs) | set(base_case.needs):
            t = f.get_tensor(name)
            x[name] = t[: args.n].clone() if name in PER_ROW else t
    try:
        leaves, fn = case.build(x)
        loss = fn()
    except bench_cases.Unavailable as exc:
        return {"unavailable": str(exc)}
    loss.backward()  # warm-up
    value = float(loss.detach())
    del loss
    # The baseline runs in the same process, interleaved with the case (see the order below):
    # a neighbour's load that comes and goes slows both alike. The ratio is the median of the
    # ratios of adjacent runs, so a slow phase that hits one pair does not move it.
    # A case with `versus` (return_stats vs the loss alone) interleaves that case too.
    interleave = args.worker != BASELINE
    others = [(BASELINE, base_case)] if interleave else []
    if case.versus is not None:
        others.append((case.versus, cases[case.versus]))
    built = []
    for name, other in others:
        other_leaves, other_fn = other.build(x)
        other_fn().backward()
        built.append((name, other_leaves, other_fn))
    every = leaves + [leaf for _, group, _ in built for leaf in group]

    def clear() -> None:
        for leaf in every:
            leaf.grad = None
        gc.collect()

    times, peaks = [], []
    other_times: dict[str, list[float]] = {name: [] for name, _, _ in built}
    resettable = _reset_peak()

    def run_case() -> None:
        clear()
        base = _status_kib("VmRSS")
        _reset_peak()  # without it, VmHWM is the peak since start: an upper bound
        start = time.perf_counter()
        fn().backward()
        times.append(time.perf_counter() - start)
        peaks.append((_status_kib("VmHWM") - base) * 1024)

    def run_other(name: str, other_fn: Any) -> None:
        clear()
        start = time.perf_counter()
        other_fn().backward()
        other_times[name].append(time.perf_counter() - start)

    # Every other repeat runs in reverse order (case, baseline, versus / versus, baseline,
    # case): what runs just before a call (the baseline's 5x memory, page faults) then falls
    # on each alike. In one fixed order, return_stats on akl under contention read +16-21%
    # in runs where alternating read +8% (and an A/B of the akl cases alone +4%).
    steps = [run_case] + [lambda n=name, f=other_fn: run_other(n, f) for name, _, other_fn in built]
    for repeat in range(args.repeats):
        for run in steps if repeat % 2 == 0 else steps[::-1]:
            run()
    out = {"time": statistics.median(times), "times": times, "peak": max(peaks),
           "value": value, "peak_exact": resettable}
    if interleave:
        out["base_time"] = statistics.median(other_times[BASELINE])
        out["ratio"] = pair_ratio(times, other_times[BASELINE])
    if case.versus is not None:
        out["versus"] = case.versus
        out["versus_ratio"] = pair_ratio(times, other_times[case.versus])
    return out


def pair_ratio(times: list[float], base_times: list[float]) -> float:
    """The median over repeats of time / baseline time of the same repeat (adjacent runs)."""
    return statistics.median(t / b for t, b in zip(times, base_times, strict=True))


# --- the parent: conditions, subprocesses, table ----------------------------------------------


def start_contention(k: int) -> list[subprocess.Popen]:
    env = {**os.environ, "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}
    jobs = [subprocess.Popen([sys.executable, "-c", CONTENTION_JOB], stdout=subprocess.PIPE,
                             env=env, text=True) for _ in range(k)]
    for job in jobs:
        job.stdout.readline()  # "ready": torch imported, looping
    return jobs


def stop_contention(jobs: list[subprocess.Popen]) -> None:
    for job in jobs:
        job.terminate()
    for job in jobs:
        try:
            job.wait(timeout=10)
        except subprocess.TimeoutExpired:
            job.kill()
            job.wait()


def run_case(name: str, threads: int, inputs: Path, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", name, "--threads",
           str(threads), "--inputs", str(inputs), "--n", str(args.n), "--repeats",
           str(args.repeats)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, env=env,
                              timeout=args.case_timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {args.case_timeout} s"}
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        return {"error": f"exit {done.returncode}: {tail[0][:200]}"}
    return json.loads(lines[-1])


def measure(cases: list[str], inputs: Path, args: argparse.Namespace) -> dict[str, dict]:
    """{condition label: {case: result}}, one subprocess per case and condition."""
    results: dict[str, dict] = {}
    for key in args.conditions:
        label, threads, contended = CONDITIONS[key]
        label = label.format(k=args.contention)
        jobs = start_contention(args.contention) if contended else []
        try:
            results[label] = {}
            for name in cases:
                res = run_case(name, threads, inputs, args)
                results[label][name] = res
                shown = (f"{res['time'] * 1e3:8.0f} ms  {res['peak'] / 2**20:7.0f} MiB"
                         if "time" in res else res.get("unavailable") or res.get("error"))
                print(f"  [{label}] {name:<28} {shown}", file=sys.stderr, flush=True)
        finally:
            stop_contention(jobs)
    return results


def time_ratio(res: dict, base: dict | None) -> float | None:
    """A case's time over the baseline's: the ratio measured interleaved in the case's own
    process when there is one, else over the baseline case's own run."""
    if "ratio" in res:
        return res["ratio"]
    if "time" in res and base and "time" in base:
        return res["time"] / base["time"]
    return None


def _cell(res: dict, base: dict | None, logits_bytes: int) -> tuple[str, str]:
    if "time" not in res:
        return "n/a", "n/a"
    ratio = time_ratio(res, base)
    return ("?" if ratio is None else f"{ratio:.2f}"), f"{res['peak'] / logits_bytes:.2f}"


def table(results: dict[str, dict], cases: list[str], logits_bytes: int) -> str:
    labels = list(results)
    head = "| case | value | " + " | ".join(f"{lb}: time | mem" for lb in labels) + " |"
    rows = [head, "|" + "---|" * (2 + 2 * len(labels))]
    for name in cases:
        first = next((results[lb][name] for lb in labels if "value" in results[lb][name]), {})
        value = f"{first['value']:.4f}" if "value" in first else "n/a"
        cells = []
        for lb in labels:
            t, m = _cell(results[lb][name], results[lb].get("torch fkl"), logits_bytes)
            cells += [t, m]
        rows.append(f"| {name} | {value} | " + " | ".join(cells) + " |")
    base = [f"{lb}: torch fkl = {results[lb]['torch fkl']['time'] * 1e3:.0f} ms"
            for lb in labels if "time" in results[lb].get("torch fkl", {})]
    return "\n".join(rows) + "\n\n" + "; ".join(base)


def check_targets(results: dict[str, dict], logits_bytes: int) -> list[str]:
    """The targets of issue #8, per condition: one line each, PASS or the failing cases."""
    out = []
    for label, res in results.items():
        def ok(name: str, res: dict = res) -> bool:
            return "time" in res.get(name, {})
        base = res.get(BASELINE)

        def ratio(name: str, res: dict = res, base: dict | None = base) -> float:
            value = time_ratio(res[name], base)
            return float("inf") if value is None else value

        divs = [n for n in res if n.startswith("akl_core ") and "+stats" not in n and ok(n)]
        if divs:
            slow = [f"{n[9:]} {ratio(n):.2f}x" for n in divs if ratio(n) > 1.0]
            big = [f"{n[9:]} {res[n]['peak'] / logits_bytes:.2f}x" for n in divs
                   if res[n]["peak"] > 1.5 * logits_bytes]
            out.append(f"- [{label}] divergences from logits, time <= 1.0x torch fkl: "
                       + (f"FAIL ({', '.join(slow)})" if slow else "PASS")
                       + "; extra memory <= 1.5x logits: "
                       + (f"FAIL ({', '.join(big)})" if big else "PASS"))
        for loss in bench_cases.FUSED_LOSSES:
            mine, liger = f"fused {loss}", bench_cases.liger_for(loss)
            if ok(mine) and ok(liger):
                t = ratio(mine) / ratio(liger)
                m = res[mine]["peak"] / max(res[liger]["peak"], 1)
                out.append(f"- [{label}] {mine} vs {liger}: time {t:.2f}x, peak {m:.2f}x: "
                           + ("PASS" if t <= 1.0 and m <= 1.0 else "FAIL"))
        for loss in ("fkl", "akl"):
            plain, stats = f"akl_core {loss}", f"akl_core {loss} +stats"
            if ok(plain) and ok(stats):
                # timed against the loss alone in the same process when it was (versus_ratio)
                extra = res[stats].get("versus_ratio", ratio(stats) / ratio(plain)) - 1
                out.append(f"- [{label}] return_stats on {loss}: {extra:+.0%} time: "
                           + ("PASS" if extra <= 0.10 else "FAIL"))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=("real", "random"), default="real")
    parser.add_argument("--n", type=int, default=None, help="positions (default 2048; quick 64)")
    parser.add_argument("--v", type=int, default=None, help="vocabulary of random inputs")
    parser.add_argument("--h", type=int, default=None, help="hidden size of random inputs")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats (default 3)")
    parser.add_argument("--conditions", nargs="+", choices=tuple(CONDITIONS),
                        default=list(CONDITIONS))
    parser.add_argument("--contention", type=int, default=2,
                        help="matmul jobs beside the '2c' condition")
    parser.add_argument("--cases", nargs="+", default=None, help="case names (default: all)")
    parser.add_argument("--quick", action="store_true", help="small N, one repeat: a smoke run")
    parser.add_argument("--dump", action="store_true", help="(re)write the inputs and stop")
    parser.add_argument("--case-timeout", type=float, default=1800.0)
    parser.add_argument("--out", type=Path, default=None, help="markdown output file")
    parser.add_argument("--cache", type=Path, default=bench_inputs.CACHE,
                        help="folder of the dumped inputs and results (default .cache/bench)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--inputs", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(run_worker(args)))
        return
    args.n = args.n or (64 if args.quick else 2048)
    args.repeats = args.repeats or (1 if args.quick else 3)
    v = args.v or (1000 if args.quick else 49152)
    h = args.h or (32 if args.quick else 576)
    inputs = bench_inputs.ensure_inputs(args.data, args.n, v, h, args.cache, force=args.dump)
    if args.dump:
        print(f"wrote {inputs}")
        return
    from safetensors import safe_open

    with safe_open(str(inputs), framework="pt") as f:
        n_all, v = f.get_slice("student_logits").get_shape()
        h = f.get_slice("student_hidden").get_shape()[1]
    args.n = min(args.n, n_all)
    known = bench_cases.all_cases()
    cases = args.cases or bench_cases.default_cases()
    unknown = [c for c in cases if c not in known]
    if unknown:
        parser.error(f"unknown case(s) {unknown}; known: {', '.join(known)}")
    if "torch fkl" not in cases:
        cases = ["torch fkl", *cases]
    logits_bytes = args.n * v * 4
    _, liger_note = bench_cases.liger_jsd()
    _, trl_note = bench_cases.trl_gjsd()
    started = time.strftime("%Y-%m-%d %H:%M")
    results = measure(cases, inputs, args)
    command = " ".join(shlex.quote(a) for a in ["python", *sys.argv])
    pythonpath = os.environ.get("PYTHONPATH", "")
    lines = [
        f"`{command}`" + (f" (PYTHONPATH={pythonpath})" if pythonpath else ""),
        "",
        f"{args.data} inputs: N={args.n} positions, V={v}, H={h}, float32 "
        f"(logits {logits_bytes / 2**20:.0f} MiB); {args.repeats} timed repeats after a "
        f"warm-up, median; torch {torch.__version__}; {os.cpu_count()} CPUs; "
        f"GOMP_SPINCOUNT={os.environ.get('GOMP_SPINCOUNT', 'unset')}, "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}; started {started}.",
        "time: forward+backward as a multiple of `torch fkl` timed interleaved with it in the "
        "case's own process (case, baseline, then the reverse, ...); mem: "
        "peak RSS above the step's start, as a multiple of the logits' size.",
        f"Liger: {liger_note}. TRL: {trl_note}.",
        "",
        table(results, cases, logits_bytes),
        "",
        "Targets (issue #8):",
        *check_targets(results, logits_bytes),
    ]
    text = "\n".join(lines)
    print(text)
    out = args.out or args.cache / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n", encoding="utf-8")
    out.with_suffix(".json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    print(f"\n(written to {out})", file=sys.stderr)


if __name__ == "__main__":
    main()
