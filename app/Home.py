"""AKL Explorer dashboard: entry point (`streamlit run app/Home.py`).

The pages live in app/pages/ (Streamlit's multipage folder). They are thin views over
akl_core (losses, engine, runs) and akl_core.lab.viz (figures); they compute nothing themselves.
"""

import streamlit as st
from ui_common import default_student_spec, default_teacher_spec, page_setup

page_setup("AKL Explorer")

st.markdown(
    """
Explore how the divergences used for knowledge distillation of LLMs behave: forward KL
(FKL, mean-seeking folklore), reverse KL (RKL, mode-seeking folklore) and **Adaptive KL**
(AKL), which mixes them per token by where the student is wrong: the teacher's *head*
(the few tokens holding mass mu) or its *tail*.
"""
)

st.page_link("pages/1_Live_distillation.py", label="Live distillation",
             icon=":material/local_fire_department:")
st.caption(
    "A short teacher-to-student distillation with any loss of the catalogue: curves of the "
    "loss, the head/tail gaps and the AKL weight, and a probe text coloured token by token."
)
st.page_link("pages/2_Toy_lab.py", label="Toy lab", icon=":material/science:")
st.caption(
    "The paper's toy experiments: free student logits fitted to bimodal, unimodal and "
    "long-tail targets; snapshots over steps and g_head / g_tail curves per loss."
)
st.page_link("pages/3_Compare_runs.py", label="Compare runs", icon=":material/monitoring:")
st.caption("Saved runs side by side: curves, evaluation metrics, generations.")
st.page_link("pages/4_Token_inspector.py", label="Token inspector", icon=":material/search:")
st.caption(
    "Paste a text: the teacher's next-token distribution at every position (head size, head "
    "mass, entropy) and, with a student, every divergence per token."
)

teacher = default_teacher_spec() or "bundled SmolLM2-135M-Instruct"
st.info(
    f"Default teacher: **{teacher}**; default student: **{default_student_spec()}**. "
    "Everything runs locally; nothing is downloaded at run time."
)
