"""Toy lab: the paper's toy experiments (notebook 01) with controls.

Free student logits fitted to a target on bins with each chosen loss (akl_core.lab.toy), a step
slider over the snapshots, gap and divergence curves per loss, and the classic continuous
one-Gaussian demo. Figures come from akl_core.lab.viz; nothing is computed here.
"""

from __future__ import annotations

import numpy as np
import streamlit as st
import torch
from ui_common import loss_names, page_setup, parse_floats, show_errors

from akl_core import head_mask
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


with st.sidebar:
    st.header("Experiment")
    with st.form("toy_form"):
        target_name = st.selectbox("Target", [*PRESETS, CUSTOM], key="toy_target")
        paper = toy.PAPER_SETTINGS.get(target_name, toy.PAPER_SETTINGS["fig2_bimodal"])
        bins = st.number_input("Bins (custom)", min_value=2, max_value=2000, value=60,
                               key="toy_bins")
        weights = st.text_input("Mixture weights (custom)", "0.5, 0.3", key="toy_weights")
        means = st.text_input("Mixture means on 0..100 (custom)", "75, 25", key="toy_means")
        stds = st.text_input("Mixture stds (custom)", "10, 10", key="toy_stds")
        losses = st.multiselect("Losses", loss_names(), default=["fkl", "rkl", "akl"],
                                key="toy_losses")
        mu = st.number_input("mu (head mass)", min_value=0.0, max_value=1.0, value=0.5,
                             step=0.05, key="toy_mu", help="teacher mass that defines the head")
        lr = st.number_input("Learning rate (Adam)", min_value=0.0, max_value=10.0,
                             value=float(paper["lr"]), step=0.05, format="%.3f", key="toy_lr")
        steps = st.number_input("Steps", min_value=1, max_value=2000, value=int(paper["steps"]),
                                key="toy_steps")
        seed = st.number_input("Seed", min_value=0, max_value=2**31 - 1, value=1, key="toy_seed")
        st.form_submit_button("Run toy experiment", type="primary")
    st.caption("Presets use the paper's settings: Fig. 2 Adam lr 0.1, 200 steps; "
               "Fig. 3 lr 0.2, 300 steps; seed 1.")

VIEWS = ["Free logits on bins", "Classic one-Gaussian demo"]
view = st.radio("View", VIEWS, horizontal=True, key="toy_view", label_visibility="collapsed")


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
    head = head_mask(torch.as_tensor(target.log_probs), mu=float(mu)).numpy()
    title = (target.description or target.name).replace("*", "·")
    st.markdown(f"**{title}**: {target.size} bins; "
                f"head = {int(head.sum())} bins holding mass {float(target.probs[head].sum()):.3f}")
    c1, c2 = st.columns([3, 1])
    with c2:
        step = st.slider("Step", 0, int(steps), min(10, int(steps)), key=f"toy_step_{int(steps)}")
        log_y = st.toggle("Log scale (see the tail)", value=False, key="toy_log")
    with c1:
        fig = viz.distribution_figure(
            target.x, target.probs, {n: r.snapshots[step] for n, r in results.items()},
            head_mask=head, log_y=log_y, title=f"Teacher p and students q at step {step}",
        )
        st.plotly_chart(fig, key="toy_dist")
    st.plotly_chart(viz.gap_curves(results), key="toy_gaps")
    c3, c4 = st.columns(2)
    with c3:
        st.plotly_chart(viz.divergence_curves(results, "fkl"), key="toy_fkl")
    with c4:
        st.plotly_chart(viz.curves_figure(results, "w", title="AKL weight w on FKL over steps"),
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
    fits = run_classic(("fkl", "rkl"), 400, 0.05, int(seed))
    first = next(iter(fits.values()))
    st.plotly_chart(viz.continuous_fit_figure(first.x, first.target, fits), key="toy_classic")
    st.dataframe([{"loss": n, "mean": f.mean, "std": f.std} for n, f in fits.items()],
                 hide_index=True)


with show_errors("Toy experiment"):
    # The form only batches widget changes; results are cached per settings.
    bins_view() if view == VIEWS[0] else classic_view()
