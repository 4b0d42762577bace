"""Notebook 03 (short distillation on the bundled teacher) runs top to bottom, small setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.notebook_utils import assert_no_outputs, run_notebook

NB = Path(__file__).resolve().parents[1] / "notebooks" / "03_short_distillation.ipynb"


def test_notebook_03_committed_without_outputs():
    assert_no_outputs(NB)


@pytest.mark.slow
def test_notebook_03_runs_small():
    nb = run_notebook(NB, timeout=900, small=True)
    text = "\n".join(
        out.get("text", "") if out.get("output_type") == "stream"
        else str(out.get("data", {}).get("text/plain", ""))
        for cell in nb.cells if cell.cell_type == "code" for out in cell.get("outputs", [])
    )
    assert "SMALL=True" in text
    for loss in ("fkl", "rkl", "fkl_rkl", "akl"):
        assert f"distill {loss}" in text or loss in text
    assert "rougeL_teacher" in text and "before KD" in text
    figures = [out for cell in nb.cells if cell.cell_type == "code"
               for out in cell.get("outputs", [])
               if "application/vnd.plotly.v1+json" in out.get("data", {})]
    assert len(figures) >= 6  # 4 curve figures, the evaluation bars, the generations table
