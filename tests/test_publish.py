"""akl_core.lab.publish: notebook execution that fails fast and cannot stall on a lost wake-up,
offline HTML export, verdict JSON and stale-export detection."""

from __future__ import annotations

import copy
import json
import time

import nbformat
import pytest

from akl_core.lab import publish, verdicts


def _notebook(tmp_path, *sources, name="t.ipynb"):
    nb = nbformat.v4.new_notebook()
    nb.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                  "language": "python"}}
    nb.cells = [nbformat.v4.new_markdown_cell("# title")] + [
        nbformat.v4.new_code_cell(src) for src in sources]
    path = tmp_path / name
    nbformat.write(nb, path)
    return path


def test_resolve_names():
    assert publish.resolve("02").name == "02_real_llm_distributions.ipynb"
    assert publish.resolve("01_mode_seeking_toy").name == "01_mode_seeking_toy.ipynb"
    with pytest.raises(ValueError, match="unknown notebook"):
        publish.resolve("07")


def test_network_scripts_are_recognised():
    net = ['<script src="https://cdnjs.cloudflare.com/x.js"></script>',
           "<script src='//unpkg.com/y.js'></script>",
           '<script src=""></script>',
           '<script type="module">import mermaid from "https://cdnjs.cloudflare.com/m.mjs";</script>']
    local = ['<script>window.x = 1;</script>',
             '<script type="application/vnd.jupyter.widget-state+json">{}</script>']
    assert all(publish._is_network_script(t) for t in net)
    assert not any(publish._is_network_script(t) for t in local)


def _executed_like(tmp_path):
    """A notebook node with the outputs an executed notebook has: a plotly figure twice, a
    widget, a verdict report."""
    import plotly.graph_objects as go

    nb = nbformat.read(_notebook(tmp_path, "fig", "w", "v"), as_version=4)
    fig = go.Figure(go.Scatter(x=[1, 2], y=[3, 4], name="curve")).to_plotly_json()
    fig = json.loads(json.dumps(fig, default=lambda o: o.tolist()))
    fig_out = nbformat.v4.new_output("display_data", data={
        publish.PLOTLY_MIME: fig, "text/html": '<script>require(["plotly"])</script>',
        "text/plain": "Figure"})
    widget_out = nbformat.v4.new_output("display_data", data={
        publish.WIDGET_MIME: {"model_id": "abc", "version_major": 2, "version_minor": 0},
        "text/plain": "HBox(children=(SelectMultiple()))"})
    v = verdicts.Verdict("x.1", "a claim", "holds", "reading")
    verdict_out = nbformat.v4.new_output("display_data", data={
        verdicts.MIME: {"notebook": "x", "verdicts": [v.to_dict()]}, "text/plain": "<1 verdict>"})
    nb.cells[1].outputs = [fig_out, copy.deepcopy(fig_out)]
    nb.cells[2].outputs = [widget_out]
    nb.cells[3].outputs = [verdict_out, nbformat.v4.new_output("stream", name="stdout",
                                                              text=v.line() + "\n")]
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    return nb


def test_export_html_is_offline_and_self_contained(tmp_path):
    nb = _executed_like(tmp_path)
    html = publish.export_html(nb, title="t", sha256="abc123")
    assert html.count("Plotly.newPlot") == 2
    assert html.count("plotly.js v") == 1 or html.count("* plotly.js") >= 1  # the library, once
    assert 'content="abc123"' in html and 'name="akl-figures" content="2"' in html
    assert "[HOLDS] a claim: reading" in html
    assert "interactive widget" in html
    for pattern in ('src="http', "src='http", 'src="//', "unpkg.com", "require.min.js",
                    "cdnjs.cloudflare.com/ajax/libs/mathjax"):
        assert pattern not in html, pattern
    assert len(html) > 3_000_000  # plotly.js is inlined (about 4.6 MB)


def test_stale_exports_are_caught(tmp_path, monkeypatch):
    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    out = tmp_path / "docs"
    out.mkdir()
    monkeypatch.setattr(publish, "NOTEBOOK_DIR", nbdir)
    monkeypatch.setattr(publish, "NOTEBOOKS", ("01_a",))
    src = _notebook(nbdir, "1 + 1", name="01_a.ipynb")
    assert publish.stale_exports(out) == {"01_a": "no export"}
    sha = publish.source_sha256(src)
    (out / "01_a.html").write_text(f'<meta name="akl-source-sha256" content="{sha}">')
    record = {"source_sha256": sha, "settings": "full", "verdicts": []}
    (out / "01_a.verdicts.json").write_text(json.dumps(record))
    assert publish.stale_exports(out) == {}
    (out / "01_a.verdicts.json").write_text(json.dumps({**record, "settings": "small"}))
    assert "small" in publish.stale_exports(out)["01_a"]
    (out / "01_a.verdicts.json").write_text(json.dumps(record))
    src.write_text(src.read_text().replace("1 + 1", "1 + 2"))
    assert "changed since its export" in publish.stale_exports(out)["01_a"]


@pytest.mark.slow
def test_execution_names_failing_and_slow_cells(tmp_path):
    bad = _notebook(tmp_path, "x = 1", "raise ValueError('boom here')", name="bad.ipynb")
    with pytest.raises(publish.NotebookCellError,
                       match=r"bad.ipynb: cell 2 \(code cell #2\) failed with ValueError: boom here"):
        publish.execute_notebook(bad, small=True)
    slow = _notebook(tmp_path, "import time", "time.sleep(60)", name="slow.ipynb")
    start = time.monotonic()
    with pytest.raises(publish.NotebookCellError,
                       match=r"slow.ipynb: cell 2 \(code cell #2\) did not finish within 4 s; "
                             r"the kernel was running it"):
        publish.execute_notebook(slow, small=True, cell_timeout=4)
    assert time.monotonic() - start < 45


@pytest.mark.slow
def test_a_lost_wake_up_costs_one_poll_slice_not_a_cell_timeout(tmp_path, monkeypatch):
    """Simulate the stall: the shell channel's poll misses its wake-up (it returns only at its
    timeout, then finds the reply), as measured on the stalled run. With sliced polling the
    notebook still finishes in seconds; with nbclient's plain poll it would wait the cell
    timeout (60 s here) on every affected cell."""
    import zmq
    from jupyter_client.channels import AsyncZMQSocketChannel

    real = AsyncZMQSocketChannel.get_msg
    calls = {"shell": 0}

    async def lossy(self, timeout=None):
        import asyncio

        if self.socket.socket_type == zmq.DEALER:  # the shell channel
            calls["shell"] += 1
            if calls["shell"] >= 2:  # every reply after kernel_info: the wake-up never comes
                await asyncio.sleep(3600 if timeout is None else timeout)
                return await real(self, timeout=0)
        return await real(self, timeout=timeout)

    monkeypatch.setattr(AsyncZMQSocketChannel, "get_msg", lossy)
    path = _notebook(tmp_path, "a = 1", "b = a + 1", "print(b)", name="lossy.ipynb")
    start = time.monotonic()
    nb = publish.execute_notebook(path, small=True, cell_timeout=60)
    assert time.monotonic() - start < 40
    assert nb.cells[3].outputs[0]["text"] == "2\n"
    assert nb.metadata["akl_lost_wakeups"] >= 3
