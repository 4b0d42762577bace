"""Toy lab: the paper's toy experiments (notebook 01) with controls.

Free student logits fitted to a target on bins with each chosen loss (akl_core.lab.toy), a step
slider over the snapshots, gap and divergence curves per loss, and the classic continuous
one-Gaussian demo. Figures come from akl_core.lab.viz; nothing is computed here.
"""

from __future__ import annotations

import numpy as np
import streamlit as st
from ui_common import loss_names, page_setup, parse_floats, plotly_chart, show_errors

from akl_core.lab import toy, viz

page_setup("Toy lab")
st.caption(
    "p = the target (teacher), q = the student: free logits over the bins, trained with Adam "
    "from the same seeded start for every loss. The shaded bins are the teacher's head "
    "(mass mu); g_head and g_tail are the student's total absolute error there and in the tail."
)

PRESETS = list(toy.PRESETS)
CUSTOM = "custom mixture"


@st.cache_data(show_spinner=False, max_entries=16)
def run_toy(
    target_key: tuple, losses: tuple[str, ...], steps: int, lr: float, seed: int, mu: float
) -> dict:
    """Train every loss on the target (cached per settings); snapshots at every step."""
    target = build_target(target_key)
    return toy.compare_losses(
        target, list(losses), steps=steps, lr=lr, seed=seed, mu=mu,
        snapshot_steps=range(0, steps + 1), record=("fkl", "rkl"),
    )


@st.cache_data(show_spinner=False, max_entries=8)
def run_classic(losses: tuple[str, ...], steps: int, lr: float, seed: int) -> dict:
    mixture = toy.classic_mixture()
    return {name: toy.fit_gaussian(mixture, name, steps=steps, lr=lr, seed=seed)
            for name in losses}


def build_target(key: tuple) -> toy.DiscreteTarget:
    if key[0] == CUSTOM:
        _, bins, weights, means, stds = key
        x = np.linspace(0.0, 100.0, int(bins), endpoint=False)
        return toy.gaussian_mixture_on_bins(x, weights, means, stds, name="custom")
    return toy.make_target(key[0])


VIEWS = ["Free logits on bins", "Classic one-Gaussian demo"]
view = st.radio("View", VIEWS, horizontal=True, key="toy_view", label_visibility="collapsed")
KL_FLOOR = 1e-12  # plotting floor of KL(p||q) on the log axis (0 has no place there)


def apply_preset() -> None:
    """Choosing a preset sets the paper's lr, steps and seed for it (custom keeps them)."""
    settings = toy.PAPER_SETTINGS.get(st.session_state["toy_target"])
    if settings:
        st.session_state["toy_lr"] = float(settings["lr"])
        st.session_state["toy_steps"] = int(settings["steps"])
        st.session_state["toy_seed"] = int(settings["seed"])


def init_state(defaults: dict) -> None:
    """Widget defaults through Session State only (a value= as well would warn)."""
    for key, value in defaults.items():
        st.session_state.setdefault(key, value)


with st.sidebar:
    st.header("Experiment")
    if view == VIEWS[0]:
        init_state({"toy_target": PRESETS[0]})
        target_name = st.selectbox("Target", [*PRESETS, CUSTOM], key="toy_target",
                                   on_change=apply_preset)
        paper = toy.PAPER_SETTINGS.get(target_name)
        first = toy.PAPER_SETTINGS[target_name if paper else PRESETS[0]]
        init_state({"toy_lr": float(first["lr"]), "toy_steps": int(first["steps"]),
                    "toy_seed": int(first["seed"])})
        if paper:
            st.caption(f"Paper settings for this preset (applied when you choose it): Adam lr "
                       f"{paper['lr']:g}, {paper['steps']} steps, seed {paper['seed']}.")
        with st.form("toy_form"):
            if target_name == CUSTOM:
                bins = st.number_input("Bins", min_value=2, max_value=2000, value=60,
                                       key="toy_bins")
                weights = st.text_input("Mixture weights", "0.5, 0.3", key="toy_weights")
                means = st.text_input("Mixture means on 0..100", "75, 25", key="toy_means")
                stds = st.text_input("Mixture stds", "10, 10", key="toy_stds")
            losses = st.multiselect("Losses", loss_names(), default=["fkl", "rkl", "akl"],
                                    key="toy_losses")
            mu = st.number_input("mu (head mass)", min_value=0.0, max_value=1.0, value=0.5,
                                 step=0.05, key="toy_mu", help="teacher mass that defines the head")
            lr = st.number_input("Learning rate (Adam)", min_value=0.0, max_value=10.0,
                                 step=0.05, format="%.3f", key="toy_lr")
            steps = st.number_input("Steps", min_value=1, max_value=2000, key="toy_steps")
            seed = st.number_input("Seed", min_value=0, max_value=2**31 - 1, key="toy_seed")
            st.form_submit_button("Run toy experiment", type="primary")
    else:
        with st.form("toy_classic_form"):
            losses = st.multiselect("Losses", loss_names(), default=["fkl", "rkl", "akl"],
                                    key="toy_classic_losses")
            lr = st.number_input("Learning rate (Adam)", min_value=0.001, max_value=10.0,
                                 value=0.05, step=0.01, format="%.3f", key="toy_classic_lr")
            steps = st.number_input("Steps", min_value=1, max_value=5000, value=400,
                                    key="toy_classic_steps")
            seed = st.number_input("Seed", min_value=0, max_value=2**31 - 1, value=1,
                                   key="toy_classic_seed")
            st.form_submit_button("Fit the Gaussians", type="primary")


def mark_step(fig, step: int):
    """The selected step as a dotted vertical line on a time-series figure."""
    fig.add_vline(x=step, line_dash="dot", line_color="black")
    return fig


def bins_notice(results: dict, step: int, steps: int) -> str:
    """What to notice, from the numbers of this run."""
    head = min(results, key=lambda n: results[n].at(step, "g_head"))
    tail = min(results, key=lambda n: results[n].at(step, "g_tail"))
    finals = ", ".join(f"{n} {results[n].final('fkl'):.2g}" for n in results)
    text = (f"At step {step}, **{head}** has the smallest head gap "
            f"(g_head = {results[head].at(step, 'g_head'):.3f})")
    text += (" and the smallest tail gap too" if tail == head else
             f" and **{tail}** the smallest tail gap (g_tail = "
             f"{results[tail].at(step, 'g_tail'):.3f})")
    text += f". After {steps} steps KL(p||q) is: {finals}"
    converged = [n for n in results if results[n].final("fkl") < 1e-3]
    if len(converged) == len(results) and len(results) > 1:
        text += " (every loss reaches the target: they differ by the path, not the end)"
    return text + ". Move the step slider to see the path."


def classic_notice(fits: dict, mixture) -> str:
    modes = [m for _, m, _ in mixture._components()]
    spread = max(s for _, _, s in mixture._components())
    parts = []
    for name, f in fits.items():
        nearest = min(modes, key=lambda m: abs(m - f.mean))
        if f.std > 1.5 * spread:
            where = f"spreads over both modes (std {f.std:.2f})"
        elif abs(f.mean - nearest) < spread:
            where = f"locks onto the mode at {nearest:g} (mean {f.mean:.2f}, std {f.std:.2f})"
        else:
            where = f"sits between the modes (mean {f.mean:.2f}, std {f.std:.2f})"
        parts.append(f"**{name}** {where}")
    return ("; ".join(parts) + ". One Gaussian cannot fit two modes, so the loss decides "
            "which compromise it makes.")


def bins_view() -> None:
    if not losses:
        raise ValueError("pick at least one loss")
    if target_name == CUSTOM:
        key = (CUSTOM, int(bins), parse_floats(weights, "weights"),
               parse_floats(means, "means"), parse_floats(stds, "stds"))
    else:
        key = (target_name,)
    target = build_target(key)
    with st.spinner(f"Training {len(losses)} loss(es) for {int(steps)} steps..."):
        results = run_toy(key, tuple(losses), int(steps), float(lr), int(seed), float(mu))
    head = target.head(float(mu))
    title = (target.description or target.name).replace("*", "·")
    st.markdown(f"**{title}**: {target.size} bins; "
                f"head = {int(head.sum())} bins holding mass {float(target.probs[head].sum()):.3f}")
    c1, c2 = st.columns([3, 1])
    with c2:
        step = st.slider("Step", 0, int(steps), min(10, int(steps)), key=f"toy_step_{int(steps)}")
        log_y = st.toggle("Log scale (see the tail)", value=False, key="toy_log")
    st.info(bins_notice(results, step, int(steps)), icon=":material/visibility:")
    with c1:
        fig = viz.distribution_figure(
            target.x, target.probs, {n: r.snapshots[step] for n, r in results.items()},
            head_mask=head, log_y=log_y, title=f"Teacher p and students q at step {step}",
        )
        plotly_chart(fig, key="toy_dist")
    plotly_chart(mark_step(viz.gap_curves(results), step), key="toy_gaps")
    c3, c4 = st.columns(2)
    with c3:
        plotly_chart(mark_step(viz.divergence_curves(results, "fkl", floor=KL_FLOOR), step),
                     key="toy_fkl")
    with c4:
        plotly_chart(mark_step(viz.curves_figure(results, "w",
                                                 title="AKL weight w on FKL over steps"), step),
                     key="toy_w")
    table = [
        {"loss": n, "KL(p||q) at step": r.at(step, "fkl"), "g_head": r.at(step, "g_head"),
         "g_tail": r.at(step, "g_tail"), "final KL(p||q)": r.final("fkl")}
        for n, r in results.items()
    ]
    st.dataframe(table, hide_index=True, key="toy_table")


def classic_view() -> None:
    st.caption("One Gaussian student fitted to a two-Gaussian mixture: the folklore picture "
               "(FKL spreads over both modes, RKL locks onto one), true only because the "
               "student cannot represent the target.")
    if not losses:
        raise ValueError("pick at least one loss")
    with st.spinner(f"Fitting {len(losses)} Gaussian(s)..."):
        fits = run_classic(tuple(losses), int(steps), float(lr), int(seed))
    first = next(iter(fits.values()))
    st.info(classic_notice(fits, toy.classic_mixture()), icon=":material/visibility:")
    plotly_chart(viz.continuous_fit_figure(first.x, first.target, fits), key="toy_classic")
    st.dataframe([{"loss": n, "mean": f.mean, "std": f.std} for n, f in fits.items()],
                 hide_index=True, key="toy_classic_table")


with show_errors("Toy experiment"):
    # The form only batches widget changes; results are cached per settings.
    if view == VIEWS[0]:
        bins_view()
    else:
        classic_view()
