"""Plotly figure builders shared by the notebooks and the Streamlit app.

Every builder takes plain data (numpy arrays, lists, or torch tensors on the CPU) and returns a
`plotly.graph_objects.Figure` with a title, axis labels and a legend. Conventions: p = teacher
(target) distribution, q = student distribution. A "history" is a mapping with a 'step' array and
one array per recorded quantity (e.g. `akl_core.lab.toy.TrainResult.history`); objects with a
`.history` attribute are accepted too.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .runs import numbered

__all__ = [
    "LOSS_COLORS",
    "LABELS",
    "loss_color",
    "loss_dash",
    "LOSS_STYLES",
    "distribution_figure",
    "snapshot_panels",
    "curves_figure",
    "gap_curves",
    "divergence_curves",
    "continuous_fit_figure",
    "seed_band_curves",
    "difference_figure",
    "gradient_rank_figure",
    "sweep_figure",
    "seed_scores_figure",
    "step_panels",
    "step_ticks",
    "STEP_LABELS",
]

#: Fixed colour and dash per loss so a loss looks the same in every figure and the app. Colours
#: are the Okabe-Ito palette (distinguishable under the common colour-vision deficiencies);
#: losses sharing a colour differ by dash (a variant keeps its parent's colour).
LOSS_STYLES: dict[str, tuple[str, str]] = {
    "fkl": ("#0072B2", "solid"),
    "rkl": ("#D55E00", "dash"),
    "akl": ("#009E73", "solid"),
    "akl_r": ("#009E73", "dot"),
    "fkl_rkl": ("#000000", "dash"),
    "jsd": ("#E69F00", "solid"),
    "taid": ("#E69F00", "longdash"),
    "tvd": ("#CC79A7", "dash"),
    "ab": ("#CC79A7", "solid"),
    "skl": ("#56B4E9", "solid"),
    "srkl": ("#56B4E9", "dash"),
    "todi": ("#000000", "dashdot"),
}
LOSS_COLORS: dict[str, str] = {name: style[0] for name, style in LOSS_STYLES.items()}
_FALLBACK = ["#0072B2", "#D55E00", "#009E73", "#E69F00", "#CC79A7", "#56B4E9", "#000000"]
_FALLBACK_DASHES = ["dot", "dashdot", "longdashdot"]
TARGET_COLOR = "#444444"
HEAD_COLOR = "rgba(255, 200, 0, 0.18)"

#: Human-readable names of recorded quantities, used for axis labels.
LABELS: dict[str, str] = {
    "fkl": "KL(p||q) (forward)",
    "rkl": "KL(q||p) (reverse)",
    "akl": "AKL",
    "fkl_rkl": "FKL+RKL",
    "jsd": "JSD",
    "tvd": "TVD",
    "skl": "skew KL",
    "srkl": "skew reverse KL",
    "ab": "AB divergence",
    "taid": "TAID",
    "akl_r": "AKL (weights swapped)",
    "loss": "training loss",
    "g_head": "head gap g_head",
    "g_tail": "tail gap g_tail",
    "w": "AKL weight w on FKL",
}


def _loss_base(name: str) -> str:
    return name.split(" ")[0].split("(")[0].lower()


def loss_color(name: str, index: int = 0) -> str:
    """The colour of a loss (by name; unknown names get a fallback colour by `index`)."""
    return LOSS_COLORS.get(_loss_base(name), _FALLBACK[index % len(_FALLBACK)])


def loss_dash(name: str, index: int = 0) -> str:
    """The plotly dash style of a loss (by name; unknown names get a fallback by `index`)."""
    style = LOSS_STYLES.get(_loss_base(name))
    return style[1] if style else _FALLBACK_DASHES[index % len(_FALLBACK_DASHES)]


def loss_line(name: str, index: int = 0, **extra: Any) -> dict:
    """A plotly line dict in the loss's colour and dash (plus `extra`, e.g. width=3)."""
    return {"color": loss_color(name, index), "dash": loss_dash(name, index), **extra}


def _arr(values: Any, label: str) -> np.ndarray:
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{label} must be 1-d, got shape {arr.shape}")
    return arr


def _history(h: Any, label: str) -> Mapping[str, Any]:
    hist = getattr(h, "history", h)
    if not isinstance(hist, Mapping) or "step" not in hist:
        raise ValueError(f"history {label!r} must be a mapping with a 'step' entry")
    return hist


def _head_runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """Index runs [(start, end_inclusive)] where mask is True."""
    runs: list[tuple[int, int]] = []
    start = None
    for i, flag in enumerate(mask):
        if flag and start is None:
            start = i
        elif not flag and start is not None:
            runs.append((start, i - 1))
            start = None
    if start is not None:
        runs.append((start, len(mask) - 1))
    return runs


def _add_head(fig: go.Figure, x: np.ndarray, head_mask: Any, *, row: int | None = None,
              col: int | None = None, legend: bool = True) -> None:
    """Shade the teacher's head bins and add a legend entry for them."""
    mask = np.asarray(head_mask.cpu() if hasattr(head_mask, "cpu") else head_mask, dtype=bool)
    if mask.shape != x.shape:
        raise ValueError(f"head_mask has shape {mask.shape} but x has {x.shape}")
    half = np.diff(x).min() / 2 if x.size > 1 else 0.5
    kw = {} if row is None else {"row": row, "col": col}
    for a, b in _head_runs(mask):
        fig.add_vrect(x0=x[a] - half, x1=x[b] + half, fillcolor=HEAD_COLOR, line_width=0,
                      layer="below", **kw)
    if legend:
        fig.add_trace(
            go.Scatter(x=[None], y=[None], mode="markers", name="teacher head (shaded)",
                       marker={"symbol": "square", "size": 12, "color": "rgba(255,200,0,0.5)"},
                       legendgroup="head", showlegend=True),
            **kw,
        )


def distribution_figure(
    x: Any,
    target: Any,
    students: Mapping[str, Any] | None = None,
    *,
    head_mask: Any = None,
    log_y: bool = False,
    title: str = "Teacher p and student q",
    xlabel: str = "bin position x",
    ylabel: str = "probability",
    target_label: str = "teacher p",
) -> go.Figure:
    """One panel: the target p [V] as bars and each student q [V] as a line.

    head_mask [V] (bool) shades the teacher's head bins, marking the head/tail boundary.
    log_y=True puts the y axis on a log scale (to see the tail).
    """
    xs = _arr(x, "x")
    p = _arr(target, "target")
    if p.shape != xs.shape:
        raise ValueError(f"target has {p.size} bins but x has {xs.size}")
    fig = go.Figure()
    fig.add_trace(go.Bar(x=xs, y=p, name=target_label, marker_color=TARGET_COLOR, opacity=0.45))
    for i, (label, q) in enumerate((students or {}).items()):
        qa = _arr(q, f"student {label!r}")
        if qa.shape != xs.shape:
            raise ValueError(f"student {label!r} has {qa.size} bins but x has {xs.size}")
        fig.add_trace(go.Scatter(x=xs, y=qa, mode="lines+markers", name=label,
                                 line=loss_line(label, i), marker={"size": 4}))
    if head_mask is not None:
        _add_head(fig, xs, head_mask)
    fig.update_layout(title={"text": title}, xaxis_title=xlabel, yaxis_title=ylabel,
                      legend_title_text="distribution", bargap=0.05)
    if log_y:
        fig.update_yaxes(type="log")
    return fig


def snapshot_panels(
    x: Any,
    target: Any,
    runs: Mapping[str, Mapping[int, Any]],
    steps: Sequence[int] | None = None,
    *,
    head_mask: Any = None,
    log_y: bool = False,
    title: str = "Student q at selected steps",
    xlabel: str = "bin position x",
    ylabel: str = "probability",
    target_label: str = "teacher p",
) -> go.Figure:
    """One panel per step: the target p and, per run (e.g. per loss), its snapshot q at that step.

    runs: {label: {step: q [V]}} (e.g. {loss: TrainResult.snapshots}); steps defaults to every
    step present in all runs. Legends are shared across panels (one entry per run).
    """
    xs = _arr(x, "x")
    p = _arr(target, "target")
    if p.shape != xs.shape:
        raise ValueError(f"target has {p.size} bins but x has {xs.size}")
    if not runs:
        raise ValueError("runs is empty: nothing to plot")
    if steps is None:
        common = set.intersection(*(set(map(int, r)) for r in runs.values()))
        steps = sorted(common)
    steps = [int(s) for s in steps]
    if not steps:
        raise ValueError("no step is present in every run; pass steps explicitly")
    for label, snaps in runs.items():
        missing = [s for s in steps if s not in snaps]
        if missing:
            raise ValueError(f"run {label!r} has no snapshot at steps {missing}")
    fig = make_subplots(rows=1, cols=len(steps), shared_yaxes=True,
                        subplot_titles=[f"step {s}" for s in steps], horizontal_spacing=0.03)
    for c, step in enumerate(steps, start=1):
        first = c == 1
        fig.add_trace(go.Scatter(x=xs, y=p, mode="lines", name=target_label,
                                 line={"color": TARGET_COLOR, "width": 3, "dash": "dot"},
                                 legendgroup="target", showlegend=first), row=1, col=c)
        for i, (label, snaps) in enumerate(runs.items()):
            q = _arr(snaps[step], f"snapshot {label!r} step {step}")
            if q.shape != xs.shape:
                raise ValueError(f"snapshot {label!r} step {step} has {q.size} bins, x {xs.size}")
            fig.add_trace(go.Scatter(x=xs, y=q, mode="lines", name=label,
                                     line=loss_line(label, i), legendgroup=label,
                                     showlegend=first), row=1, col=c)
        if head_mask is not None:
            _add_head(fig, xs, head_mask, row=1, col=c, legend=first)
        fig.update_xaxes(title_text=xlabel, row=1, col=c)
    fig.update_yaxes(title_text=ylabel, row=1, col=1)
    if log_y:
        fig.update_yaxes(type="log")
    fig.update_layout(title={"text": title}, legend_title_text="distribution",
                      height=380)  # width: the container's (a fixed width overflows pages)
    return fig


def _curve(h: Any, label: str, key: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values of `key`) of one run's history; ValueError naming the run otherwise."""
    hist = _history(h, label)
    if key not in hist:
        raise ValueError(f"history {label!r} has no {key!r}; it has {sorted(hist)}")
    steps = _arr(hist["step"], "step")
    values = _arr(hist[key], key)
    if steps.shape != values.shape:
        raise ValueError(f"history {label!r}: 'step' and {key!r} differ in length")
    return steps, values


def _add_curves(fig: go.Figure, histories: Mapping[str, Any], key: str, *, row: int | None,
                col: int | None, show_legend: bool, floor: float | None = None) -> None:
    kw = {} if row is None else {"row": row, "col": col}
    for i, (label, h) in enumerate(histories.items()):
        steps, values = _curve(h, label, key)
        if floor is not None:
            values = np.maximum(values, floor)
        fig.add_trace(go.Scatter(x=steps, y=values, mode="lines", name=label,
                                 line=loss_line(label, i), legendgroup=label,
                                 showlegend=show_legend), **kw)


def curves_figure(
    histories: Mapping[str, Any],
    key: str,
    *,
    log_y: bool = False,
    title: str | None = None,
    ylabel: str | None = None,
    xlabel: str = "step",
    floor: float | None = None,
) -> go.Figure:
    """One line per run of history[key] over history['step'] (histories: {label: history}).

    floor: values below it are drawn at it (a plotting floor for log axes, where 0 vanishes).
    """
    if not histories:
        raise ValueError("histories is empty: nothing to plot")
    fig = go.Figure()
    _add_curves(fig, histories, key, row=None, col=None, show_legend=True, floor=floor)
    name = LABELS.get(key, key)
    fig.update_layout(title={"text": title or f"{name} over training steps"},
                      xaxis_title=xlabel, yaxis_title=ylabel or name, legend_title_text="loss")
    if log_y:
        fig.update_yaxes(type="log")
    return fig


def divergence_curves(
    histories: Mapping[str, Any], key: str = "fkl", *, log_y: bool = True,
    title: str | None = None, floor: float | None = None,
) -> go.Figure:
    """A recorded divergence (default KL(p||q)) over steps, one line per loss; log y by default.
    floor: a plotting floor (e.g. 1e-12: a divergence of 0 stays visible on the log axis)."""
    name = LABELS.get(key, key)
    return curves_figure(histories, key, log_y=log_y, ylabel=name, floor=floor,
                         title=title or f"{name} between teacher and student over steps")


def gap_curves(
    histories: Mapping[str, Any],
    *,
    keys: Sequence[str] = ("g_head", "g_tail"),
    log_y: bool = False,
    title: str = "Head and tail gaps over training steps",
) -> go.Figure:
    """Side-by-side panels (one per key, default g_head and g_tail), one line per loss."""
    if not histories:
        raise ValueError("histories is empty: nothing to plot")
    keys = list(keys)
    fig = make_subplots(rows=1, cols=len(keys), subplot_titles=[LABELS.get(k, k) for k in keys],
                        horizontal_spacing=0.08)
    for c, key in enumerate(keys, start=1):
        _add_curves(fig, histories, key, row=1, col=c, show_legend=c == 1)
        fig.update_xaxes(title_text="step", row=1, col=c)
        fig.update_yaxes(title_text=LABELS.get(key, key), row=1, col=c)
    if log_y:
        fig.update_yaxes(type="log")
    fig.update_layout(title={"text": title}, legend_title_text="loss", height=380)
    return fig


def continuous_fit_figure(
    x: Any,
    target_density: Any,
    fits: Mapping[str, Any],
    *,
    title: str = "One Gaussian fitted to a Gaussian mixture",
    xlabel: str = "x",
    ylabel: str = "density",
    target_label: str = "target p (mixture)",
) -> go.Figure:
    """The continuous target density [G] (filled) and each fitted density [G] as a line.

    fits: {label: density [G]} or {label: object with a `.fitted` array} (e.g. GaussianFit).
    """
    xs = _arr(x, "x")
    p = _arr(target_density, "target_density")
    if p.shape != xs.shape:
        raise ValueError(f"target_density has {p.size} points but x has {xs.size}")
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=xs, y=p, mode="lines", name=target_label, fill="tozeroy",
                             line={"color": TARGET_COLOR}))
    for i, (label, fit) in enumerate(fits.items()):
        dens = _arr(getattr(fit, "fitted", fit), f"fit {label!r}")
        if dens.shape != xs.shape:
            raise ValueError(f"fit {label!r} has {dens.size} points but x has {xs.size}")
        fig.add_trace(go.Scatter(x=xs, y=dens, mode="lines", name=label,
                                 line=loss_line(label, i, width=3)))
    fig.update_layout(title={"text": title}, xaxis_title=xlabel, yaxis_title=ylabel,
                      legend_title_text="distribution")
    return fig


def topk_label(token: Any) -> str:
    """A token string for bar labels: every space as '␣', newline '↵', tab '→', empty '∅'
    (so " the" and "the" differ, and whitespace-only tokens are visible)."""
    text = str(token).replace(" ", "␣").replace("\n", "↵").replace("\t", "→").replace("\r", "⏎")
    return text or "∅"


def _unique_labels(rows: Sequence[Sequence[Any]]) -> list[str]:
    """Bar labels of a top-k list, made unique by occurrence (two ids can decode alike)."""
    return numbered(topk_label(tok) for tok, _ in rows)


def topk_figure(
    teacher_topk: Sequence[Sequence[Any]],
    student_topk: Sequence[Sequence[Any]] | None = None,
    *,
    head_size: int | None = None,
    title: str = "Teacher p and student q: top-k next tokens",
) -> go.Figure:
    """Side-by-side horizontal bars of the teacher's and the student's top-k next tokens.

    teacher_topk / student_topk: [(token_string, probability), ...], most probable first (as in
    akl_core.lab.distill.ProbeRecord). Both panels list the union of the two top-k lists in one
    order (the teacher's tokens by teacher rank, then the student's other tokens by student
    rank) and share the x range; a token outside a model's top-k has no bar there (its
    probability is unknown, at most that model's k-th). Token labels show whitespace (see
    topk_label). head_size: the teacher's head size |H| at this position; the teacher's first
    |H| tokens are drawn as head (gold) in both panels and a dashed line marks the head/tail
    boundary (when 0 < |H| < k).
    """
    panels = [("teacher p", teacher_topk)] + ([("student q", student_topk)]
                                              if student_topk is not None else [])
    for label, rows in panels:
        if not rows:
            raise ValueError(f"{label}: top-k list is empty")
    if head_size is not None and head_size < 0:
        raise ValueError(f"head_size must be >= 0, got {head_size}")
    probs_by_panel = [dict(zip(_unique_labels(rows), (float(p) for _, p in rows)))
                      for _, rows in panels]
    order: list[str] = []
    for probs in probs_by_panel:
        order += [t for t in probs if t not in order]
    head_tokens = set(list(probs_by_panel[0])[:head_size]) if head_size is not None else set()
    top = max(max(p.values()) for p in probs_by_panel)
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[p[0] for p in panels],
                        horizontal_spacing=0.06, shared_yaxes=True)
    gold, grey = "rgba(230, 170, 0, 0.9)", "rgba(120, 120, 120, 0.8)"
    for c, ((label, _), probs) in enumerate(zip(panels, probs_by_panel), start=1):
        values = [probs.get(t) for t in order]
        colors = [gold if t in head_tokens else grey for t in order]
        ranks = {t: i + 1 for i, t in enumerate(probs)}
        notes = [f"rank {ranks[t]} in {label}" if t in ranks else f"not in {label}'s top-k"
                 for t in order]
        fig.add_trace(go.Bar(x=values, y=order, orientation="h", marker_color=colors,
                             name=label, showlegend=False, customdata=notes,
                             hovertemplate="%{y}: %{x:.4f} (%{customdata})<extra>" + label
                             + "</extra>"),
                      row=1, col=c)
        fig.update_xaxes(title_text="probability", range=[0.0, min(1.0, top * 1.08) or 1.0],
                         row=1, col=c)
    fig.update_yaxes(autorange="reversed", categoryorder="array", categoryarray=order)
    if head_size is not None and 0 < head_size < len(teacher_topk):
        fig.add_hline(y=head_size - 0.5, line_dash="dash", line_color="black", row=1, col=1,
                      annotation_text=f"head/tail boundary (|H| = {head_size})",
                      annotation_position="bottom right")
    for name, color in (("teacher head", gold), ("tail", grey)):
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=name,
                                 marker={"symbol": "square", "size": 12, "color": color}),
                      row=1, col=1)
    fig.update_layout(title={"text": title}, legend_title_text="token in", barmode="overlay",
                      height=140 + 30 * len(order))
    return fig


# ----------------------------------------------------------------------------------------------
# Short distillation (level 3): evaluation scores and generations side by side
# ----------------------------------------------------------------------------------------------

EVAL_LABELS: dict[str, str] = {
    "rougeL_teacher": "Rouge-L vs teacher responses",
    "rougeL_gold": "Rouge-L vs gold references",
    "distinct_1": "distinct-1",
    "distinct_2": "distinct-2",
    "mean_words": "mean length (words)",
}


def eval_figure(
    scores: Mapping[str, Mapping[str, Any]],
    *,
    teacher: Mapping[str, Any] | None = None,
    metrics: Sequence[str] = ("rougeL_teacher", "distinct_2"),
    title: str = "Evaluation by generation (greedy) on held-out prompts",
) -> go.Figure:
    """One panel per metric, one bar per run (scores: {label: akl_core.lab.evaluate scores}); the
    teacher's own value, when given and defined, is a dashed line for scale."""
    if not scores:
        raise ValueError("scores is empty: nothing to plot")
    metrics = [m for m in metrics if any(s.get(m) is not None for s in scores.values())]
    if not metrics:
        raise ValueError("none of the requested metrics has a value")
    fig = make_subplots(rows=1, cols=len(metrics),
                        subplot_titles=[EVAL_LABELS.get(m, m) for m in metrics],
                        horizontal_spacing=0.1)
    labels = list(scores)
    for c, m in enumerate(metrics, start=1):
        vals = [scores[k].get(m) for k in labels]
        fig.add_trace(go.Bar(x=labels, y=[np.nan if v is None else v for v in vals],
                             marker_color=[loss_color(k, i) for i, k in enumerate(labels)],
                             text=[("-" if v is None else f"{v:.3g}") for v in vals],
                             textposition="outside", showlegend=False,
                             name=EVAL_LABELS.get(m, m)), row=1, col=c)
        ref = None if teacher is None else teacher.get(m)
        if ref is not None and not (m == "rougeL_teacher"):
            fig.add_hline(y=float(ref), line_dash="dash", line_color=TARGET_COLOR, row=1, col=c,
                          annotation_text=f"teacher {float(ref):.3g}",
                          annotation_position="top left")
        fig.update_xaxes(title_text="student trained with", row=1, col=c)
        fig.update_yaxes(title_text=EVAL_LABELS.get(m, m), row=1, col=c)
    fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", name="teacher (for scale)",
                             line={"dash": "dash", "color": TARGET_COLOR}), row=1, col=1)
    fig.update_layout(title={"text": title}, legend_title_text="reference", height=420)
    return fig


def generations_table(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str],
    *,
    title: str = "Generations side by side",
    max_chars: int = 400,
) -> go.Figure:
    """A table figure: one row per prompt, one column per key of `columns` (e.g. 'instruction',
    'teacher', 'fkl', 'akl'); long texts are cut to `max_chars`."""
    if not rows:
        raise ValueError("rows is empty: nothing to show")
    if not columns:
        raise ValueError("columns is empty")

    def cell(v: Any) -> str:
        text = "" if v is None else str(v)
        return text if len(text) <= max_chars else text[: max_chars - 1] + "…"

    values = [[cell(r.get(c)) for r in rows] for c in columns]
    fig = go.Figure(go.Table(
        header={"values": [f"<b>{c}</b>" for c in columns], "align": "left",
                "fill_color": "#e8e8e8"},
        cells={"values": values, "align": "left", "height": 24},
    ))
    fig.update_layout(title={"text": title}, height=min(1400, 160 + 150 * len(rows)))
    return fig


# ----------------------------------------------------------------------------------------------
# Real LLM distributions (notebook 02): per-position statistics, tokens coloured by a value
# ----------------------------------------------------------------------------------------------

LABELS.setdefault("head_size", "teacher head size |H|")
LABELS.setdefault("head_mass", "teacher head mass")
LABELS.setdefault("teacher_entropy", "teacher entropy H(p) (nats)")
LABELS.setdefault("student_entropy", "student entropy H(q) (nats)")


def visible_token(token: str) -> str:
    """A token string made printable for figures: newlines as ↵, tabs as →, empty as ∅."""
    text = str(token).replace("\n", "↵").replace("\t", "→")
    return text if text.strip() else (text.replace(" ", "·") or "∅")


def position_stats_figure(
    stats: Mapping[str, Any],
    *,
    keys: Sequence[str] = ("head_size", "head_mass", "teacher_entropy"),
    tokens: Sequence[str] | None = None,
    log_keys: Sequence[str] = ("head_size",),
    title: str = "Teacher next-token distributions along a response",
) -> go.Figure:
    """Stacked panels sharing the x axis (token position): one line per key of `stats`.

    stats: {key: values [T]} (e.g. akl_core.head_tail(...).to_dict() for one sequence);
    tokens [T]: the token predicted at each position, shown on hover. Keys in `log_keys` get a
    log y axis (head sizes span 1 to thousands).
    """
    keys = list(keys)
    if not keys:
        raise ValueError("keys is empty: nothing to plot")
    arrays = {}
    for key in keys:
        if key not in stats:
            raise ValueError(f"stats has no {key!r}; it has {sorted(stats)}")
        arrays[key] = _arr(stats[key], key).astype(float).reshape(-1)
    n = {a.size for a in arrays.values()}
    if len(n) != 1:
        raise ValueError(f"stats arrays differ in length: { {k: a.size for k, a in arrays.items()} }")
    length = n.pop()
    if tokens is not None and len(tokens) != length:
        raise ValueError(f"{len(tokens)} tokens for {length} positions")
    hover = [visible_token(t) for t in tokens] if tokens is not None else None
    fig = make_subplots(rows=len(keys), cols=1, shared_xaxes=True, vertical_spacing=0.04,
                        subplot_titles=[LABELS.get(k, k) for k in keys])
    x = np.arange(length)
    for r, key in enumerate(keys, start=1):
        fig.add_trace(go.Scatter(
            x=x, y=arrays[key], mode="lines+markers", name=LABELS.get(key, key),
            marker={"size": 4}, text=hover,
            hovertemplate=("token %{text}<br>" if hover else "") + "position %{x}: %{y:.4g}"
            + "<extra></extra>",
        ), row=r, col=1)
        fig.update_yaxes(title_text=key, row=r, col=1,
                         type="log" if key in log_keys else None)
    fig.update_xaxes(title_text="position in the response (token index)", row=len(keys), col=1)
    fig.update_layout(title={"text": title}, legend_title_text="quantity",
                      height=140 + 190 * len(keys))
    return fig


def head_size_histogram(
    head_sizes: Any,
    *,
    title: str = "How many tokens make up the teacher's head?",
    max_bins: int = 40,
) -> go.Figure:
    """Histogram of head sizes |H| over positions, on log-spaced bins (|H| >= 1)."""
    sizes = _arr(head_sizes, "head_sizes").astype(float).reshape(-1)
    if sizes.size == 0:
        raise ValueError("head_sizes is empty")
    if (sizes < 1).any():
        raise ValueError("head sizes must be >= 1 (the top-1 token is always in the head)")
    top = max(2.0, float(sizes.max()) + 1)
    edges = np.unique(np.floor(np.geomspace(1, top, num=max_bins)).astype(int))
    edges = np.append(edges, int(top) + 1) if edges[-1] <= sizes.max() else edges
    counts, _ = np.histogram(sizes, bins=edges)
    labels = [str(a) if b - a == 1 else f"{a}-{b - 1}" for a, b in zip(edges[:-1], edges[1:])]
    keep = counts > 0
    fig = go.Figure(go.Bar(x=np.array(labels)[keep], y=counts[keep], name="positions",
                           marker_color=TARGET_COLOR))
    fig.update_layout(title={"text": title}, xaxis_title="head size |H| (tokens)",
                      yaxis_title="number of positions", legend_title_text="count",
                      showlegend=True)
    return fig


def token_values_figure(
    tokens: Sequence[str],
    values: Any,
    *,
    per_row: int = 12,
    value_label: str = "AKL weight w on FKL",
    zmin: float | None = 0.0,
    zmax: float | None = 1.0,
    colorscale: str = "RdBu_r",
    title: str = "Tokens coloured by the AKL weight",
) -> go.Figure:
    """Text laid out as a grid of tokens (reading order), each cell coloured by its value.

    tokens [T] and values [T] (e.g. head_tail(...).w for the response tokens). With the default
    scale red = high (head error dominates, AKL leans on FKL), blue = low (tail error, RKL).
    """
    vals = _arr(values, "values").astype(float).reshape(-1)
    if len(tokens) != vals.size:
        raise ValueError(f"{len(tokens)} tokens but {vals.size} values")
    if vals.size == 0:
        raise ValueError("no tokens to show")
    if per_row < 1:
        raise ValueError(f"per_row must be >= 1, got {per_row}")
    rows = -(-vals.size // per_row)
    z = np.full((rows, per_row), np.nan)
    text = np.full((rows, per_row), "", dtype=object)
    for i, (tok, v) in enumerate(zip(tokens, vals)):
        z[i // per_row, i % per_row] = v
        text[i // per_row, i % per_row] = visible_token(tok)
    fig = go.Figure(go.Heatmap(
        z=z, text=text, texttemplate="%{text}", textfont={"size": 12},
        colorscale=colorscale, zmin=zmin, zmax=zmax, xgap=2, ygap=2,
        colorbar={"title": {"text": value_label}}, name=value_label, showscale=True,
        hovertemplate="%{text}: %{z:.3f}<extra></extra>",
    ))
    fig.update_xaxes(showticklabels=False, title_text="tokens in reading order (left to right)")
    fig.update_yaxes(autorange="reversed", showticklabels=False, title_text="line")
    fig.update_layout(title={"text": title}, height=140 + 34 * rows,
                      width=max(600, 80 * per_row), legend_title_text=value_label)
    return fig


# ----------------------------------------------------------------------------------------------
# Seeds with spread, step-by-step differences, gradients by teacher rank, sweeps
# ----------------------------------------------------------------------------------------------

LABELS.setdefault("l1_head", "head: sum |p - q|")
LABELS.setdefault("l1_near", "near tail: sum |p - q|")
LABELS.setdefault("l1_far", "far tail: sum |p - q|")
LABELS.setdefault("logabs_near", "near tail: mean |log q - log p|")
LABELS.setdefault("logabs_far", "far tail: mean |log q - log p|")


def _rgba(color: str, alpha: float) -> str:
    c = color.lstrip("#")
    r, g, b = (int(c[i : i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r}, {g}, {b}, {alpha})"


def seed_band_curves(
    runs: Mapping[str, Sequence[Any]],
    keys: Sequence[str],
    *,
    title: str = "Mean over seeds (line) and min-max over seeds (band)",
    log_y: bool = False,
    mark_step: int | None = None,
) -> go.Figure:
    """One panel per key; per loss a line (mean over seeds) and a band (min to max over seeds).

    runs: {label: [history per seed]} (TrainResult or mapping with 'step'); all histories of a
    label must share their steps. mark_step draws a dotted vertical line (e.g. the early step).
    """
    if not runs:
        raise ValueError("runs is empty: nothing to plot")
    keys = list(keys)
    if not keys:
        raise ValueError("keys is empty")
    fig = make_subplots(rows=1, cols=len(keys), subplot_titles=[LABELS.get(k, k) for k in keys],
                        horizontal_spacing=0.06)
    for c, key in enumerate(keys, start=1):
        for i, (label, seeds) in enumerate(runs.items()):
            if not seeds:
                raise ValueError(f"run {label!r} has no seeds")
            hists = [_history(h, label) for h in seeds]
            steps = _arr(hists[0]["step"], "step")
            for h in hists:
                if key not in h:
                    raise ValueError(f"history {label!r} has no {key!r}; it has {sorted(h)}")
                if not np.array_equal(_arr(h["step"], "step"), steps):
                    raise ValueError(f"the seeds of {label!r} were recorded at different steps")
            vals = np.stack([_arr(h[key], key) for h in hists])
            color = loss_color(label, i)
            if vals.shape[0] > 1:
                fig.add_trace(go.Scatter(
                    x=np.concatenate([steps, steps[::-1]]),
                    y=np.concatenate([vals.max(0), vals.min(0)[::-1]]),
                    fill="toself", fillcolor=_rgba(color, 0.18), line={"width": 0},
                    hoverinfo="skip", name=f"{label} (seed range)", legendgroup=label,
                    showlegend=False), row=1, col=c)
            fig.add_trace(go.Scatter(x=steps, y=vals.mean(0), mode="lines", name=label,
                                     line={"color": color}, legendgroup=label,
                                     showlegend=c == 1), row=1, col=c)
        if mark_step is not None:
            fig.add_vline(x=mark_step, line_dash="dot", line_color=TARGET_COLOR, row=1, col=c)
        fig.update_xaxes(title_text="step", row=1, col=c)
        if log_y:
            fig.update_yaxes(type="log", row=1, col=c)
    fig.update_layout(title={"text": title}, legend_title_text="loss", height=380)
    return fig


def difference_figure(
    steps: Any,
    difference: Any,
    *,
    title: str = "Difference between two runs over steps",
    ylabel: str = "first - second",
    below_label: str = "first below second",
    above_label: str = "first not below",
) -> go.Figure:
    """A signed difference over steps with a zero line; steps where it is >= 0 are marked."""
    x = _arr(steps, "steps")
    y = _arr(difference, "difference")
    if x.shape != y.shape:
        raise ValueError(f"{x.size} steps but {y.size} differences")
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=x, y=y, mode="lines", name="difference",
                             line={"color": TARGET_COLOR}))
    neg = y < 0
    fig.add_trace(go.Scatter(x=x[neg], y=y[neg], mode="markers", name=below_label,
                             marker={"color": LOSS_COLORS["fkl"], "size": 6}))
    fig.add_trace(go.Scatter(x=x[~neg], y=y[~neg], mode="markers", name=above_label,
                             marker={"color": LOSS_COLORS["rkl"], "size": 6}))
    fig.add_hline(y=0.0, line_dash="dash", line_color="black")
    fig.update_layout(title={"text": title}, xaxis_title="step", yaxis_title=ylabel,
                      legend_title_text="sign")
    return fig


def _rank_sample(n: int, dense: int = 100, sparse: int = 300) -> np.ndarray:
    """Indices 0..n-1: all of the first `dense`, then about `sparse` log-spaced beyond."""
    head = np.arange(min(n, dense))
    if n <= dense:
        return head
    tail = np.unique(np.geomspace(dense, n - 1, num=sparse).astype(int))
    return np.unique(np.concatenate([head, tail]))


def gradient_rank_figure(
    by_rank: Mapping[str, Any],
    losses: Sequence[str],
    *,
    title: str = "Push on each logit, by teacher rank",
    max_points: int | None = 400,
) -> go.Figure:
    """One panel per loss: -d loss / d z_j (> 0: token j is pushed UP) against teacher rank
    (log axis), red where the student over-predicts the token (q > p), blue where it
    under-predicts. by_rank: akl_core.lab.analysis.gradient_by_rank(...). Long vocabularies are
    thinned to the first 100 ranks plus ~300 log-spaced ones (max_points=None keeps all)."""
    for key in ("rank", "p", "q", *losses):
        if key not in by_rank:
            raise ValueError(f"by_rank has no {key!r}; it has {sorted(by_rank)}")
    rank = _arr(by_rank["rank"], "rank")
    p, q = _arr(by_rank["p"], "p"), _arr(by_rank["q"], "q")
    idx = (np.arange(rank.size) if max_points is None or rank.size <= max_points
           else _rank_sample(rank.size))
    over = q[idx] > p[idx]
    fig = make_subplots(rows=len(losses), cols=1, shared_xaxes=True, vertical_spacing=0.06,
                        subplot_titles=[f"{LABELS.get(n, n)}: push -dL/dz" for n in losses])
    for r, name in enumerate(losses, start=1):
        push = -_arr(by_rank[name], name)[idx]
        for mask, label, color in ((over, "q > p (student over-predicts)", "#d62728"),
                                   (~over, "q < p (student under-predicts)", "#1f77b4")):
            fig.add_trace(go.Scatter(
                x=rank[idx][mask], y=push[mask], mode="markers", name=label,
                marker={"color": color, "size": 5}, legendgroup=label, showlegend=r == 1,
                customdata=np.stack([p[idx][mask], q[idx][mask]], axis=-1),
                hovertemplate="rank %{x}<br>push %{y:.3g}<br>p %{customdata[0]:.3g}, "
                              "q %{customdata[1]:.3g}<extra></extra>"), row=r, col=1)
        fig.add_hline(y=0.0, line_dash="dash", line_color="black", row=r, col=1)
        fig.update_yaxes(title_text="push (up > 0)", row=r, col=1)
    fig.update_xaxes(type="log")  # every panel: shared x axes must share their type too
    fig.update_xaxes(title_text="teacher rank of the token (1 = most probable)",
                     row=len(losses), col=1)
    fig.update_layout(title={"text": title}, legend_title_text="token", height=200 + 230 *
                      len(losses))
    return fig


def sweep_figure(
    rows: Sequence[Mapping[str, Any]],
    x: str,
    keys: Sequence[str],
    *,
    title: str = "Sweep",
    labels: Mapping[str, str] | None = None,
    log_keys: Sequence[str] = (),
) -> go.Figure:
    """One panel per key of `rows` (a list of dicts, e.g. analysis.mu_sweep) against `x`."""
    if not rows:
        raise ValueError("rows is empty: nothing to plot")
    names = {**LABELS, **(labels or {})}
    xs = _arr([r[x] for r in rows], x)
    fig = make_subplots(rows=1, cols=len(keys), subplot_titles=[names.get(k, k) for k in keys],
                        horizontal_spacing=0.08)
    for c, key in enumerate(keys, start=1):
        ys = _arr([r[key] for r in rows], key)
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", name=names.get(key, key),
                                 line={"color": _FALLBACK[(c - 1) % len(_FALLBACK)]}),
                      row=1, col=c)
        fig.update_xaxes(title_text=names.get(x, x), row=1, col=c)
        if key in log_keys:
            fig.update_yaxes(type="log", row=1, col=c)
    fig.update_layout(title={"text": title}, legend_title_text="quantity", height=360)
    return fig


def seed_scores_figure(
    tables: Mapping[str, Mapping[str, Sequence[float | None]]],
    *,
    reference: Mapping[str, Mapping[str, float | None]] | None = None,
    title: str = "Scores per loss: mean over seeds (bar), each seed (dot), ±1 std (whisker)",
) -> go.Figure:
    """One panel per metric: tables = {metric: {loss: [score per seed]}}; reference =
    {label: {metric: value}} drawn as dashed lines (e.g. the teacher, the untrained student)."""
    if not tables:
        raise ValueError("tables is empty: nothing to plot")
    metrics = list(tables)
    fig = make_subplots(rows=1, cols=len(metrics),
                        subplot_titles=[EVAL_LABELS.get(m, m) for m in metrics],
                        horizontal_spacing=0.08)
    dashes = ["dash", "dot", "dashdot"]
    for c, metric in enumerate(metrics, start=1):
        table = tables[metric]
        labels = list(table)
        vals = [[float(v) for v in table[k] if v is not None] for k in labels]
        means = [float(np.mean(v)) if v else np.nan for v in vals]
        stds = [float(np.std(v)) if v else np.nan for v in vals]
        fig.add_trace(go.Bar(x=labels, y=means, error_y={"type": "data", "array": stds},
                             marker_color=[loss_color(k, i) for i, k in enumerate(labels)],
                             opacity=0.75, showlegend=False, name=metric,
                             text=[f"{m:.3g}" for m in means], textposition="outside"),
                      row=1, col=c)
        px = [k for k, v in zip(labels, vals) for _ in v]
        py = [x for v in vals for x in v]
        fig.add_trace(go.Scatter(x=px, y=py, mode="markers", name="one seed",
                                 marker={"color": "black", "size": 6, "symbol": "circle-open"},
                                 showlegend=c == 1, legendgroup="seed"), row=1, col=c)
        for j, (ref_label, ref) in enumerate((reference or {}).items()):
            v = ref.get(metric)
            if v is not None:
                fig.add_hline(y=float(v), line_dash=dashes[j % len(dashes)],
                              line_color=TARGET_COLOR, row=1, col=c,
                              annotation_text=f"{ref_label} {float(v):.3g}",
                              annotation_position="top left")
        fig.update_yaxes(title_text=EVAL_LABELS.get(metric, metric), row=1, col=c)
    fig.update_layout(title={"text": title}, legend_title_text="points", height=440)
    return fig


# ----------------------------------------------------------------------------------------------
# Live runs and races (the dashboard's Live distillation page)
# ----------------------------------------------------------------------------------------------

#: Labels of a race's held-out metrics (akl_core.lab.race.RaceStep) and of a run's own values.
STEP_LABELS: dict[str, str] = {
    "kl_pq": "KL(p||q) on the held-out batch",
    "kl_qp": "KL(q||p) on the held-out batch",
    "g_head": "head gap g_head",
    "g_tail": "tail gap g_tail",
    "w": "mean AKL weight w",
    "head_acc": "head-token accuracy",
    "own_loss": "own loss, held-out batch",
    "train_loss": "own loss, its training batch",
    "loss": "training loss (its batch)",
}


def step_ticks(fig: go.Figure, last_step: int) -> None:
    """Integer step ticks on every x axis (about 10 ticks at most), from step 1."""
    dtick = max(1, math.ceil(max(int(last_step), 1) / 10))
    fig.update_xaxes(tickmode="linear", tick0=1, dtick=dtick, tickformat="d",
                     range=[0.5, max(int(last_step), 1) + 0.5])


def step_panels(
    histories: Mapping[str, Any],
    keys: Sequence[str],
    *,
    title: str,
    cols: int = 3,
    last_step: int | None = None,
    y_ranges: Mapping[str, tuple[float, float]] | None = None,
    height_per_row: int = 260,
) -> go.Figure:
    """One panel per key (a grid of `cols` columns), one line with markers per run in the
    run's loss colour and dash (so a run at step 1 shows a point), integer step ticks up to
    `last_step` (default: the last recorded step). histories: {label: {'step': [...], key:
    [...]}}, e.g. akl_core.lab.race.RaceResult.curves(); labels starting with a loss name
    get that loss's style. y_ranges: fixed y ranges per key (e.g. w in [0, 1])."""
    if not histories:
        raise ValueError("histories is empty: nothing to plot")
    keys = list(keys)
    if not keys:
        raise ValueError("keys is empty: nothing to plot")
    cols = max(1, min(int(cols), len(keys)))
    rows = math.ceil(len(keys) / cols)
    fig = make_subplots(rows=rows, cols=cols, horizontal_spacing=0.07,
                        vertical_spacing=0.16 if rows > 1 else 0.1,
                        subplot_titles=[STEP_LABELS.get(k, LABELS.get(k, k)) for k in keys])
    top = 1
    for i, key in enumerate(keys):
        r, c = i // cols + 1, i % cols + 1
        for j, (label, h) in enumerate(histories.items()):
            steps, values = _curve(h, label, key)
            if steps.size:
                top = max(top, int(steps.max()))
            fig.add_trace(go.Scatter(
                x=steps, y=values, mode="lines+markers", name=label, legendgroup=label,
                showlegend=i == 0, line=loss_line(label, j, width=2.5),
                marker={"size": 7, "color": loss_color(label, j)},
                hovertemplate=f"{label}<br>step %{{x}}<br>{key} = %{{y:.4g}}<extra></extra>"),
                row=r, col=c)
        if y_ranges and key in y_ranges:
            fig.update_yaxes(range=list(y_ranges[key]), row=r, col=c)
        if r == rows:
            fig.update_xaxes(title_text="step", row=r, col=c)
    step_ticks(fig, last_step if last_step is not None else top)
    fig.update_layout(title={"text": title}, legend_title_text="loss",
                      height=120 + height_per_row * rows,
                      legend={"orientation": "h", "y": 1.0 + 0.12 / rows, "x": 1.0,
                              "xanchor": "right", "yanchor": "bottom"})
    return fig


# ----------------------------------------------------------------------------------------------
# Token view (clickable tokens with full hover) and figure fonts (presentation mode)
# ----------------------------------------------------------------------------------------------

#: Default figure font size in px (axis labels, ticks, legends, hover); titles get +4. Never
#: below 14 by default; set_font_size changes it for every figure built afterwards (notebooks),
#: style_figure(fig, size) restyles one figure (the app's presentation mode).
FONT_SIZE = 14
MIN_FONT_SIZE = 14

#: Colour bar tick labels of the AKL weight: what w says about where the student is wrong.
W_TICKS: dict[float, str] = {
    0.0: "0: tail error only (all RKL)",
    0.5: "0.5: even",
    1.0: "1: head error only (all FKL)",
}
#: Colour bar titles that say what a value means (used by token_view_figure by metric name).
SCALE_TITLES: dict[str, str] = {
    "w": "w = AKL's weight on FKL: w < 0.5 leans RKL (tail error dominates), "
         "w > 0.5 leans FKL (head error dominates)",
    "g_head": "g_head = sum over the teacher's head of |p - q| (0 to 2)",
    "g_tail": "g_tail = sum over the teacher's tail of |p - q| (0 to 2)",
}
GAP_TICKS: dict[float, str] = {0.0: "0: q = p there", 1.0: "1", 2.0: "2: disjoint (max)"}

#: Fixed colour ranges per per-token metric: (zmin, zmax, colorscale, colour bar ticks). Fixed
#: ranges keep colours comparable across steps and texts (w in [0, 1]; gaps in [0, 2]).
TOKEN_SCALES: dict[str, tuple[float, float, str, Mapping[float, str] | None]] = {
    "w": (0.0, 1.0, "RdBu_r", W_TICKS),
    "g_head": (0.0, 2.0, "YlOrRd", GAP_TICKS),
    "g_tail": (0.0, 2.0, "YlOrRd", GAP_TICKS),
    "head_mass": (0.0, 1.0, "YlOrRd", None),
}

LABELS.setdefault("loss_value", "chosen loss per token")
CONTEXT_COLOR = "rgb(225, 225, 225)"


def set_font_size(size: int) -> None:
    """Set the default figure font size (px) for figures built from now on; ValueError < 8."""
    global FONT_SIZE
    if isinstance(size, bool) or not isinstance(size, (int, float)) or not 8 <= size <= 72:
        raise ValueError(f"font size must be a number of px in [8, 72], got {size!r}")
    FONT_SIZE = int(size)


def style_figure(fig: go.Figure, size: int | None = None) -> go.Figure:
    """Set every font of `fig` to `size` px (default FONT_SIZE; titles +4) in place and return
    it: layout, axis titles and ticks, legend, annotations (subplot titles), colour bars, hover
    labels, text on bars/heatmaps. Log axes get exponent tick labels (10^-3). When `size` is
    above FONT_SIZE the figure's height grows in proportion."""
    size = int(FONT_SIZE if size is None else size)
    if size < 8:
        raise ValueError(f"font size must be >= 8 px, got {size}")
    fig.update_layout(font={"size": size},
                      legend={"font": {"size": size}, "title": {"font": {"size": size}}},
                      hoverlabel={"font": {"size": size}})
    if fig.layout.title is not None and fig.layout.title.text:
        fig.update_layout(title={"font": {"size": size + 4}})

    def axis(ax: Any) -> None:
        ax.update(tickfont={"size": size}, title={"font": {"size": size}})
        if ax.type == "log":
            ax.update(exponentformat="power", showexponent="all")

    fig.for_each_xaxis(axis)
    fig.for_each_yaxis(axis)
    fig.for_each_annotation(lambda a: a.update(font={"size": size}))
    for trace in fig.data:
        marker = getattr(trace, "marker", None)
        if marker is not None and getattr(marker, "showscale", None):
            marker.colorbar.update(tickfont={"size": size}, title={"font": {"size": size}})
        if trace.type == "heatmap":
            trace.update(colorbar={"tickfont": {"size": size}, "title": {"font": {"size": size}}})
        if trace.type in ("heatmap", "bar") and getattr(trace, "texttemplate", None) \
                or getattr(trace, "text", None) is not None and trace.type in ("heatmap", "bar"):
            trace.update(textfont={"size": size})
    if fig.layout.uniformtext is not None and fig.layout.uniformtext.minsize:
        fig.update_layout(uniformtext={"minsize": size})
    if fig.layout.height and size > FONT_SIZE:
        fig.update_layout(height=int(fig.layout.height * size / FONT_SIZE))
    return fig


def _rgb(color: str) -> tuple[float, float, float]:
    if color.startswith("#"):
        c = color.lstrip("#")
        return tuple(int(c[i : i + 2], 16) for i in (0, 2, 4))  # type: ignore[return-value]
    r, g, b = (float(v) for v in color[color.index("(") + 1 : color.index(")")].split(",")[:3])
    return r, g, b


def _ink(background: str) -> str:
    r, g, b = _rgb(background)
    return "#000000" if 0.299 * r + 0.587 * g + 0.114 * b > 140 else "#ffffff"


def cell_token(token: str) -> str:
    """A token for a token cell: whitespace-only tokens made visible ('␣' per space, '↵' per
    newline, '→' per tab, '∅' if empty); other tokens as they are (newlines as '↵')."""
    text = str(token)
    if text.strip():
        return text.replace("\n", "↵").replace("\t", "→").replace("\r", "")
    return topk_label(text)


def token_view_figure(
    tokens: Sequence[str],
    values: Any,
    *,
    value_label: str = "w",
    hover: Mapping[str, Any] | None = None,
    zmin: float = 0.0,
    zmax: float = 1.0,
    colorscale: str = "RdBu_r",
    ticks: Mapping[float, str] | None = None,
    context: Sequence[str] = (),
    selected: int | None = None,
    line_chars: int = 64,
    title: str | None = None,
) -> go.Figure:
    """Tokens laid out as running text (cells as wide as the token, wrapped at `line_chars`
    characters and after newlines), each coloured by its value on a FIXED range [zmin, zmax].

    tokens [T] / values [T]: the predicted tokens and one number each (NaN: grey cell).
    hover: {name: [T] numbers} shown on hover for every position (e.g. w, g_head, g_tail,
    head_size, head_mass, entropies, the loss value). context: tokens shown first in grey
    (e.g. the text's first token, which nothing predicts). selected: a position drawn with a
    thick black border. ticks: colour bar labels {value: text} (e.g. W_TICKS).

    Trace 0 holds the T token cells in order (point i = position i), for click selection
    (st.plotly_chart(..., on_select="rerun", selection_mode="points")); trace 1 the context.
    Values are clipped to the range for colouring; hover shows the real number.
    """
    vals = _arr(values, "values").astype(float).reshape(-1)
    if len(tokens) != vals.size:
        raise ValueError(f"{len(tokens)} tokens but {vals.size} values")
    if vals.size == 0:
        raise ValueError("no tokens to show")
    if not (np.isfinite(zmin) and np.isfinite(zmax)) or zmax <= zmin:
        raise ValueError(f"need finite zmin < zmax, got [{zmin}, {zmax}]")
    if line_chars < 8:
        raise ValueError(f"line_chars must be >= 8, got {line_chars}")
    if selected is not None and not 0 <= selected < vals.size:
        raise ValueError(f"selected = {selected} is not a position in [0, {vals.size})")
    extra = {}
    for name, series in (hover or {}).items():
        arr = _arr(series, f"hover {name!r}").astype(float).reshape(-1)
        if arr.size != vals.size:
            raise ValueError(f"hover {name!r} has {arr.size} values for {vals.size} tokens")
        extra[name] = arr
    extra.setdefault(value_label, vals)
    from plotly.colors import sample_colorscale

    # layout: (row, start, width) per cell, context first
    cells = [cell_token(t) for t in context] + [cell_token(t) for t in tokens]
    raw = list(context) + list(tokens)
    row, col, place = 0, 0.0, []
    for text, original in zip(cells, raw):
        width = float(max(len(text), 1)) + 0.6
        if col > 0 and col + width > line_chars:
            row, col = row + 1, 0.0
        place.append((row, col, width))
        col += width
        if "\n" in str(original):
            row, col = row + 1, 0.0
    n_ctx = len(context)
    scaled = np.clip((np.nan_to_num(vals, nan=zmin) - zmin) / (zmax - zmin), 0.0, 1.0)
    colors = [c if np.isfinite(v) else CONTEXT_COLOR
              for c, v in zip(sample_colorscale(colorscale, list(scaled)), vals)]
    names = list(extra)
    custom = np.column_stack([np.arange(vals.size), *(extra[n] for n in names)])
    lines = "".join(f"<br>{LABELS.get(n, n) if n in ('w',) else n} = %{{customdata[{j + 1}]:.4g}}"
                    for j, n in enumerate(names))
    tok_place = place[n_ctx:]
    fig = go.Figure()
    fig.add_trace(go.Bar(
        x=[w for _, _, w in tok_place], base=[c for _, c, _ in tok_place],
        y=[r for r, _, _ in tok_place], orientation="h", name="tokens",
        text=cells[n_ctx:], textposition="inside", insidetextanchor="middle",
        textfont={"color": [_ink(c) for c in colors], "family": "monospace"},
        marker={"color": colors,
                "line": {"width": [4 if i == selected else 0 for i in range(vals.size)],
                         "color": "#000000"}},
        customdata=custom, hovertext=[repr(str(t)) for t in tokens],
        hovertemplate="position %{customdata[0]}: %{hovertext}" + lines + "<extra></extra>",
        showlegend=False,
    ))
    if n_ctx:
        fig.add_trace(go.Bar(
            x=[w for _, _, w in place[:n_ctx]], base=[c for _, c, _ in place[:n_ctx]],
            y=[r for r, _, _ in place[:n_ctx]], orientation="h", name="context (not predicted)",
            text=cells[:n_ctx], textposition="inside", insidetextanchor="middle",
            textfont={"color": "#777777", "family": "monospace"},
            marker={"color": CONTEXT_COLOR, "line": {"width": 0}},
            hovertext=[repr(str(t)) for t in context],
            hovertemplate="%{hovertext}: context (nothing predicts it)<extra></extra>",
            showlegend=True,
        ))
    tick_map = dict(ticks or {})
    colorbar = {"title": {"text": SCALE_TITLES.get(value_label, LABELS.get(value_label,
                                                                             value_label)),
                          "side": "top"},
                "orientation": "h", "x": 0.5, "xanchor": "center", "y": -0.02,
                "yanchor": "top", "len": 0.9, "thickness": 14}
    if tick_map:
        nudge = 0.01 * (zmax - zmin)  # plotly drops labels exactly at the ends of the bar
        colorbar.update(tickvals=[min(max(v, zmin + nudge), zmax - nudge) for v in tick_map],
                        ticktext=list(tick_map.values()))
    fig.add_trace(go.Scatter(
        x=[None], y=[None], mode="markers", name=value_label, showlegend=False,
        hoverinfo="skip",
        marker={"color": [zmin], "cmin": zmin, "cmax": zmax, "colorscale": colorscale,
                "showscale": True, "colorbar": colorbar},
    ))
    rows = row + 1
    fig.update_xaxes(visible=False, range=[-0.5, line_chars + 0.5], fixedrange=True)
    fig.update_yaxes(visible=False, autorange="reversed", fixedrange=True)
    fig.update_layout(
        title={"text": title or f"Tokens coloured by {LABELS.get(value_label, value_label)} "
                                 "(click a token; hover for its numbers)"},
        barmode="overlay", bargap=0.12, height=230 + 38 * rows, dragmode=False,
        uniformtext={"minsize": FONT_SIZE, "mode": "show"},
        legend={"orientation": "h", "x": 0.0, "y": 1.0, "yanchor": "bottom"},
        margin={"l": 10, "r": 10, "b": 110},
    )
    return fig


def _styled(builder: Any) -> Any:
    import functools

    @functools.wraps(builder)
    def wrapper(*args: Any, **kwargs: Any) -> go.Figure:
        return style_figure(builder(*args, **kwargs))

    return wrapper


# Every figure builder of this module sets its fonts to FONT_SIZE (>= 14 px by default).
for _name, _obj in list(globals().items()):
    if (callable(_obj) and getattr(_obj, "__module__", None) == __name__
            and getattr(_obj, "__annotations__", {}).get("return") in ("go.Figure", go.Figure)
            and _name not in ("style_figure",) and not _name.startswith("_")):
        globals()[_name] = _styled(_obj)
del _name, _obj
