"""Notebook 02 (real LLM distributions, level 2 fits) runs top to bottom, small setting."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.notebook_utils import assert_no_outputs, cell_text, run_notebook

NB = Path(__file__).resolve().parents[1] / "notebooks" / "02_real_llm_distributions.ipynb"


def test_notebook_02_committed_without_outputs():
    assert_no_outputs(NB)


@pytest.mark.slow
def test_notebook_02_runs_small():
    nb = run_notebook(NB, timeout=900, small=True)
    text = cell_text(nb)
    assert "SMALL=True" in text
    # Section 1: real statistics were computed and are plausible for an LLM.
    match = re.search(r"\|H\| = 1 at (\d+)% of positions", text)
    assert match and int(match.group(1)) >= 30
    # Section 2: AKL weights on a truncate:4 student, Section 3: all three losses fitted.
    assert "AKL weight w on FKL over" in text
    for loss in ("fkl", "rkl", "akl"):
        assert re.search(rf"\b{loss}: +[\d.]+ s +KL\(p\|\|q\)", text), loss
    # Every loss lowers KL(p||q) on the real rows, even in a few steps.
    for start, end in re.findall(r"KL\(p\|\|q\) ([\d.]+) -> ([\d.]+)", text):
        assert float(end) < float(start)
    assert "claim 1" in text and "claim 2a" in text
    figures = [out for cell in nb.cells if cell.cell_type == "code"
               for out in cell.get("outputs", [])
               if "application/vnd.plotly.v1+json" in out.get("data", {})]
    assert len(figures) >= 10
