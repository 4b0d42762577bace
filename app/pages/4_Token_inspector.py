"""Token inspector: the teacher's next-token distribution at every position of a pasted text
(head size, head mass, entropy) and, with a student, every divergence per token.

Diagnostics come from akl_core (akl_core.lab.inspector: a forward pass plus akl_core calls);
figures from akl_core.lab.viz.
"""

from __future__ import annotations

import streamlit as st
from ui_common import (
    cached_student,
    default_teacher_spec,
    get_teacher,
    loss_picker,
    page_setup,
    plotly_chart,
    show_errors,
    token_view,
)

import akl_core
from akl_core.lab import viz
from akl_core.lab.inspector import context_token, text_diagnostics

page_setup("Token inspector")

SAMPLE = (
    "Knowledge distillation trains a small student model to imitate a large teacher. "
    "The capital of France is Paris, and the Eiffel Tower was finished in 1889."
)
LIVE_STUDENT = "(the student of my last live run)"

with st.sidebar:
    st.header("Models")
    teacher_spec = st.text_input("Teacher", default_teacher_spec(), key="insp_teacher",
                                 placeholder="bundled (SmolLM2-135M-Instruct)")
    live = st.session_state.get("live")
    live_view = live.view() if live is not None else None
    live_student = (live_view.info.get("student")
                    if live_view is not None and not live_view.active else None)
    options = ["(none)", "truncate:4", "tiny", "other..."]
    if live_student is not None:
        options.insert(1, LIVE_STUDENT)
    student_choice = st.selectbox("Student", options, key="insp_student_choice",
                                  help="Optional: a student to compare with the teacher.")
    student_other = ""
    if student_choice == "other...":
        student_other = st.text_input("Student spec (truncate:K, tiny, name or folder)", "",
                                      key="insp_student_other")
    st.header("Head / tail")
    mu = st.number_input("mu (head mass)", min_value=0.0, max_value=1.0, value=0.5, step=0.05,
                         key="insp_mu", help="Teacher mass that defines the head; also the mu "
                         "of the chosen loss when it has one (akl, akl_r).")
    boundary = st.selectbox("boundary", list(akl_core.BOUNDARIES), key="insp_boundary",
                            help="Which side the token crossing mu belongs to; also the "
                            "chosen loss's boundary when it has one.")
    temperature = st.number_input("Temperature", min_value=0.0, max_value=100.0, value=1.0,
                                  step=0.1, key="insp_temperature")
    topk = st.number_input("Top-k", min_value=1, max_value=50, value=10, key="insp_topk")
    st.header("Chosen loss (with a student)")
    loss, loss_params = loss_picker(key="insp", container=st.sidebar, skip=("mu", "boundary"))
    own = akl_core.LOSSES[loss].params
    loss_params.update({k: v for k, v in (("mu", mu), ("boundary", boundary)) if k in own})
    if set(own) & {"mu", "boundary"}:
        st.caption(f"{loss} uses the head/tail mu and boundary above.")

text = st.text_area("Text", SAMPLE, height=120, key="insp_text")

diag = None
with show_errors("Cannot inspect"):
    teacher = get_teacher(teacher_spec.strip())
    student = None
    if student_choice == LIVE_STUDENT:
        student = live_student
    elif student_choice == "other...":
        if not student_other.strip():
            raise ValueError("enter a student spec, or pick (none)")
        student = cached_student(teacher_spec.strip(), student_other.strip())
    elif student_choice != "(none)":
        student = cached_student(teacher_spec.strip(), student_choice)
    params = akl_core.resolve_params(loss, **loss_params)
    with st.spinner("Running the models over the text..."):
        diag = text_diagnostics(
            teacher, text, student=student, loss=loss, loss_params=params, mu=float(mu),
            boundary=boundary, temperature=float(temperature), topk=int(topk),
        )
        first = context_token(teacher, text)

if diag is not None:
    tokens = list(diag.tokens)
    fig = viz.position_stats_figure(
        {"head_size": diag.head_size, "head_mass": diag.head_mass,
         "teacher_entropy": diag.teacher_entropy},
        tokens=tokens, title=f"Teacher next-token distribution along the text (mu = {mu:g})")
    fig.update_layout(showlegend=False)
    plotly_chart(fig, key="insp_teacher_curves")

    metrics = {"head_size": diag.head_size, "head_mass": diag.head_mass,
               "teacher_entropy": diag.teacher_entropy}
    if diag.w is not None:
        metrics.update(w=diag.w, g_head=diag.g_head, g_tail=diag.g_tail,
                       student_entropy=diag.student_entropy,
                       **{f"{loss} loss value": diag.loss_value}, **diag.divergences)
        student_stats = {"w": diag.w, "g_head": diag.g_head, "g_tail": diag.g_tail,
                         "loss_value": diag.loss_value, "student_entropy": diag.student_entropy}
        sfig = viz.position_stats_figure(
            student_stats, keys=list(student_stats), tokens=tokens, log_keys=(),
            title=f"Student against the teacher along the text ({loss}, mu = {mu:g})")
        sfig.update_layout(showlegend=False)
        plotly_chart(sfig, key="insp_student_curves")
    metric = st.selectbox("Colour tokens by", list(metrics), key="insp_metric",
                          index=list(metrics).index("w") if "w" in metrics else 0)
    hover_keys = ["w", "g_head", "g_tail", "head_size", "head_mass", "teacher_entropy",
                  "student_entropy", f"{loss} loss value", metric]
    hover = {k: metrics[k] for k in dict.fromkeys(hover_keys) if k in metrics}
    pick = token_view(tokens, hover, metric, key="insp", context=[first],
                      pick_key="insp_token")
    plotly_chart(
        viz.topk_figure(diag.teacher_topk[pick],
                        diag.student_topk[pick] if diag.student_topk else None,
                        head_size=diag.head_size[pick],
                        title=f"Position {pick}: next token {viz.cell_token(tokens[pick])!r}"),
        key="insp_topk_chart",
    )
    if diag.divergences:
        rows = [{"divergence": name, "mean over positions": sum(v) / len(v),
                 f"at position {pick}": v[pick]} for name, v in diag.divergences.items()]
        st.dataframe(rows, hide_index=True, key="insp_div_table")
