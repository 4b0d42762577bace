"""akl_core.lab.viz: figure structure (traces, titles, axis labels and types, head shading)."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import pytest
import torch

from akl_core.lab import toy, viz


def _names(fig: go.Figure) -> list[str]:
    return [t.name for t in fig.data if t.showlegend is not False]


def test_distribution_figure_linear_and_log_with_head():
    x = np.arange(5.0)
    p = np.array([0.4, 0.3, 0.15, 0.1, 0.05])
    q = [0.2, 0.2, 0.2, 0.2, 0.2]
    head = np.array([True, False, False, False, False])
    fig = viz.distribution_figure(x, p, {"fkl": q, "rkl": torch.tensor(q)}, head_mask=head,
                                  title="snap")
    assert fig.layout.title.text == "snap"
    assert fig.layout.xaxis.title.text and fig.layout.yaxis.title.text
    assert isinstance(fig.data[0], go.Bar)
    assert _names(fig) == ["teacher p", "fkl", "rkl", "teacher head (shaded)"]
    assert fig.data[1].line.color == viz.LOSS_COLORS["fkl"]
    assert len(fig.layout.shapes) == 1  # one contiguous head run
    assert fig.layout.shapes[0].x0 == pytest.approx(-0.5)
    assert fig.layout.shapes[0].x1 == pytest.approx(0.5)
    assert fig.layout.yaxis.type in (None, "linear", "-")
    log = viz.distribution_figure(x, p, {"fkl": q}, log_y=True)
    assert log.layout.yaxis.type == "log"
    assert len(log.layout.shapes) == 0


def test_head_shading_follows_non_contiguous_heads():
    t = toy.fig2_bimodal()
    head = np.zeros(t.size, dtype=bool)
    head[[10, 11, 36, 37, 38]] = True
    fig = viz.distribution_figure(t.x, t.probs, head_mask=head)
    assert len(fig.layout.shapes) == 2


def test_snapshot_panels_structure():
    t = toy.fig3_long_tail()
    runs = {
        loss: toy.train_free_logits(t, loss, steps=10, lr=0.2, snapshot_steps=[1, 5, 10],
                                    record=[]).snapshots
        for loss in ("fkl", "rkl")
    }
    head = np.zeros(t.size, dtype=bool)
    head[:8] = True
    fig = viz.snapshot_panels(t.x, t.probs, runs, [1, 5, 10], head_mask=head, log_y=True,
                              title="Fig 3")
    assert fig.layout.title.text == "Fig 3"
    titles = [a.text for a in fig.layout.annotations]
    assert titles[:3] == ["step 1", "step 5", "step 10"]
    # per panel: target + 2 runs + head legend marker (first panel only)
    assert len(fig.data) == 3 * 3 + 1
    assert _names(fig) == ["teacher p", "fkl", "rkl", "teacher head (shaded)"]
    assert fig.layout.yaxis.type == "log" and fig.layout.yaxis3.type == "log"
    assert fig.layout.xaxis2.title.text
    assert len(fig.layout.shapes) == 3
    # default steps: those present in every run
    auto = viz.snapshot_panels(t.x, t.probs, runs)
    assert [a.text for a in auto.layout.annotations] == ["step 1", "step 5", "step 10"]
    with pytest.raises(ValueError, match="no snapshot"):
        viz.snapshot_panels(t.x, t.probs, runs, [2])


def test_curves_gaps_and_divergence():
    t = toy.fig2_unimodal()
    res = {loss: toy.train_free_logits(t, loss, steps=8, lr=0.1) for loss in ("fkl", "akl")}
    fig = viz.gap_curves(res)  # objects with .history are accepted
    assert [a.text for a in fig.layout.annotations] == ["head gap g_head", "tail gap g_tail"]
    assert len(fig.data) == 4
    assert _names(fig) == ["fkl", "akl"]
    assert fig.layout.xaxis.title.text == "step"
    np.testing.assert_array_equal(fig.data[0].x, np.arange(9))
    np.testing.assert_allclose(fig.data[0].y, res["fkl"].history["g_head"])
    div = viz.divergence_curves({k: r.history for k, r in res.items()})
    assert div.layout.yaxis.type == "log"
    assert "KL(p||q)" in div.layout.yaxis.title.text
    assert div.layout.title.text
    w = viz.curves_figure(res, "w", title="weights")
    assert w.layout.title.text == "weights" and w.layout.yaxis.type in (None, "linear", "-")
    with pytest.raises(ValueError, match="no 'nope'"):
        viz.curves_figure(res, "nope")
    with pytest.raises(ValueError):
        viz.curves_figure({}, "fkl")


def test_continuous_fit_figure():
    mix = toy.classic_mixture()
    fits = {"FKL": toy.fit_gaussian(mix, "fkl", steps=5), "RKL": toy.fit_gaussian(mix, "rkl",
                                                                                  steps=5)}
    x = fits["FKL"].x
    fig = viz.continuous_fit_figure(x, fits["FKL"].target, fits)
    assert _names(fig) == ["target p (mixture)", "FKL", "RKL"]
    assert fig.data[0].fill == "tozeroy"
    assert fig.data[1].line.color == viz.LOSS_COLORS["fkl"]
    assert fig.layout.title.text and fig.layout.xaxis.title.text == "x"
    with pytest.raises(ValueError):
        viz.continuous_fit_figure(x, fits["FKL"].target[:-1], fits)


def test_shape_mismatch_raises():
    with pytest.raises(ValueError):
        viz.distribution_figure([0, 1, 2], [0.5, 0.5])
    with pytest.raises(ValueError):
        viz.distribution_figure([0, 1], [0.5, 0.5], {"fkl": [1.0]})
    with pytest.raises(ValueError):
        viz.distribution_figure([0, 1], [0.5, 0.5], head_mask=[True])


# --- figures of notebooks 02 and 03: seeds with spread, differences, gradients, sweeps ---------


def test_seed_band_curves_mean_and_range():
    runs = {"fkl": [{"step": [0, 1, 2], "g_head": [1.0, 0.5, 0.2]},
                    {"step": [0, 1, 2], "g_head": [1.0, 0.6, 0.4]},
                    {"step": [0, 1, 2], "g_head": [1.0, 1.0, 0.3]}],
            "rkl": [{"step": [0, 1, 2], "g_head": [1.0, 0.9, 0.8]}]}
    fig = viz.seed_band_curves(runs, ["g_head"], mark_step=1, title="bands")
    lines = [t for t in fig.data if t.mode == "lines" and t.showlegend is not False]
    assert [t.name for t in lines] == ["fkl", "rkl"]
    np.testing.assert_allclose(lines[0].y, [1.0, 0.7, 0.3])
    band = [t for t in fig.data if t.fill == "toself"]
    assert len(band) == 1  # one seed of rkl: no band
    np.testing.assert_allclose(band[0].y, [1.0, 1.0, 0.4, 0.2, 0.5, 1.0])  # max, then min back
    with pytest.raises(ValueError, match="different steps"):
        viz.seed_band_curves({"a": [{"step": [0, 1], "x": [1, 2]}, {"step": [0, 2], "x": [1, 2]}]},
                             ["x"])
    with pytest.raises(ValueError, match="has no 'y'"):
        viz.seed_band_curves(runs, ["y"])


def test_difference_figure_marks_the_sign():
    fig = viz.difference_figure([0, 1, 2, 3], [-0.2, -0.1, 0.05, -0.01])
    below = next(t for t in fig.data if t.name == "first below second")
    above = next(t for t in fig.data if t.name == "first not below")
    assert list(below.x) == [0, 1, 3] and list(above.x) == [2]
    with pytest.raises(ValueError, match="3 steps but 2"):
        viz.difference_figure([0, 1, 2], [0.1, 0.2])


def test_gradient_rank_figure_colours_over_and_under_prediction():
    from akl_core.lab import analysis

    g = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(1, 500, generator=g), torch.randn(1, 500, generator=g) * 3
    by_rank = analysis.gradient_by_rank(student, teacher, ["fkl", "rkl"])
    fig = viz.gradient_rank_figure(by_rank, ["fkl", "rkl"])
    assert fig.layout.xaxis.type == "log" and fig.layout.xaxis2.type == "log"
    over = [t for t in fig.data if t.name.startswith("q > p")]
    assert len(over) == 2
    n_points = sum(len(t.x) for t in fig.data[:2])
    assert 100 < n_points < 500  # thinned: the first 100 ranks and ~300 log-spaced ones
    # FKL pushes every over-predicted token down
    assert (np.asarray(over[0].y) <= 0).all()
    full = viz.gradient_rank_figure(by_rank, ["fkl"], max_points=None)
    assert sum(len(t.x) for t in full.data) == 500
    with pytest.raises(ValueError, match="has no 'akl'"):
        viz.gradient_rank_figure(by_rank, ["akl"])


def test_sweep_and_seed_scores_figures():
    rows = [{"mu": 0.1, "a": 1.0, "b": 0.2}, {"mu": 0.5, "a": 2.0, "b": 0.3}]
    fig = viz.sweep_figure(rows, "mu", ["a", "b"], labels={"a": "A"}, log_keys=["a"])
    assert fig.layout.yaxis.type == "log" and fig.layout.annotations[0].text == "A"
    tables = {"sampled rougeL_gold": {"fkl": [10.0, 12.0], "akl": [11.0, None]}}
    fig = viz.seed_scores_figure(tables, reference={"teacher": {"sampled rougeL_gold": 20.0}})
    bar = next(t for t in fig.data if isinstance(t, go.Bar))
    np.testing.assert_allclose(bar.y, [11.0, 11.0])
    np.testing.assert_allclose(bar.error_y.array, [1.0, 0.0])
    dots = next(t for t in fig.data if t.name == "one seed")
    assert list(dots.x) == ["fkl", "fkl", "akl"]
    assert any("teacher 20" in a.text for a in fig.layout.annotations)
    with pytest.raises(ValueError, match="empty"):
        viz.sweep_figure([], "mu", ["a"])


# ------------------------------------------------------- token view, top-k union, figure fonts


def test_topk_figure_shows_the_union_of_tokens_on_a_shared_x_range():
    teacher = [[" the", 0.5], ["\n", 0.3], [" ", 0.1]]
    student = [["a", 0.9], [" the", 0.05], ["b", 0.02]]
    fig = viz.topk_figure(teacher, student, head_size=1)
    bars = [tr for tr in fig.data if tr.type == "bar"]
    union = ["␣the", "↵", "␣", "a", "b"]  # teacher order, then the student's other tokens
    assert [list(b.y) for b in bars] == [union, union]
    assert list(bars[0].x) == [0.5, 0.3, 0.1, None, None]  # no bar outside a top-k
    assert list(bars[1].x) == [0.05, None, None, 0.9, 0.02]
    assert fig.layout.xaxis.range == fig.layout.xaxis2.range
    assert fig.layout.xaxis.range[1] >= 0.9
    assert "not in teacher p's top-k" in bars[0].customdata[3]
    # whitespace-only and empty tokens are visible; two ids decoding alike stay apart
    assert viz.topk_label("") == "∅" and viz.topk_label("\t") == "→"
    dup = viz.topk_figure([["x", 0.6], ["x", 0.3]])
    assert list(dup.data[0].y) == ["x", "x (2)"]


def test_token_view_figure_cells_hover_context_and_fixed_range():
    tokens = [" The", " cat", "\n", "  ", "."]
    w = [0.0, 0.25, 0.5, 1.0, float("nan")]
    fig = viz.token_view_figure(
        tokens, w, value_label="w", hover={"g_head": [0, 1, 2, 0.5, 1], "head_size": [1] * 5},
        context=["<s>"], selected=1, ticks=viz.W_TICKS)
    cells, context, scale = fig.data
    assert list(cells.text) == [" The", " cat", "↵", "␣␣", "."]  # whitespace visible
    assert list(context.text) == ["<s>"] and context.marker.color == viz.CONTEXT_COLOR
    # one point per position, in order: a click's point index is the position
    assert [int(c[0]) for c in cells.customdata] == [0, 1, 2, 3, 4]
    for name in ("g_head", "head_size", "AKL weight w on FKL"):
        assert name in cells.hovertemplate
    assert list(cells.marker.line.width) == [0, 4, 0, 0, 0]
    # the colour range is the caller's, not the data's; NaN is grey
    assert (scale.marker.cmin, scale.marker.cmax) == (0.0, 1.0)
    assert "w < 0.5 leans RKL" in scale.marker.colorbar.title.text
    assert "0.5: even" in scale.marker.colorbar.ticktext
    assert cells.marker.color[4] == viz.CONTEXT_COLOR
    same = viz.token_view_figure(tokens[:2], [0.0, 0.25], zmin=0.0, zmax=1.0)
    assert same.data[0].marker.color[1] == cells.marker.color[1]  # fixed range: same colour
    # the token after a newline starts a new line
    rows = list(cells.y)
    assert rows[2] == rows[1] and rows[3] == rows[2] + 1
    with pytest.raises(ValueError, match="2 tokens but 1 values"):
        viz.token_view_figure(["a", "b"], [0.1])
    with pytest.raises(ValueError, match="zmin < zmax"):
        viz.token_view_figure(["a"], [0.1], zmin=1.0, zmax=1.0)
    with pytest.raises(ValueError, match="hover 'g'"):
        viz.token_view_figure(["a"], [0.1], hover={"g": [1, 2]})
    with pytest.raises(ValueError, match="selected"):
        viz.token_view_figure(["a"], [0.1], selected=3)


def test_figure_fonts_are_at_least_14px_and_restyle():
    fig = viz.gap_curves({"fkl": {"step": [0, 1], "g_head": [1, 0.5], "g_tail": [1, 0.2]}})
    assert fig.layout.font.size >= viz.MIN_FONT_SIZE == 14
    assert fig.layout.xaxis.tickfont.size >= 14 and fig.layout.yaxis2.title.font.size >= 14
    assert all(a.font.size >= 14 for a in fig.layout.annotations)  # subplot titles
    height = fig.layout.height
    viz.style_figure(fig, 22)
    assert fig.layout.font.size == 22 and fig.layout.title.font.size == 26
    assert fig.layout.legend.title.font.size == 22
    assert fig.layout.xaxis2.tickfont.size == 22 and fig.layout.height > height
    log = viz.divergence_curves({"fkl": {"step": [0, 1], "fkl": [1.0, 0.0]}}, floor=1e-12)
    assert log.layout.yaxis.exponentformat == "power"  # 10^-3, not 0.001 / 1e-3
    assert min(log.data[0].y) == 1e-12  # a KL of 0 is drawn at the floor
    old = viz.FONT_SIZE
    try:
        viz.set_font_size(18)
        assert viz.head_size_histogram([1, 2, 3]).layout.font.size == 18
    finally:
        viz.set_font_size(old)
    with pytest.raises(ValueError, match="font size"):
        viz.set_font_size(2)
