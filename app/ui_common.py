"""Shared UI glue for the AKL Explorer pages (no losses or figures are computed here).

Everything numeric comes from akl_core; figures come from akl_core.lab.viz. This module only
turns the loss registry into widgets, shows errors as messages, colours token strings for
HTML display and caches models once per process with st.cache_resource.

Safety (local-only dashboard): app/.streamlit/config.toml binds the server to 127.0.0.1
wherever it is started from; every page refuses to run when the server listens beyond
loopback anyway (a --server.address flag or STREAMLIT_SERVER_ADDRESS), unless
AKL_APP_ALLOW_REMOTE=1 is set, and then warns. Folders and files typed into the pages (model
folders, data JSONL, runs folders) must lie inside the runs folder, the model cache, the
folders of AKL_APP_TEACHER / AKL_APP_STUDENT, or a folder listed in AKL_ALLOWED_DIRS
(separated by the OS path separator, ':' on Linux and macOS).
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
import re
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import streamlit as st

import akl_core  # first, before torch loads (OpenMP's spin default: akl_core._openmp)

TEACHER_ENV = "AKL_APP_TEACHER"
STUDENT_ENV = "AKL_APP_STUDENT"
RUNS_ENV = "AKL_APP_RUNS_DIR"
DEFAULT_STUDENT = "truncate:4"
REMOTE_ENV = "AKL_APP_ALLOW_REMOTE"
ALLOWED_ENV = "AKL_ALLOWED_DIRS"


PRESENTATION_KEY = "akl_presentation"
PRESENTATION_FONT = 22  # figure font size (px) in presentation mode
PRESENTATION_CSS = """<style>
html { font-size: 22px !important; }
[data-testid="stMarkdownContainer"] p, [data-testid="stMarkdownContainer"] li,
[data-testid="stCaptionContainer"], [data-testid="stWidgetLabel"] p { font-size: 1.05rem; }
</style>"""


def _keep_presentation() -> None:
    # widget state is dropped when a page without the widget runs; this plain key is kept
    st.session_state[PRESENTATION_KEY] = st.session_state[f"_{PRESENTATION_KEY}"]


def presentation_mode() -> bool:
    """Whether presentation mode (large fonts in the page and in figures) is on."""
    return bool(st.session_state.get(PRESENTATION_KEY, False))


def page_setup(title: str) -> None:
    """Common page config, the network guard (see guard_network), the presentation-mode
    toggle (kept in st.session_state across pages) and the title."""
    st.set_page_config(page_title=f"AKL Explorer: {title}", layout="wide")
    no_gc_after_reruns()
    guard_network()
    st.sidebar.toggle("Presentation mode", value=presentation_mode(),
                      key=f"_{PRESENTATION_KEY}", on_change=_keep_presentation,
                      help="Large fonts in the page and in the figures, for a projector.")
    if presentation_mode():
        st.html(PRESENTATION_CSS)
    st.title(title)


def no_gc_after_reruns() -> None:
    """Turn off Streamlit's full gc.collect(2) after every script run (runner.postScriptGC).

    With torch, transformers and the models in memory one full collection takes ~0.4 s and holds
    the GIL; the Live page reruns twice a second while a run is active, so it stalled the
    training threads: profiled with py-spy during the default race, 43% of the server's samples
    were in that collect. Python's own generational collector still runs. Set here (the config
    API is internal; .streamlit/config.toml is only read from the working folder) so that every
    way of starting the app gets it.
    """
    try:
        from streamlit import config

        if config.get_option("runner.postScriptGC"):
            config.set_option("runner.postScriptGC", False)
    except Exception:  # noqa: BLE001 - an internal API: a change there costs speed, not function
        pass


def freeze_long_lived_objects() -> None:
    """Move every object alive now out of the garbage collector's view (gc.freeze), after one
    collection (call at the start of a run). The models, torch and transformers are millions
    of objects; without this, every full collection during the run walks them all (accelerate's
    Trainer calls gc.collect() as each racer starts; Python's own collections come with the
    allocations of a step), holding the GIL from the training threads. The objects frozen by
    the previous run are handed back first (gc.unfreeze), so what that run left behind is
    collected here and nothing stays frozen for longer than one run."""
    import gc

    gc.unfreeze()
    gc.collect()
    gc.freeze()


def figure_font_size() -> int:
    """Figure font size (px) for this session: viz.FONT_SIZE, larger in presentation mode."""
    from akl_core.lab import viz

    return max(viz.FONT_SIZE, PRESENTATION_FONT) if presentation_mode() else viz.FONT_SIZE


def plotly_chart(fig: Any, **kwargs: Any) -> Any:
    """st.plotly_chart with the session's figure fonts (presentation mode); same arguments."""
    from akl_core.lab import viz

    size = figure_font_size()
    if getattr(fig, "_akl_font_size", None) != size:  # a cached figure is styled once
        viz.style_figure(fig, size)
        fig._akl_font_size = size
    return st.plotly_chart(fig, **kwargs)


def is_loopback(address: str | None) -> bool:
    """Whether a server.address only accepts connections from this machine."""
    if not address:
        return False  # unset or "": every interface
    if address.startswith("unix://"):
        return True
    if address.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip().strip("[]")).is_loopback
    except ValueError:
        return False


def guard_network() -> None:
    """Stop the page when the server listens beyond loopback, unless $AKL_APP_ALLOW_REMOTE=1
    (then warn): anyone reaching it could load local folders as models and start jobs."""
    from streamlit import config  # looked up per call: AppTest's option patches apply

    address = config.get_option("server.address")
    if address is None and config.get_option("global.appTest"):
        return  # Streamlit's AppTest: no server listens at all
    if is_loopback(address):
        return
    where = f"address {address}" if address else "every network interface"
    if os.environ.get(REMOTE_ENV) == "1":
        st.warning(f"This dashboard listens on {where} ({REMOTE_ENV}=1): anyone who can reach "
                   "this machine can use it, load models from the allowed folders and start "
                   "training jobs. Use it on a trusted network only.")
        return
    st.error(f"Refused: this dashboard listens on {where}, so other machines could use it. "
             "Start it with --server.address 127.0.0.1 (as `make app` does), or set "
             f"{REMOTE_ENV}=1 to allow it on a trusted network.")
    st.stop()


def allowed_dirs() -> list[Path]:
    """Folders the pages may read: the runs folder, the model cache, the folders of the
    AKL_APP_TEACHER / AKL_APP_STUDENT defaults and those listed in $AKL_ALLOWED_DIRS."""
    from akl_core.lab import models, runs

    dirs = [Path(runs_root() or runs.default_root()), models.cache_dir()]
    for key in (TEACHER_ENV, STUDENT_ENV):
        value = os.environ.get(key, "").strip()
        if value and Path(value).expanduser().is_dir():
            dirs.append(Path(value).expanduser())
    dirs += [Path(p).expanduser() for p in os.environ.get(ALLOWED_ENV, "").split(os.pathsep)
             if p.strip()]
    return [d.resolve() for d in dirs]


def confine(path_text: str, what: str) -> Path:
    """The resolved path if it lies inside an allowed folder (see allowed_dirs), else
    ValueError with one line. Symbolic links are followed before the check."""
    path = Path(path_text.strip()).expanduser().resolve()
    for root in allowed_dirs():
        if path == root or root in path.parents:
            return path
    raise ValueError(f"{what}: {path_text.strip()} is outside the folders this dashboard may "
                     f"open (the runs folder, the model cache and ${ALLOWED_ENV}); add its "
                     f"folder to {ALLOWED_ENV} to allow it")


def confine_model_spec(spec: str, what: str) -> str:
    """A model spec as typed: bundled / truncate:K / tiny / hub names pass; a folder path must
    be inside an allowed folder (ValueError otherwise)."""
    from akl_core.lab.models import _is_bundled

    text = spec.strip()
    if _is_bundled(text) or re.fullmatch(r"(truncate:\s*\d+|tiny(:\s*\d+)?)", text.lower()):
        return text
    if text.startswith((".", "/", "~", "\\")) or os.path.isabs(text) or \
            Path(text).expanduser().exists():
        confine(text, what)
    return text


def confine_data(source: str, what: str = "Data") -> str:
    """A data source as typed: bundled:<split> passes; a file must be in an allowed folder."""
    text = source.strip()
    if not text.startswith("bundled"):
        confine(text, what)
    return text


def default_teacher_spec() -> str:
    """Teacher spec shown by default: $AKL_APP_TEACHER, else "" (= the bundled model)."""
    return os.environ.get(TEACHER_ENV, "")


def default_student_spec() -> str:
    """Student spec shown by default: $AKL_APP_STUDENT, else truncate:4."""
    return os.environ.get(STUDENT_ENV, DEFAULT_STUDENT)


def runs_root() -> str | None:
    """Folder where the app writes runs: $AKL_APP_RUNS_DIR, else None (akl_core's default)."""
    return os.environ.get(RUNS_ENV) or None


def default_response_tokens() -> int:
    """Length bound of the committed teacher responses (so they are reused, not regenerated);
    DistillConfig's default when no committed file exists."""
    from akl_core.lab import data
    from akl_core.lab.distill import DistillConfig

    try:
        meta = json.loads(data.RESPONSES_META.read_text())
        return int(meta["settings"]["max_new_tokens"])
    except (OSError, ValueError, KeyError, TypeError):
        return DistillConfig().response_tokens


def error_message(exc: BaseException) -> str:
    """One clear line for the user: ValueError/FileNotFoundError text as is, else with its type."""
    text = str(exc).strip() or exc.__class__.__name__
    if isinstance(exc, (ValueError, FileNotFoundError, KeyError, OSError, RuntimeError)):
        return text if not isinstance(exc, KeyError) else f"Not found: {text}"
    return f"{exc.__class__.__name__}: {text}"


@contextmanager
def show_errors(what: str = "") -> Iterator[None]:
    """Turn any exception inside the block into an st.error message (never a traceback).

    Streamlit's own control-flow exceptions (rerun, stop) derive from BaseException and
    pass through untouched.
    """
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - shown to the user, the app keeps working
        prefix = f"{what}: " if what else ""
        st.error(prefix + error_message(exc))


# --------------------------------------------------------------------------- models


@st.cache_resource(show_spinner=False, max_entries=2)
def cached_teacher(spec: str) -> Any:
    """Load a teacher once per process ("" = the bundled default). Shared, read-only."""
    from akl_core.lab.models import load_teacher

    bundle = load_teacher(spec or None)
    bundle.model.eval()
    for param in bundle.model.parameters():
        param.requires_grad_(False)
    return bundle


@st.cache_resource(show_spinner=False, max_entries=2)
def cached_student(teacher_spec: str, student_spec: str, seed: int = 0) -> Any:
    """An untrained student (read-only, shared) for inspection, built against the teacher."""
    from akl_core.lab.models import load_student

    confine_model_spec(student_spec, "Student")
    bundle = load_student(student_spec, cached_teacher(confine_model_spec(teacher_spec, "Teacher")),
                          seed=seed)
    bundle.model.eval()
    return bundle


def get_teacher(spec: str) -> Any:
    """The cached teacher with a spinner the first time (conversion can take ~30 s)."""
    spec = confine_model_spec(spec, "Teacher")
    label = spec or "the bundled default teacher"
    with st.spinner(f"Loading {label} (first time only)..."):
        return cached_teacher(spec)


# --------------------------------------------------------------------------- loss widgets


def loss_names() -> list[str]:
    """Loss names from the registry, in registry order."""

    return list(akl_core.LOSSES)


def _is_bool(spec: Any) -> bool:
    return isinstance(spec.default, bool) or (
        spec.choices is not None and set(spec.choices) <= {True, False}
    )


def param_widget(spec: Any, *, key: str, container: Any = None, disabled: bool = False) -> Any:
    """One widget for a registry ParamSpec: range, default and help from the registry.

    Floats/ints with bounds -> number_input(min_value=low, max_value=high); strings with
    choices -> selectbox; bools -> checkbox. Exclusive bounds are validated afterwards by
    akl_core.resolve_params, which raises a clear ValueError. A value already in
    st.session_state[key] (kept across pages) wins over the registry default.
    """
    box = container if container is not None else st
    label = spec.name
    help_text = spec.description or None
    kept = key in st.session_state

    def default(**kw: Any) -> dict:
        return {} if kept else kw

    if _is_bool(spec):
        return box.checkbox(label, key=key, help=help_text, disabled=disabled,
                            **default(value=bool(spec.default)))
    if spec.choices is not None:
        choices = list(spec.choices)
        index = choices.index(spec.default) if spec.default in choices else 0
        return box.selectbox(label, choices, key=key, help=help_text, disabled=disabled,
                             **default(index=index))
    if isinstance(spec.default, int):
        low = int(spec.low) if spec.low is not None else None
        high = int(spec.high) if spec.high is not None else None
        return box.number_input(
            label, min_value=low, max_value=high, step=1, key=key,
            help=help_text, disabled=disabled, **default(value=int(spec.default)),
        )
    low = float(spec.low) if spec.low is not None else None
    high = float(spec.high) if spec.high is not None else None
    value = 0.0 if spec.default is None else float(spec.default)
    return box.number_input(
        label, min_value=low, max_value=high, step=0.05, format="%.3f", key=key,
        help=help_text, disabled=disabled, **default(value=value),
    )


def loss_picker(*, key: str, container: Any = None, default: str = "akl",
                skip: Sequence[str] = (), disabled: bool = False) -> tuple[str, dict]:
    """Selectbox over akl_core.LOSSES plus one widget per parameter. Returns (name, params).

    Params are returned as entered (not validated); call akl_core.resolve_params on them.
    Parameters named in `skip` get no widget and are left out of params (the page sets them
    from its own control, e.g. one mu/boundary for the whole page).
    disabled: lock the widgets (e.g. while a run is active).
    """

    box = container if container is not None else st
    names = loss_names()
    index = names.index(default) if default in names else 0
    name = box.selectbox(
        "Loss", names, key=f"{key}_loss", disabled=disabled,
        format_func=lambda n: f"{n}: {akl_core.LOSSES[n].description}"[:70],
        **({} if f"{key}_loss" in st.session_state else {"index": index}),
    )
    params = {
        pname: param_widget(pspec, key=f"{key}_{name}_{pname}", container=box,
                            disabled=disabled)
        for pname, pspec in akl_core.LOSSES[name].params.items() if pname not in skip
    }
    return name, params


def parse_floats(text: str, what: str) -> tuple[float, ...]:
    """Comma-separated numbers -> tuple of floats; ValueError naming `what` otherwise."""
    parts = [t.strip() for t in str(text).replace(";", ",").split(",") if t.strip()]
    if not parts:
        raise ValueError(f"{what}: enter comma-separated numbers, got nothing")
    try:
        values = tuple(float(t) for t in parts)
    except ValueError:
        raise ValueError(f"{what}: {text!r} is not a comma-separated list of numbers") from None
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"{what}: numbers must be finite, got {text!r}")
    return values


# --------------------------------------------------------------------------- token view


def cached_figure(slot: str, signature: Hashable, build: Callable[[], Any]) -> Any:
    """`build()`'s figure, rebuilt only when `signature` changed since the last call for `slot`
    (kept in st.session_state). A page that polls twice a second (Live distillation) redraws
    unchanged figures without rebuilding them: building a plotly figure is 0.05-0.2 s of Python
    that holds the GIL, taken from the training threads in the same process."""
    store = st.session_state.setdefault("_akl_figure_cache", {})
    hit = store.get(slot)
    if hit is not None and hit[0] == signature:
        return hit[1]
    fig = build()
    store[slot] = (signature, fig)
    return fig


def token_view(
    tokens: Sequence[str],
    metrics: Mapping[str, Sequence[float]],
    metric: str,
    *,
    key: str,
    context: Sequence[str] = (),
    pick_key: str | None = None,
    zrange: tuple[float, float] | None = None,
    title: str | None = None,
) -> int:
    """Clickable tokens coloured by `metrics[metric]` with every metric on hover; returns the
    selected position (0-based over `tokens`).

    tokens [T]: the predicted tokens; metrics: {name: [T] numbers} (e.g. w, g_head, g_tail,
    head_size, head_mass, teacher_entropy, student_entropy, loss_value), all shown on hover;
    context: tokens drawn first in grey (the text's first token, which nothing predicts).
    Colours use a FIXED range: `zrange`, else viz.TOKEN_SCALES[metric] (w in [0, 1], gaps in
    [0, 2]), else the finite min/max of the values. A click on a token selects it (and a
    "Pick a token" selectbox under the chart, key `pick_key` (default f"{key}_token"), does the
    same without a mouse); the choice is kept in st.session_state[pick_key].

        pos = token_view(diag.tokens, {"w": diag.w, "g_head": diag.g_head}, "w", key="live",
                         context=[first_token])
    """
    from akl_core.lab import viz

    if metric not in metrics:
        raise ValueError(f"no metric {metric!r}; have {sorted(metrics)}")
    values = [float(v) if v is not None else math.nan for v in metrics[metric]]
    n = len(tokens)
    if n == 0:
        raise ValueError("no tokens to show")
    pick_key = pick_key or f"{key}_token"
    current = st.session_state.get(pick_key)
    if not isinstance(current, int) or not 0 <= current < n:
        current = 0
        st.session_state.pop(pick_key, None)
    scale = viz.TOKEN_SCALES.get(metric)
    if zrange is not None:
        lo, hi = zrange
    elif scale is not None:
        lo, hi = scale[0], scale[1]
    else:
        finite = [v for v in values if math.isfinite(v)]
        lo, hi = min(finite, default=0.0), max(finite, default=1.0)
        if hi <= lo:
            hi = lo + 1.0
    colorscale = scale[2] if scale else ("RdBu_r" if metric == "w" else "YlOrRd")
    ticks = scale[3] if scale else None
    hover = {name: [float(v) if v is not None else math.nan for v in vals]
             for name, vals in metrics.items()}
    sig = (tuple(tokens), metric, tuple(values), tuple((k, tuple(v)) for k, v in hover.items()),
           lo, hi, tuple(context), current, title)
    fig = cached_figure(f"{key}_tokens", sig, lambda: viz.token_view_figure(
        tokens, values, value_label=metric, hover=hover, zmin=lo, zmax=hi,
        colorscale=colorscale, ticks=ticks, context=context, selected=current, title=title))
    event = plotly_chart(fig, key=f"{key}_tokens_chart", on_select="rerun",
                         selection_mode="points")
    points = []
    try:
        points = list(event.selection.points)
    except AttributeError:
        points = []
    clicked = next((int(p.get("point_index", p.get("point_number", -1))) for p in points
                    if p.get("curve_number", 0) == 0), None)
    if clicked is not None and 0 <= clicked < n and clicked != current:
        st.session_state[pick_key] = clicked
        st.rerun()  # redraw with the new token outlined
    extra = {} if pick_key in st.session_state else {"index": current}
    return int(st.selectbox(
        "Pick a token (or click one above)", list(range(n)), key=pick_key,
        format_func=lambda i: f"{i}: {viz.cell_token(tokens[i])!r}", **extra,
    ))
