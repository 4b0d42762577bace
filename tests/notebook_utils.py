"""Shared helpers to execute the project's notebooks in tests.

run_notebook(path, timeout=600, small=True) executes a temporary copy with nbclient (kernel
"python3", cwd = repository root, env AKL_SMALL=1 when small) and returns the executed notebook;
a failing cell raises NotebookCellError naming the cell. assert_no_outputs(path) checks that the
committed file carries no outputs.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

REPO_ROOT = Path(__file__).resolve().parents[1]


class NotebookCellError(AssertionError):
    """A notebook cell raised while executing; the message names the cell and the error."""


def _failing_cell(nb: nbformat.NotebookNode) -> tuple[int, nbformat.NotebookNode] | None:
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                return index, cell
    return None


def run_notebook(
    path: str | os.PathLike[str], timeout: int = 600, small: bool = True
) -> nbformat.NotebookNode:
    """Execute a copy of the notebook at `path` and return the executed notebook.

    The kernel runs in the repository root with PYTHONPATH including it, and with AKL_SMALL=1
    when `small` (the notebook's first code cell then picks its small settings). The original
    file is never modified.
    """
    src = Path(path)
    if not src.is_absolute():
        src = REPO_ROOT / src
    if not src.exists():
        raise FileNotFoundError(f"notebook not found: {src}")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO_ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    )
    if small:
        env["AKL_SMALL"] = "1"
    else:
        env.pop("AKL_SMALL", None)
    env.setdefault("MPLBACKEND", "Agg")
    with tempfile.TemporaryDirectory(prefix="akl-nb-") as tmp:
        copy = Path(tmp) / src.name
        shutil.copyfile(src, copy)
        nb = nbformat.read(copy, as_version=4)
        client = NotebookClient(
            nb,
            timeout=timeout,
            kernel_name="python3",
            resources={"metadata": {"path": str(REPO_ROOT)}},
        )
        try:
            client.execute(env=env, cwd=str(REPO_ROOT))
        except CellExecutionError as exc:
            found = _failing_cell(nb)
            if found is None:
                raise NotebookCellError(f"{src.name}: execution failed: {exc}") from exc
            index, cell = found
            err = next(o for o in cell.outputs if o.get("output_type") == "error")
            code_index = sum(1 for c in nb.cells[:index] if c.cell_type == "code")
            source = "\n".join(cell.source.splitlines()[:15])
            raise NotebookCellError(
                f"{src.name}: cell {index} (code cell #{code_index + 1}) failed with "
                f"{err.get('ename')}: {err.get('evalue')}\n--- cell source (start) ---\n{source}"
            ) from None
        nbformat.write(nb, copy)
    return nb


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
