"""Verdicts: each claim the notebooks test is decided by one function here, never in a cell.

A `Verdict` names the claim, its status (`holds`, `fails`, or `mixed` when seeds disagree), a
one-line reading with the numbers, and the evidence (JSON-able). Notebooks print them with
`report(...)`, which also attaches them as a `application/vnd.akl.verdicts+json` output;
`akl_core.lab.publish` collects those into docs/notebooks/<notebook>.verdicts.json.

Multi-seed comparisons: a claim "a is below b" holds when it holds in every seed, fails when
it holds in none, and is mixed otherwise; the evidence keeps every seed's values and their
mean and standard deviation (numpy's std, ddof=0).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from akl_core.lab.analysis import W_TOL

__all__ = [
    "HOLDS",
    "FAILS",
    "MIXED",
    "MIME",
    "Verdict",
    "report",
    "from_outputs",
    "seeds_below",
    "converges",
    "head_first_at_every_step",
    "w_bound",
    "w_above_half",
    "rkl_sign_flip",
    "best_loss",
    "lead_exceeds_spread",
    "all_improve",
    "paired_better",
]

HOLDS, FAILS, MIXED = "holds", "fails", "mixed"
MIME = "application/vnd.akl.verdicts+json"


@dataclass
class Verdict:
    """One claim and what the numbers say about it."""

    key: str
    claim: str
    status: str
    reading: str
    evidence: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status not in (HOLDS, FAILS, MIXED):
            raise ValueError(f"status must be holds / fails / mixed, got {self.status!r}")

    @property
    def holds(self) -> bool:
        return self.status == HOLDS

    def line(self) -> str:
        """`[HOLDS] claim: reading` (the printed form)."""
        return f"[{self.status.upper()}] {self.claim}: {self.reading}"

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(asdict(self))


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, (np.integer, int)) and not isinstance(obj, bool):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def report(verdicts: Sequence[Verdict], *, notebook: str, section: str = "") -> None:
    """Print each verdict's line and attach them all as one JSON output (for publishing)."""
    for v in verdicts:
        print(v.line())
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:  # plain Python: the printed lines are the report
        return
    if get_ipython() is None:
        return
    payload = {"notebook": notebook, "section": section,
               "verdicts": [v.to_dict() for v in verdicts]}
    display({MIME: payload, "text/plain": f"<{len(verdicts)} verdicts of {notebook}>"},
            raw=True)


def from_outputs(nb: Any) -> list[dict[str, Any]]:
    """Every verdict attached by `report` in an executed notebook (nbformat node), in order."""
    found: list[dict[str, Any]] = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if MIME in data:
                payload = data[MIME]
                if isinstance(payload, str):
                    payload = json.loads(payload)
                found += payload["verdicts"]
    return found


# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------


def _stats(values: Sequence[float]) -> dict[str, Any]:
    arr = np.asarray(values, dtype=np.float64)
    return {"values": arr.tolist(), "mean": float(arr.mean()), "std": float(arr.std())}


def _status(flags: Sequence[bool]) -> str:
    flags = [bool(f) for f in flags]
    if not flags:
        raise ValueError("no seeds to decide on")
    return HOLDS if all(flags) else FAILS if not any(flags) else MIXED


def _fmt(x: float) -> str:
    return f"{x:.3g}" if abs(x) >= 1e-3 or x == 0 else f"{x:.2e}"


def _ms(s: dict[str, Any]) -> str:
    return _fmt(s["mean"]) if len(s["values"]) == 1 else f"{_fmt(s['mean'])} ± {_fmt(s['std'])}"


def _at(result: Any, step: int, key: str) -> float:
    return float(result.at(step, key))


# ----------------------------------------------------------------------------------------------
# Claims about training paths (notebooks 01 and 02)
# ----------------------------------------------------------------------------------------------


def seeds_below(
    key: str,
    claim: str,
    runs_by_seed: Sequence[Mapping[str, Any]],
    lower: str,
    higher: str,
    step: int,
    metric: str,
) -> Verdict:
    """Claim: run `lower`'s `metric` at `step` is below run `higher`'s, in every seed.

    runs_by_seed: one {loss: TrainResult} per seed (or per position sample).
    """
    if not runs_by_seed:
        raise ValueError("runs_by_seed is empty")
    a = [_at(r[lower], step, metric) for r in runs_by_seed]
    b = [_at(r[higher], step, metric) for r in runs_by_seed]
    status = _status([x < y for x, y in zip(a, b)])
    sa, sb = _stats(a), _stats(b)
    wins = sum(x < y for x, y in zip(a, b))
    rel = (sb["mean"] - sa["mean"]) / abs(sb["mean"]) if sb["mean"] else float("nan")
    reading = (f"{metric} at step {step}: {lower} {_ms(sa)} vs {higher} {_ms(sb)} "
               f"({lower} lower by {rel:.1%} of {higher}'s; in {wins} of {len(a)} seeds)")
    return Verdict(key, claim, status, reading,
                   {"metric": metric, "step": step, lower: sa, higher: sb, "seeds": len(a),
                    "relative_difference": rel})


def converges(
    key: str,
    runs_by_seed: Sequence[Mapping[str, Any]],
    losses: Sequence[str] = ("fkl", "rkl"),
    *,
    metric: str = "fkl",
    fraction: float | None = None,
    absolute: float | None = None,
    label: str = "",
) -> Verdict:
    """Claim: every loss in `losses` drives `metric` (default KL(p||q)) below `fraction` of its
    start (default 0.1) or below `absolute`, by its last recorded step, in every seed.
    `label` prefixes the claim (e.g. the target's name)."""
    if fraction is not None and absolute is not None:
        raise ValueError("give fraction or absolute, not both")
    if fraction is None and absolute is None:
        fraction = 0.1
    flags, ends, starts = [], {n: [] for n in losses}, {n: [] for n in losses}
    for runs in runs_by_seed:  # a seed counts when every loss got there
        ok = True
        for name in losses:
            h = runs[name].history
            start, end = float(h[metric][0]), float(h[metric][-1])
            starts[name].append(start)
            ends[name].append(end)
            ok &= end < (fraction * start if fraction is not None else absolute)
        flags.append(ok)
    target = (f"below {fraction:.0%} of its start" if fraction is not None
              else f"below {absolute:g}")
    claim = f"{', '.join(n.upper() for n in losses)} each drive {metric} {target}"
    if label:
        claim = f"{label}: {claim}"
    steps = int(runs_by_seed[0][losses[0]].history["step"][-1])
    reading = f"at step {steps}: " + "; ".join(
        f"{n} {_ms(_stats(starts[n]))} -> {_ms(_stats(ends[n]))}" for n in losses)
    return Verdict(key, claim, _status(flags), reading,
                   {"metric": metric, "step": steps,
                    "start": {n: _stats(v) for n, v in starts.items()},
                    "end": {n: _stats(v) for n, v in ends.items()}})


def head_first_at_every_step(
    key: str, fkl: Any, rkl: Any, *, metric: str = "g_head", up_to: int | None = None
) -> Verdict:
    """Claim: FKL's head gap is below RKL's at every recorded step 1..up_to (not just one).

    Holds when it never flips; fails otherwise, and the reading names the steps where it does
    not hold (the toy's answer depends on the step).
    """
    from akl_core.lab.analysis import head_first_over_steps

    cmp = head_first_over_steps(fkl, rkl, metric)
    steps = cmp["steps"]
    last = int(steps[-1]) if up_to is None else int(up_to)
    considered = [int(s) for s in steps if 0 < s <= last]
    below = set(cmp["first_below"])
    not_below = [s for s in considered if s not in below]
    status = HOLDS if not not_below else FAILS
    if not not_below:
        reading = f"FKL below RKL at all {len(considered)} steps 1..{last}"
    else:
        reading = (f"FKL below RKL at {len(considered) - len(not_below)} of {len(considered)} "
                   f"steps; not at steps {_ranges(not_below)} (first flip at step "
                   f"{cmp['flip_step']})")
    return Verdict(key, f"FKL's {metric} stays below RKL's at every step 1..{last}", status,
                   reading, {"steps_not_below": not_below, "flip_step": cmp["flip_step"],
                             "difference": cmp["difference"], "steps": steps})


def _ranges(steps: Sequence[int]) -> str:
    """[1, 2, 3, 7, 8] -> '1-3, 7-8'."""
    out, start, prev = [], None, None
    for s in steps:
        if start is None:
            start = prev = s
        elif s == prev + 1:
            prev = s
        else:
            out.append(f"{start}-{prev}" if prev != start else f"{start}")
            start = prev = s
    if start is not None:
        out.append(f"{start}-{prev}" if prev != start else f"{start}")
    return ", ".join(out)


# ----------------------------------------------------------------------------------------------
# AKL's weight (notebook 02)
# ----------------------------------------------------------------------------------------------


def w_bound(key: str, stats: Mapping[str, float], label: str) -> Verdict:
    """Claim: w <= 0.5 (up to float rounding, W_TOL) wherever the head errors have one sign
    (a theorem; checked on real rows). stats: analysis.w_bound_stats."""
    max_w = float(stats["max_w_one_sign"])
    status = HOLDS if not (max_w > 0.5 + W_TOL) else FAILS
    reading = (f"{label}: the student under-predicts every head token at "
               f"{stats['all_head_under']:.1%} of {int(stats['n'])} positions, head errors "
               f"have both signs at {stats['mixed_head']:.1%}; max w where they have one sign "
               f"= {max_w:.6f}; w > 0.5 at {stats['w_above_half']:.1%}")
    return Verdict(key, "w <= 0.5 wherever the student's head errors all have one sign",
                   status, reading, dict(stats))


def w_above_half(
    key: str, cases: Mapping[str, Mapping[str, float]], *, expect: Sequence[str],
    tol: float = W_TOL,
) -> Verdict:
    """Claim: w > 0.5 does occur in each case named in `expect` (and the reading lists every
    case's share). cases: {label: analysis.w_bound_stats(...) or a row with 'w_above_half'
    counted as w > 0.5 + tol}."""
    missing = [c for c in expect if c not in cases]
    if missing:
        raise ValueError(f"cases {missing} were not measured")
    flags = [float(cases[c]["w_above_half"]) > 0 for c in expect]
    reading = "; ".join(f"{c}: {float(s['w_above_half']):.1%}" for c, s in cases.items())
    return Verdict(key, f"w > 0.5 occurs ({', '.join(expect)})", _status(flags),
                   f"share of positions with w > 0.5 + {tol:g}: {reading}",
                   {c: dict(s) for c, s in cases.items()})


#: FKL pushes no over-predicted token up; a share below this is float rounding (q = p to ~1e-16).
FKL_ROUNDING = 1e-6


def rkl_sign_flip(
    key: str, signs: Mapping[str, Mapping[str, float]], label: str, *, threshold: float = 0.1
) -> Verdict:
    """Claim: RKL's gradient pushes UP at least `threshold` of the over-predicted entries
    (q > p), while FKL (gradient q - p) pushes none (a share below FKL_ROUNDING is rounding).
    signs: analysis.gradient_sign_stats."""
    rkl, fkl = signs["rkl"], signs["fkl"]
    ok = rkl["over_pushed_up"] >= threshold and fkl["over_pushed_up"] < FKL_ROUNDING
    status = HOLDS if ok else FAILS
    reading = (f"{label}: RKL pushes up {rkl['over_pushed_up']:.1%} of the over-predicted "
               f"entries (holding {rkl['over_pushed_up_mass']:.1%} of the excess mass); "
               f"FKL {fkl['over_pushed_up']:.2g}")
    return Verdict(key, f"RKL pushes up >= {threshold:.0%} of the tokens that already hold "
                        f"too much mass, FKL none", status, reading,
                   {k: dict(v) for k, v in signs.items()})


# ----------------------------------------------------------------------------------------------
# Short distillation (notebook 03)
# ----------------------------------------------------------------------------------------------


def _scores(table: Mapping[str, Sequence[float | None]]) -> dict[str, list[float]]:
    out = {}
    for name, vals in table.items():
        clean = [float(v) for v in vals if v is not None and math.isfinite(float(v))]
        if not clean:
            raise ValueError(f"{name!r} has no finite score")
        out[name] = clean
    if len(out) < 2:
        raise ValueError("need at least two losses to compare")
    return out


def best_loss(key: str, table: Mapping[str, Sequence[float | None]], loss: str,
              metric: str) -> Verdict:
    """Claim: `loss` has the highest mean `metric` (higher is better) over seeds.
    table: {loss: [score per seed]}."""
    scores = _scores(table)
    if loss not in scores:
        raise ValueError(f"{loss!r} is not in the table")
    means = {n: float(np.mean(v)) for n, v in scores.items()}
    order = sorted(means, key=means.get, reverse=True)
    status = HOLDS if order[0] == loss else FAILS
    reading = (f"{metric} mean over seeds, best first: "
               + ", ".join(f"{n} {_ms(_stats(scores[n]))}" for n in order))
    return Verdict(key, f"{loss.upper()} has the best mean {metric}", status, reading,
                   {"metric": metric, "ranking": order,
                    "scores": {n: _stats(v) for n, v in scores.items()}})


def lead_exceeds_spread(key: str, table: Mapping[str, Sequence[float | None]],
                        metric: str) -> Verdict:
    """Claim: the best loss's lead over the runner-up exceeds the larger of their seed
    standard deviations (a weak separation test; with 3 seeds nothing stronger is possible)."""
    scores = _scores(table)
    means = {n: float(np.mean(v)) for n, v in scores.items()}
    order = sorted(means, key=means.get, reverse=True)
    best, second = order[0], order[1]
    lead = means[best] - means[second]
    spread = max(float(np.std(scores[best])), float(np.std(scores[second])))
    status = HOLDS if lead > spread else FAILS
    reading = (f"{best} leads {second} by {_fmt(lead)} {metric} points; the larger seed std of "
               f"the two is {_fmt(spread)}")
    return Verdict(key, f"the best loss on {metric} is separated from the runner-up by more "
                        f"than the seed spread", status, reading,
                   {"best": best, "runner_up": second, "lead": lead, "spread": spread})


def all_improve(key: str, before: float, table: Mapping[str, Sequence[float | None]],
                metric: str, *, higher_is_better: bool = True) -> Verdict:
    """Claim: every loss's mean `metric` is better than the student's before distillation."""
    scores = _scores(table)
    means = {n: float(np.mean(v)) for n, v in scores.items()}
    flags = [(m > before) if higher_is_better else (m < before) for m in means.values()]
    reading = (f"before KD {_fmt(before)}; after: "
               + ", ".join(f"{n} {_fmt(m)}" for n, m in means.items()))
    return Verdict(key, f"every loss improves {metric} over the untrained student",
                   _status(flags), reading,
                   {"metric": metric, "before": before,
                    "scores": {n: _stats(v) for n, v in scores.items()}})


def paired_better(key: str, table: Mapping[str, Sequence[float | None]], better: str,
                  worse: str, metric: str) -> Verdict:
    """Claim: `better` scores higher than `worse` on `metric` in every seed (runs of the same
    seed share the student's initialisation and the batches, so seeds pair up)."""
    if better not in table or worse not in table:
        raise ValueError(f"{better!r} and {worse!r} must both be in the table")
    a = [float(v) for v in table[better]]
    b = [float(v) for v in table[worse]]
    if len(a) != len(b) or not a:
        raise ValueError("both losses need one score per seed, the same seeds")
    flags = [x > y for x, y in zip(a, b)]
    reading = (f"{metric}: {better} {_ms(_stats(a))} vs {worse} {_ms(_stats(b))}; higher in "
               f"{sum(flags)} of {len(flags)} seeds")
    return Verdict(key, f"{better.upper()} beats {worse.upper()} on {metric} in every seed",
                   _status(flags), reading,
                   {"metric": metric, better: _stats(a), worse: _stats(b)})
