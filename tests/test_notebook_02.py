"""Notebook 02 (real LLM distributions) runs top to bottom at small settings, is committed
clean, and reports every claim's verdict; the ones that are theorems must hold even here."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.notebook_utils import assert_no_outputs, cell_text, figures, run_notebook, verdict_map

NB = Path(__file__).resolve().parents[1] / "notebooks" / "02_real_llm_distributions.ipynb"

EXPECTED = {
    "02.w_bound.truncate4", "02.w_above_half", "02.rkl_sign_flip.uniform",
    "02.rkl_sign_flip.truncate4", "02.claim1.converge", "02.realistic.far_tail_l1.lr_check",
    *(f"02.{start}.{claim}" for start in ("uniform", "realistic")
      for claim in ("head_first", "far_tail_l1", "far_tail_log")),
}


def test_notebook_02_committed_without_outputs():
    assert_no_outputs(NB)


@pytest.mark.slow
def test_notebook_02_runs_small_and_reports_its_verdicts():
    nb = run_notebook(NB, timeout=240, small=True)
    text = cell_text(nb)
    assert "SMALL=True" in text
    v = verdict_map(nb)
    assert EXPECTED <= set(v), sorted(EXPECTED - set(v))
    for item in v.values():
        assert item["status"] in ("holds", "fails", "mixed")
        assert f"[{item['status'].upper()}] {item['claim']}" in text
    # theorems: w <= 0.5 wherever the head errors have one sign, for every student shown
    bounds = [k for k in v if k.startswith("02.w_bound.")]
    assert len(bounds) >= 4 and all(v[k]["status"] == "holds" for k in bounds)
    # FKL's gradient never pushes an over-predicted token up; RKL's does, from a flat start
    assert v["02.rkl_sign_flip.uniform"]["status"] == "holds"
    # the seeds' values are kept (2 seeds at small settings)
    assert len(v["02.realistic.far_tail_l1"]["evidence"]["rkl"]["values"]) == 2
    assert len(figures(nb)) >= 11
