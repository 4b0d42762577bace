"""Notebook 01 (toy lab) runs top to bottom with small settings, is committed clean, and its
verdicts (computed by akl_core.lab.verdicts) say what the toy says at these settings."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.notebook_utils import assert_no_outputs, cell_text, figures, run_notebook, verdict_map

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "01_mode_seeking_toy.ipynb"


def test_notebook_01_committed_without_outputs():
    assert_no_outputs(NOTEBOOK)


@pytest.mark.slow
def test_notebook_01_executes_and_its_verdicts_hold_where_the_toy_says_so():
    nb = run_notebook(NOTEBOOK, timeout=180, small=True)
    text = cell_text(nb)
    assert "small settings: True" in text
    # classic demo: FKL std wider than RKL's
    stds = dict(re.findall(r"(FKL|RKL): fitted mean\s+\S+\s+std\s+([0-9.]+)", text))
    assert float(stds["FKL"]) > float(stds["RKL"])
    v = verdict_map(nb)
    assert v["01.fig2_bimodal.converge"]["status"] == "holds"
    assert v["01.fig2_unimodal.converge"]["status"] == "holds"
    assert v["01.fig3.head_first"]["status"] == "holds"
    assert v["01.fig3.far_tail_l1"]["status"] == "holds"
    assert v["01.fig3.far_tail_log"]["status"] == "holds"
    every = v["01.fig3.head_first_every_step"]
    assert every["status"] == "fails" and every["evidence"]["flip_step"] == 20
    assert every["evidence"]["steps_not_below"][:6] == [20, 21, 22, 23, 24, 25]
    assert v["01.fig3.rkl_sign_flip"]["status"] == "holds"
    # every verdict is printed, as its line, in the notebook's text
    for item in v.values():
        assert f"[{item['status'].upper()}] {item['claim']}" in text
    assert len(figures(nb)) >= 10
