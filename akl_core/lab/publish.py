"""Execute the notebooks and publish their results: self-contained HTML and verdict JSON.

    python -m akl_core.lab.publish                 # all three, full settings -> docs/notebooks/
    python -m akl_core.lab.publish --small 01      # small settings (a smoke test), one notebook

For each notebook `notebooks/<stem>.ipynb` this writes
- `docs/notebooks/<stem>.html`: the executed notebook, every plotly figure inlined with
  plotly.js itself (one copy per page), no script or style loaded from the network (the CDN
  scripts of nbconvert's template are removed; widgets show their text form), so the page
  opens offline;
- `docs/notebooks/<stem>.verdicts.json`: {notebook, source, source_sha256, settings,
  wall_seconds, executed_at, python/torch versions, verdicts: [...]}, the verdicts attached by
  `akl_core.lab.verdicts.report` in the notebook, in order.

`source_sha256` is the SHA-256 of the committed notebook file: `stale_exports()` (and a test)
compares it with the notebook now, so an export that no longer matches its source is caught.

`execute_notebook` is also what the tests use: a cell that raises, or runs longer than the
per-cell timeout, raises NotebookCellError naming the cell; for a timeout it also says whether
the kernel was busy with the cell or never started it.

Why the notebook tests once stalled for ~10 minutes (diagnosed here with py-spy and gdb on a
stalled run: both processes idle in epoll): the kernel had finished the cell and sent its
execute_reply, which sat unread in nbclient's shell socket (zmq.EVENTS showed POLLIN) while
nbclient's zmq.asyncio poll never woke: a lost edge-triggered wake-up on the client side. The
poll only returns at its timeout, which nbclient sets to the whole cell timeout (600 s in the old
tests), and then finds the reply and carries on, so the run "stalled" for exactly one cell
timeout and passed. execute_notebook therefore polls the shell and iopub channels in slices of
POLL_SLICE seconds (each slice ends with a non-blocking poll that sees a pending message), so a
lost wake-up costs at most one slice; it counts such recoveries in the executed notebook's
metadata ("akl_lost_wakeups").
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK_DIR = REPO_ROOT / "notebooks"
EXPORT_DIR = REPO_ROOT / "docs" / "notebooks"
NOTEBOOKS = ("01_mode_seeking_toy", "02_real_llm_distributions", "03_short_distillation")
PLOTLY_MIME = "application/vnd.plotly.v1+json"
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
#: Per-cell time limits (seconds): small settings fail fast; full settings allow long cells.
SMALL_CELL_TIMEOUT = 180
FULL_CELL_TIMEOUT = 14400
#: Longest wait of one poll on the kernel's shell / iopub channel (seconds); see the module doc.
POLL_SLICE = 1.0


class NotebookCellError(RuntimeError):
    """A notebook cell raised or timed out; the message names the cell and shows its source."""


def source_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's bytes (the committed, output-free notebook)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def resolve(name: str) -> Path:
    """'02', '02_real_llm_distributions', or a path -> the notebook file."""
    p = Path(name)
    if p.suffix == ".ipynb" and p.exists():
        return p.resolve()
    for stem in NOTEBOOKS:
        if stem == name or stem.startswith(f"{name}_"):
            return NOTEBOOK_DIR / f"{stem}.ipynb"
    raise ValueError(f"unknown notebook {name!r}; choose one of {NOTEBOOKS} or give a path")


def _describe(nb: Any, index: int) -> tuple[str, str]:
    cell = nb.cells[index]
    code_index = sum(1 for c in nb.cells[:index] if c.cell_type == "code")
    return f"cell {index} (code cell #{code_index + 1})", "\n".join(cell.source.splitlines()[:15])


def execute_notebook(
    path: str | os.PathLike[str],
    *,
    small: bool,
    cell_timeout: int | None = None,
    startup_timeout: int = 120,
    extra_env: dict[str, str] | None = None,
) -> Any:
    """Execute a copy of the notebook (kernel python3, cwd = repository root, PYTHONPATH
    including it, AKL_SMALL=1 when `small`) and return the executed nbformat node.

    Raises NotebookCellError naming the cell when one fails or exceeds `cell_timeout` seconds
    (default SMALL_CELL_TIMEOUT or FULL_CELL_TIMEOUT). The file itself is never modified.
    """
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    src = Path(path)
    if not src.is_absolute():
        src = REPO_ROOT / src
    if not src.exists():
        raise FileNotFoundError(f"notebook not found: {src}")
    timeout = cell_timeout or (SMALL_CELL_TIMEOUT if small else FULL_CELL_TIMEOUT)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO_ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    if small:
        env["AKL_SMALL"] = "1"
    else:
        env.pop("AKL_SMALL", None)
    env.setdefault("MPLBACKEND", "Agg")
    env.update(extra_env or {})

    class TrackingClient(NotebookClient):
        """Remembers the running cell and the kernel's last status message for each cell, and
        polls the kernel's channels in slices (see the module docstring)."""

        current: int | None = None
        started: set[int] = set()
        lost_wakeups: int = 0

        def process_message(self, msg, cell, cell_index):  # type: ignore[override]
            if (msg.get("msg_type") == "status"
                    and msg["content"].get("execution_state") == "busy"):
                self.started.add(cell_index)
            return super().process_message(msg, cell, cell_index)

        async def async_start_new_kernel_client(self):  # type: ignore[override]
            kc = await super().async_start_new_kernel_client()
            for channel in (kc.shell_channel, kc.iopub_channel):
                channel.get_msg = _sliced(channel.get_msg, self)
            return kc

    with tempfile.TemporaryDirectory(prefix="akl-nb-") as tmp:
        copy = Path(tmp) / src.name
        shutil.copyfile(src, copy)
        nb = nbformat.read(copy, as_version=4)
        client = TrackingClient(nb, timeout=timeout, startup_timeout=startup_timeout,
                                kernel_name="python3",
                                resources={"metadata": {"path": str(REPO_ROOT)}})
        client.started = set()
        client.lost_wakeups = 0

        def on_start(cell: Any, cell_index: int) -> None:
            client.current = cell_index

        client.on_cell_start = on_start
        try:
            client.execute(env=env, cwd=str(REPO_ROOT))
        except CellExecutionError as exc:
            for index, cell in enumerate(nb.cells):
                errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
                if cell.cell_type == "code" and errors:
                    where, source = _describe(nb, index)
                    raise NotebookCellError(
                        f"{src.name}: {where} failed with {errors[0].get('ename')}: "
                        f"{errors[0].get('evalue')}\n--- cell source (start) ---\n{source}"
                    ) from None
            raise NotebookCellError(f"{src.name}: execution failed: {exc}") from exc
        except (CellTimeoutError, TimeoutError, DeadKernelError) as exc:
            index = client.current
            if index is None:
                raise NotebookCellError(
                    f"{src.name}: the kernel did not start or answer within {startup_timeout} s "
                    f"({type(exc).__name__}: {exc})") from None
            where, source = _describe(nb, index)
            if isinstance(exc, DeadKernelError):
                why = "the kernel died while running it"
            elif index not in client.started:
                why = ("the kernel never reported starting it (no 'busy' status): its execute "
                       "request was lost or never read")
            else:
                why = "the kernel was running it (too slow for the limit, or stuck in the cell)"
            what = "stopped" if isinstance(exc, DeadKernelError) else (
                f"did not finish within {timeout} s")
            raise NotebookCellError(
                f"{src.name}: {where} {what}; {why}\n"
                f"--- cell source (start) ---\n{source}") from None
    nb.metadata["akl_lost_wakeups"] = client.lost_wakeups
    return nb


def _sliced(get_msg: Any, owner: Any) -> Any:
    """Wrap an async channel.get_msg(timeout) so that it never waits longer than POLL_SLICE in
    one poll; the overall timeout (None = forever) is kept. A message that only turns up when a
    slice expires was missed by the poll's wake-up: counted in owner.lost_wakeups."""
    from queue import Empty

    async def get(timeout: float | None = None) -> Any:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            step = POLL_SLICE if left is None else min(POLL_SLICE, left)
            started = time.monotonic()
            try:
                msg = await get_msg(timeout=step)
            except Empty:
                if deadline is not None and time.monotonic() >= deadline:
                    raise
                continue
            if step > 0 and time.monotonic() - started >= 0.98 * step:
                owner.lost_wakeups += 1
            return msg

    return get


# ----------------------------------------------------------------------------------------------
# HTML export
# ----------------------------------------------------------------------------------------------

_NETWORK_SCRIPT = re.compile(
    r"<script\b[^>]*>(?:(?!</script>).)*?</script>", re.DOTALL | re.IGNORECASE)


def _is_network_script(tag: str) -> bool:
    head = tag[: tag.index(">") + 1]
    if re.search(r"""\bsrc\s*=\s*["']?\s*(https?:)?//""", head, re.IGNORECASE):
        return True
    if re.search(r"""\bsrc\s*=\s*["']\s*["']""", head):  # empty src
        return True
    body = tag[len(head):]
    return bool(re.search(r"""(import\s[^;]*from\s*|import\(\s*)["']https?://""", body)
                or "unpkg.com" in body or "cdnjs.cloudflare.com" in body)


def _inline_figures(nb: Any) -> int:
    """Replace every plotly output by self-contained HTML; plotly.js goes into the first one."""
    import plotly.io as pio

    count = 0
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            data = out.get("data")
            if not data:
                continue
            if PLOTLY_MIME in data:
                fig = data[PLOTLY_MIME]
                if isinstance(fig, str):
                    fig = json.loads(fig)
                html = pio.to_html(fig, include_plotlyjs=count == 0, full_html=False,
                                   div_id=f"akl-figure-{count + 1}",
                                   config={"responsive": True, "displaylogo": False})
                out["data"] = {"text/html": f'<div class="akl-figure">{html}</div>',
                               "text/plain": data.get("text/plain", "<figure>")}
                count += 1
            elif WIDGET_MIME in data:
                text = data.get("text/plain", "(interactive widget: run the notebook)")
                out["data"] = {"text/plain": f"{text}  [interactive widget: needs a live kernel]"}
    return count


def export_html(nb: Any, *, title: str, sha256: str) -> str:
    """The executed notebook as one offline HTML page (see the module docstring)."""
    import copy

    from nbconvert import HTMLExporter

    nb = copy.deepcopy(nb)
    nb.metadata.pop("widgets", None)
    figures = _inline_figures(nb)
    exporter = HTMLExporter(template_name="lab")
    exporter.embed_images = True
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": title}})
    body = _NETWORK_SCRIPT.sub(lambda m: "" if _is_network_script(m.group(0)) else m.group(0),
                               body)
    meta = (f'<meta name="akl-source-sha256" content="{sha256}">\n'
            f'<meta name="akl-figures" content="{figures}">\n')
    return body.replace("<head>", "<head>\n" + meta, 1)


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    try:
        import torch

        out["torch"] = torch.__version__
    except ImportError:  # pragma: no cover
        pass
    out["cpu_count"] = str(os.cpu_count())
    return out


def publish(
    notebooks: Sequence[str] = NOTEBOOKS,
    *,
    out_dir: str | os.PathLike[str] = EXPORT_DIR,
    small: bool = False,
    cell_timeout: int | None = None,
    log: Any = print,
) -> list[Path]:
    """Execute each notebook and write its HTML and verdict JSON into `out_dir`; returns the
    files written. Small settings are for smoke tests (the JSON says which settings ran)."""
    import nbformat

    from akl_core.lab import verdicts

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for name in notebooks:
        src = resolve(name)
        sha = source_sha256(src)
        nbformat.validate(nbformat.read(src, as_version=4))
        log(f"executing {src.name} ({'small' if small else 'full'} settings)...")
        start = time.perf_counter()
        nb = execute_notebook(src, small=small, cell_timeout=cell_timeout)
        seconds = time.perf_counter() - start
        found = verdicts.from_outputs(nb)
        record = {
            "notebook": src.stem,
            "source": f"notebooks/{src.name}",
            "source_sha256": sha,
            "settings": "small" if small else "full",
            "wall_seconds": round(seconds, 1),
            "executed_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "environment": _versions(),
            "polls_recovered_by_slicing": nb.metadata.get("akl_lost_wakeups"),
            "verdicts": found,
        }
        html_path = out / f"{src.stem}.html"
        json_path = out / f"{src.stem}.verdicts.json"
        html_path.write_text(export_html(nb, title=src.stem, sha256=sha), encoding="utf-8")
        json_path.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n",
                             encoding="utf-8")
        written += [html_path, json_path]
        log(f"  {src.name}: {seconds / 60:.1f} min, {len(found)} verdicts "
            f"({sum(v['status'] == 'holds' for v in found)} hold) -> {html_path.name}, "
            f"{json_path.name}")
    return written


def stale_exports(out_dir: str | os.PathLike[str] = EXPORT_DIR) -> dict[str, str]:
    """{notebook: reason} for every export that is missing, was made at small settings, or
    whose recorded source hash differs from the notebook file now."""
    problems: dict[str, str] = {}
    for stem in NOTEBOOKS:
        json_path = Path(out_dir) / f"{stem}.verdicts.json"
        html_path = Path(out_dir) / f"{stem}.html"
        if not json_path.exists() or not html_path.exists():
            problems[stem] = "no export"
            continue
        record = json.loads(json_path.read_text(encoding="utf-8"))
        now = source_sha256(NOTEBOOK_DIR / f"{stem}.ipynb")
        if record.get("source_sha256") != now:
            problems[stem] = (f"the notebook changed since its export (recorded "
                              f"{str(record.get('source_sha256'))[:12]}, now {now[:12]})")
        elif record.get("settings") != "full":
            problems[stem] = f"exported at {record.get('settings')!r} settings"
        elif f'content="{now}"' not in html_path.read_text(encoding="utf-8"):
            problems[stem] = "the HTML and the JSON come from different runs"
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", default=list(NOTEBOOKS),
                        help="01 / 02 / 03 or notebook paths (default: all three)")
    parser.add_argument("--small", action="store_true", help="small settings (smoke test)")
    parser.add_argument("--out", default=str(EXPORT_DIR), help="output folder")
    parser.add_argument("--cell-timeout", type=int, default=None, help="seconds per cell")
    parser.add_argument("--check", action="store_true",
                        help="only report stale exports (exit 1 if any)")
    args = parser.parse_args(argv)
    if args.check:
        problems = stale_exports(args.out)
        for stem, why in problems.items():
            print(f"{stem}: {why}")
        print("exports are up to date" if not problems else "run `make notebooks`")
        return 1 if problems else 0
    try:
        publish(args.notebooks, out_dir=args.out, small=args.small,
                cell_timeout=args.cell_timeout, log=lambda m: print(m, flush=True))
    except NotebookCellError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
