"""Speed and peak extra memory of akl_core's losses against two plain-PyTorch baselines.

    python benchmarks/bench_losses.py [--n 512 2048] [--v 32000 49152 151936] [--repeats 3]

(a) plain FKL: log_softmax + F.kl_div, autograd.  (b) AKL written the straightforward way: a
full sort of the teacher probs per position, cumsum mask, gaps, weights, FKL + RKL by autograd.
Each row reports forward+backward time (median of --repeats) and peak extra memory, and the
ratios to (a) and (b) measured in the same run. Inputs imitate LLM next-token distributions:
Gaussian logits plus a few boosted tokens, so most of the mass sits on a handful of tokens.
Memory: CUDA peak allocated on GPU; on CPU the process's peak RSS (VmHWM, reset through
/proc/self/clear_refs) above the RSS before the step. Timings are noisy: compare ratios.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

import akl_core


def llm_like_logits(n: int, v: int, seed: int, device: torch.device) -> torch.Tensor:
    """`[n, v]` logits whose softmax has a few dominant tokens and a long tail."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, v, generator=g) * 1.5
    boosts = torch.rand(n, 4, generator=g) * 8.0 + 9.0
    idx = torch.randint(0, v, (n, 4), generator=g)
    logits.scatter_add_(1, idx, boosts)
    return logits.to(device)


def plain_fkl(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Baseline (a): the usual PyTorch forward KL."""
    return F.kl_div(
        F.log_softmax(s, -1), F.log_softmax(t, -1), log_target=True, reduction="batchmean"
    )


def naive_akl(s: torch.Tensor, t: torch.Tensor, mu: float = 0.5) -> torch.Tensor:
    """Baseline (b): AKL with a full sort of the vocabulary at every position."""
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


def _rss_kib(field: str) -> int:
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


def measure_once(fn, s0: torch.Tensor, t: torch.Tensor) -> tuple[float, float]:
    """(seconds, peak extra MiB) of one forward+backward of fn(s, t)."""
    s = s0.detach().requires_grad_(True)
    if s.is_cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        _reset_peak()
        base = _rss_kib("VmRSS") * 1024
    start = time.perf_counter()
    fn(s, t).backward()
    if s.is_cuda:
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = _rss_kib("VmHWM") * 1024 - base
    return time.perf_counter() - start, peak / 2**20


def measure_all(chosen: dict, s: torch.Tensor, t: torch.Tensor, repeats: int) -> dict:
    """Round-robin over the methods (so background load hits all alike); median time, max peak."""
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in chosen}
    for round_ in range(repeats + 1):
        for name, fn in chosen.items():
            sample = measure_once(fn, s, t)
            if round_ > 0:  # the first round warms up
                samples[name].append(sample)
    return {
        name: (statistics.median(x[0] for x in xs), max(x[1] for x in xs))
        for name, xs in samples.items()
    }


def methods() -> dict[str, object]:
    out: dict[str, object] = {"(a) plain fkl": plain_fkl, "(b) naive akl": naive_akl}
    for name in akl_core.LOSSES:
        out[name] = lambda s, t, name=name: akl_core.distillation_loss(s, t, loss=name)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[512, 2048])
    parser.add_argument("--v", type=int, nargs="+", default=[32000, 49152, 151936])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--losses", nargs="*", default=None, help="subset of losses")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    chosen = methods()
    if args.losses:
        keep = {"(a) plain fkl", "(b) naive akl", *args.losses}
        chosen = {k: v for k, v in chosen.items() if k in keep}
    print(f"device={device} threads={torch.get_num_threads()} torch={torch.__version__}")
    for n in args.n:
        for v in args.v:
            s = llm_like_logits(n, v, 0, device)
            t = llm_like_logits(n, v, 1, device)
            logits_mib = s.numel() * s.element_size() / 2**20
            heads = akl_core.head_tail(s, t).head_size.float()
            print(f"\nN={n} V={v}  logits {logits_mib:.0f} MiB each; teacher head size: "
                  f"median {heads.median():.0f}, max {heads.max():.0f}")
            print(f"{'loss':<16}{'time ms':>10}{'x (a)':>8}{'x (b)':>8}{'peak MiB':>10}"
                  f"{'x logits':>10}")
            results = measure_all(chosen, s, t, args.repeats)
            base_a, base_b = results["(a) plain fkl"][0], results["(b) naive akl"][0]
            for name, (sec, peak) in results.items():
                print(f"{name:<16}{sec * 1e3:>10.1f}{sec / base_a:>8.2f}{sec / base_b:>8.2f}"
                      f"{peak:>10.0f}{peak / logits_mib:>10.2f}")


if __name__ == "__main__":
    main()
