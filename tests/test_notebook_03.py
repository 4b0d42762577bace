"""Notebook 03 (short distillations through run_experiment) runs top to bottom at small
settings, is committed clean, and reports its verdicts and sampled + greedy scores."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.notebook_utils import assert_no_outputs, cell_text, figures, run_notebook, verdict_map

NB = Path(__file__).resolve().parents[1] / "notebooks" / "03_short_distillation.ipynb"


def test_notebook_03_committed_without_outputs():
    assert_no_outputs(NB)


def test_notebook_03_trains_through_run_experiment_only():
    """The notebook trains through the one train-save-evaluate path, never the engine."""
    import nbformat

    source = "\n".join(c.source for c in nbformat.read(NB, as_version=4).cells
                       if c.cell_type == "code")
    assert "run_experiment(" in source
    assert "distill(" not in source.replace("run_experiment(", "")
    assert "distillation_loss" not in source


@pytest.mark.slow
def test_notebook_03_runs_small():
    nb = run_notebook(NB, timeout=300, small=True)
    text = cell_text(nb)
    assert "SMALL=True" in text
    runs = re.findall(r"seed (\d) (\w+)\s+\d+ s \(", text)
    assert sorted(runs) == sorted((s, loss) for s in ("0", "1") for loss in ("fkl", "akl"))
    v = verdict_map(nb)
    assert {"03.w_above_half_later", "03.akl_best.sampled", "03.akl_best.greedy",
            "03.lead_vs_spread.sampled", "03.all_improve.sampled", "03.akl_vs_fkl.sampled"} <= set(v)
    for item in v.values():
        assert item["status"] in ("holds", "fails", "mixed")
        assert f"[{item['status'].upper()}] {item['claim']}" in text
    best = v["03.akl_best.sampled"]["evidence"]["scores"]
    assert set(best) == {"fkl", "akl"} and all(len(s["values"]) == 2 for s in best.values())
    assert "sampled rougeL_gold" in text and "greedy rougeL_gold" in text
    assert len(figures(nb)) >= 4
