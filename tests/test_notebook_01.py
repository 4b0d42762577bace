"""Notebook 01 (toy lab) runs top to bottom with small settings and is committed clean."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.notebook_utils import assert_no_outputs, cell_text, run_notebook

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "01_mode_seeking_toy.ipynb"


def test_notebook_01_committed_without_outputs():
    assert_no_outputs(NOTEBOOK)


@pytest.mark.slow
def test_notebook_01_executes_and_shows_the_key_numbers():
    nb = run_notebook(NOTEBOOK, timeout=600, small=True)
    text = cell_text(nb)
    assert "small settings: True" in text
    # classic demo: FKL std wider than RKL's
    stds = dict(re.findall(r"(FKL|RKL): fitted mean\s+\S+\s+std\s+([0-9.]+)", text))
    assert float(stds["FKL"]) > float(stds["RKL"])
    # Fig. 2: both losses reach the target
    finals = re.findall(r"KL\(p\|\|q\) at step 1 = [0-9.]+, at step 200 = ([0-9.e+-]+)", text)
    assert len(finals) == 4 and all(float(v) < 1e-3 for v in finals)
    # Fig. 3: FKL closes the head first
    m = re.search(r"g_head at step 10: FKL ([0-9.]+) vs RKL ([0-9.]+)", text)
    assert m and float(m.group(1)) < float(m.group(2))
    # figures were produced (plotly outputs)
    figures = [o for c in nb.cells for o in c.get("outputs", [])
               if "application/vnd.plotly.v1+json" in o.get("data", {})
               or "text/html" in o.get("data", {})]
    assert len(figures) >= 6
