"""Shared helpers to execute the project's notebooks in tests.

run_notebook(path, timeout=180, small=True) executes a temporary copy (akl_core.lab.publish.
execute_notebook: kernel "python3", cwd = repository root, AKL_SMALL=1 when small) and returns
the executed notebook. A failing cell raises NotebookCellError naming the cell, and so does a
cell that runs longer than `timeout` seconds (with whether the kernel was still busy with it).

The ~10-minute stall of the notebook tests: a lost wake-up of nbclient's zmq.asyncio poll left
a finished cell's execute_reply unread in the client's shell socket until the poll's timeout,
which was the whole cell timeout (600 s); execute_notebook polls in 1-second slices instead (see
akl_core/lab/publish.py). assert_no_outputs(path) checks that the committed file is clean.
"""

from __future__ import annotations

import os
from pathlib import Path

import nbformat

from akl_core.lab.publish import NotebookCellError, execute_notebook
from akl_core.lab.verdicts import from_outputs

REPO_ROOT = Path(__file__).resolve().parents[1]

__all__ = ["NotebookCellError", "assert_no_outputs", "cell_text", "figures", "run_notebook",
           "verdict_map"]


def run_notebook(
    path: str | os.PathLike[str], timeout: int = 180, small: bool = True,
    startup_timeout: int = 120,
) -> nbformat.NotebookNode:
    """Execute a copy of the notebook at `path`; `timeout` is per cell (seconds)."""
    return execute_notebook(path, small=small, cell_timeout=timeout,
                            startup_timeout=startup_timeout)


def assert_no_outputs(path: str | os.PathLike[str]) -> None:
    """Raise AssertionError if any code cell of the committed notebook has outputs or a count."""
    src = Path(path)
    if not src.is_absolute():
        src = REPO_ROOT / src
    nb = nbformat.read(src, as_version=4)
    dirty = [
        i
        for i, cell in enumerate(nb.cells)
        if cell.cell_type == "code" and (cell.get("outputs") or cell.get("execution_count"))
    ]
    assert not dirty, f"{src.name}: cells {dirty} carry outputs; strip them before committing"
    assert "widgets" not in nb.metadata, f"{src.name}: notebook metadata carries widget state"


def cell_text(nb: nbformat.NotebookNode) -> str:
    """All stream and text/plain outputs of an executed notebook, joined (for assertions)."""
    parts: list[str] = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                parts.append(out.get("text", ""))
            elif "data" in out and "text/plain" in out["data"]:
                parts.append(out["data"]["text/plain"])
    return "\n".join(parts)


def figures(nb: nbformat.NotebookNode) -> list[dict]:
    """The plotly figures (as dicts) an executed notebook displayed, in order."""
    import json

    out = []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            fig = o.get("data", {}).get("application/vnd.plotly.v1+json")
            if fig is not None:
                out.append(json.loads(fig) if isinstance(fig, str) else fig)
    return out


def verdict_map(nb: nbformat.NotebookNode) -> dict[str, dict]:
    """{key: verdict dict} of every verdict the notebook reported (keys must be unique)."""
    found = from_outputs(nb)
    keys = [v["key"] for v in found]
    assert len(keys) == len(set(keys)), f"duplicate verdict keys: {keys}"
    return {v["key"]: v for v in found}
