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
