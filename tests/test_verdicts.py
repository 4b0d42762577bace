"""akl_core.lab.verdicts: each claim's verdict on hand-made inputs whose answer is known, and
on the toy at small settings (the claims notebook 01 prints)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from akl_core.lab import analysis, toy, verdicts
from akl_core.lab.verdicts import FAILS, HOLDS, MIXED


class FakeRun:
    """A TrainResult stand-in: history values per step."""

    def __init__(self, **series):
        n = len(next(iter(series.values())))
        self.history = {"step": np.arange(n), **{k: np.asarray(v, float) for k, v in series.items()}}

    def at(self, step, key):
        return float(self.history[key][step])


def _seeds(pairs):
    return [{"fkl": FakeRun(g=[1.0, a]), "rkl": FakeRun(g=[1.0, b])} for a, b in pairs]


def test_seeds_below_holds_fails_and_mixed():
    holds = verdicts.seeds_below("k", "claim", _seeds([(0.1, 0.2), (0.3, 0.4)]), "fkl", "rkl", 1, "g")
    assert holds.status == HOLDS and holds.evidence["fkl"]["mean"] == pytest.approx(0.2)
    assert "in 2 of 2 seeds" in holds.reading
    assert "fkl lower by 33.3% of rkl's" in holds.reading  # (0.3 - 0.2) / 0.3
    fails = verdicts.seeds_below("k", "claim", _seeds([(0.3, 0.2), (0.5, 0.4)]), "fkl", "rkl", 1, "g")
    assert fails.status == FAILS
    mixed = verdicts.seeds_below("k", "claim", _seeds([(0.1, 0.2), (0.5, 0.4)]), "fkl", "rkl", 1, "g")
    assert mixed.status == MIXED and "in 1 of 2 seeds" in mixed.reading
    equal = verdicts.seeds_below("k", "claim", _seeds([(0.2, 0.2)]), "fkl", "rkl", 1, "g")
    assert equal.status == FAILS  # "below" is strict
    assert mixed.line().startswith("[MIXED] claim: g at step 1")
    json.dumps(mixed.to_dict(), allow_nan=False)
    with pytest.raises(ValueError, match="empty"):
        verdicts.seeds_below("k", "c", [], "fkl", "rkl", 1, "g")


def test_converges_by_fraction_or_absolute():
    runs = [{"fkl": FakeRun(fkl=[10.0, 0.5]), "rkl": FakeRun(fkl=[10.0, 2.0])}]
    v = verdicts.converges("k", runs, ("fkl", "rkl"))
    assert v.status == FAILS  # RKL only reached 20% of its start
    assert verdicts.converges("k", runs, ("fkl",)).status == HOLDS
    assert verdicts.converges("k", runs, ("fkl", "rkl"), absolute=3.0).status == HOLDS
    assert verdicts.converges("k", runs, ("fkl", "rkl"), fraction=0.25).status == HOLDS
    assert verdicts.converges("k", runs, ("fkl",), label="bimodal").claim.startswith("bimodal: FKL")
    with pytest.raises(ValueError, match="not both"):
        verdicts.converges("k", runs, fraction=0.1, absolute=1.0)


def test_head_first_at_every_step_names_the_steps_where_it_fails():
    fkl = FakeRun(g_head=[1, 0.5, 0.4, 0.5, 0.2, 0.1])
    rkl = FakeRun(g_head=[1, 0.9, 0.3, 0.4, 0.3, 0.2])
    v = verdicts.head_first_at_every_step("k", fkl, rkl)
    assert v.status == FAILS and v.evidence["steps_not_below"] == [2, 3]
    assert "not at steps 2-3" in v.reading and "first flip at step 2" in v.reading
    ok = verdicts.head_first_at_every_step("k", fkl, rkl, up_to=1)
    assert ok.status == HOLDS


def test_w_verdicts():
    good = {"n": 10, "all_head_under": 0.9, "mixed_head": 0.05, "w_above_half": 0.0,
            "max_w_one_sign": 0.5 + 1e-12}
    assert verdicts.w_bound("k", good, "x").status == HOLDS  # within float rounding
    bad = dict(good, max_w_one_sign=0.52)
    assert verdicts.w_bound("k", bad, "x").status == FAILS
    cases = {"a": {"w_above_half": 0.0}, "b": {"w_above_half": 0.1}, "c": {"w_above_half": 0.02}}
    assert verdicts.w_above_half("k", cases, expect=["b", "c"]).status == HOLDS
    assert verdicts.w_above_half("k", cases, expect=["a", "b"]).status == MIXED
    with pytest.raises(ValueError, match="not measured"):
        verdicts.w_above_half("k", cases, expect=["d"])
    signs = {"fkl": {"over_pushed_up": 0.0, "over_pushed_up_mass": 0.0},
             "rkl": {"over_pushed_up": 0.3, "over_pushed_up_mass": 0.2}}
    assert verdicts.rkl_sign_flip("k", signs, "x").status == HOLDS
    assert verdicts.rkl_sign_flip("k", signs, "x", threshold=0.5).status == FAILS
    rounding = {**signs, "fkl": {"over_pushed_up": 1e-9, "over_pushed_up_mass": 1e-12}}
    assert verdicts.rkl_sign_flip("k", rounding, "x").status == HOLDS
    wrong = {**signs, "fkl": {"over_pushed_up": 0.01, "over_pushed_up_mass": 0.01}}
    assert verdicts.rkl_sign_flip("k", wrong, "x").status == FAILS


def test_score_verdicts():
    table = {"fkl": [20.0, 21.0, 22.0], "akl": [23.0, 24.0, 25.0], "rkl": [19.0, None, 20.0]}
    best = verdicts.best_loss("k", table, "akl", "rougeL")
    assert best.status == HOLDS and best.evidence["ranking"] == ["akl", "fkl", "rkl"]
    assert verdicts.best_loss("k", table, "fkl", "rougeL").status == FAILS
    lead = verdicts.lead_exceeds_spread("k", table, "rougeL")
    assert lead.status == HOLDS and lead.evidence["lead"] == pytest.approx(3.0)
    close = verdicts.lead_exceeds_spread("k", {"a": [1.0, 3.0], "b": [1.5, 2.0]}, "m")
    assert close.status == FAILS  # lead 0.25 < std 1.0
    assert verdicts.all_improve("k", 19.5, table, "rougeL").status == MIXED
    assert verdicts.all_improve("k", 18.0, table, "rougeL").status == HOLDS
    paired = verdicts.paired_better("k", {"akl": [3.0, 1.0], "fkl": [2.0, 2.0]}, "akl", "fkl", "m")
    assert paired.status == MIXED
    with pytest.raises(ValueError, match="no finite"):
        verdicts.best_loss("k", {"a": [None], "b": [1.0]}, "a", "m")


def test_report_prints_and_from_outputs_reads_back(capsys):
    v = verdicts.Verdict("01.x", "a claim", HOLDS, "numbers", {"x": float("nan")})
    verdicts.report([v], notebook="01")
    assert "[HOLDS] a claim: numbers" in capsys.readouterr().out
    assert v.to_dict()["evidence"]["x"] is None  # NaN becomes null: the JSON stays valid
    payload = {"notebook": "01", "verdicts": [v.to_dict()]}
    nb = {"cells": [{"outputs": [{"data": {verdicts.MIME: payload}},
                                 {"data": {verdicts.MIME: json.dumps(payload)}}]}]}

    class Node(dict):
        @property
        def cells(self):
            return self["cells"]

    found = verdicts.from_outputs(Node(nb))
    assert [f["key"] for f in found] == ["01.x", "01.x"]
    with pytest.raises(ValueError, match="status"):
        verdicts.Verdict("k", "c", "maybe", "r")


def test_toy_claims_at_small_settings():
    """Notebook 01's verdicts on the paper's long tail, 40 steps: the head-first and far-tail
    claims hold at step 10, the head-first claim does not hold at every step."""
    target = toy.fig3_long_tail()
    regions = analysis.rank_regions(target.log_probs[None].astype(np.float32), far_rank=37)
    regions.pop("head")
    runs = {name: toy.train_free_logits(target, name, steps=40, lr=0.2, seed=1, regions=regions)
            for name in ("fkl", "rkl")}
    assert verdicts.seeds_below("h", "c", [runs], "fkl", "rkl", 10, "g_head").status == HOLDS
    assert verdicts.seeds_below("f", "c", [runs], "rkl", "fkl", 10, "l1_far").status == HOLDS
    assert verdicts.seeds_below("g", "c", [runs], "rkl", "fkl", 10, "logabs_far").status == HOLDS
    every = verdicts.head_first_at_every_step("e", runs["fkl"], runs["rkl"])
    assert every.status == FAILS and every.evidence["flip_step"] == 20
