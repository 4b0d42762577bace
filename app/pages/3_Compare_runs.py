"""Compare runs: saved run folders (akl_core.lab.runs) side by side: curves, evaluation metrics,
generations; evaluate a run that has none (akl_core.lab.evaluate on the run's student)."""

from __future__ import annotations

import math

import streamlit as st
from ui_common import (
    confine,
    default_response_tokens,
    get_teacher,
    page_setup,
    runs_root,
    show_errors,
)

from akl_core.lab import runs, viz

page_setup("Compare runs")

CURVE_KEYS = ("loss", "g_head", "g_tail", "w")

with st.sidebar:
    root = st.text_input("Runs folder", runs_root() or str(runs.default_root()),
                         key="cmp_root", help="Folder holding one sub-folder per run.")
    if st.button("Refresh", key="cmp_refresh"):
        st.rerun()


def history(steps: list[dict]) -> dict:
    good = [s for s in steps if all(isinstance(s.get(k), (int, float))
                                    and math.isfinite(s[k]) for k in CURVE_KEYS)]
    return {"step": [s["step"] for s in good], **{k: [s[k] for s in good] for k in CURVE_KEYS}}


def live_student_for(run_name: str):
    """The in-memory trained student of this session's last live run, if it is that run."""
    live = st.session_state.get("live")
    if live is None:
        return None
    info = live.view().info
    return info.get("student") if info.get("run_name") == run_name else None


def evaluate_run(run: runs.RunData, n: int, max_new_tokens: int) -> dict:
    """Generate on bundled test prompts, score with akl_core.lab.evaluate, write eval.json."""
    from akl_core.lab import data, evaluate
    from akl_core.lab.models import load_student

    if "config.json" in run.problems:
        raise ValueError(f"run {run.name}: config.json is damaged "
                         f"({run.problems['config.json']}); cannot tell its teacher")
    teacher = get_teacher(str(run.config.get("teacher") or ""))
    student = live_student_for(run.name)
    if student is None:
        if not run.has_student:
            raise ValueError(f"run {run.name} has no saved student (tick 'Save the trained "
                             "student' on the Live page) and is not this session's last run")
        student = load_student(str(run.path / "student"), teacher)
    examples = data.load_bundled("test")[:n]
    bar = st.progress(0.0, text="teacher responses")

    def progress(stage: str, done: int, total: int) -> None:
        bar.progress(min(done / max(total, 1), 1.0), text=f"{stage}: {done}/{total}")

    t_resp = data.teacher_responses(teacher, examples, max_new_tokens=max_new_tokens,
                                    progress=lambda d, t: progress("teacher responses", d, t))
    result = evaluate.evaluate(student, examples, teacher_responses=t_resp,
                               max_new_tokens=max_new_tokens, progress=progress)
    runs.atomic_write_json(run.path / "eval.json", result)
    bar.empty()
    return result


with show_errors("Cannot list runs"):
    all_runs = runs.list_runs(confine(root, "Runs folder"))
    if not all_runs:
        st.info(f"No runs under `{root}` yet: start one on the Live distillation page "
                "(or with `akl distill`).")
        st.stop()
    st.subheader("All runs")
    st.dataframe(runs.compare(all_runs), hide_index=True, key="cmp_all_table")
    for r in all_runs:
        if r.broken:
            st.warning(f"Broken run {r.name}: " + "; ".join(
                f"{file}: {why}" for file, why in r.problems.items()))
    names = [r.name for r in all_runs]
    chosen = st.multiselect("Runs to compare", names, default=names[-3:],
                            key=f"cmp_runs_{root}")
    picked = [r for r in all_runs if r.name in chosen]

    if picked:
        hists = {r.name: history(r.steps) for r in picked if history(r.steps)["step"]}
        if hists:
            fig = viz.gap_curves(hists, keys=CURVE_KEYS,
                                 title="Loss, head/tail gaps and AKL weight per run")
            fig.update_layout(legend_title_text="run")
            st.plotly_chart(fig, key="cmp_curves")
        else:
            st.caption("The chosen runs have no finished steps yet.")

        st.subheader("Evaluation")
        rows = []
        for r in picked:
            if r.eval:
                for who in ("student", "teacher"):
                    scores = r.eval.get(who)
                    if scores:
                        rows.append({"run": r.name, "model": who,
                                     "loss": str(r.config.get("loss")),
                                     **{k: v for k, v in scores.items()
                                        if isinstance(v, (int, float))}})
        if rows:
            st.dataframe(rows, hide_index=True, key="cmp_eval_table")
        missing = [r for r in picked if not r.eval]
        if missing:
            with st.form("cmp_eval_form"):
                target = st.selectbox("Evaluate a run without evaluation",
                                      [r.name for r in missing], key="cmp_eval_run")
                n = st.number_input("Test prompts", min_value=1, max_value=200, value=8,
                                    key="cmp_eval_n")
                max_new = st.number_input("Max new tokens", min_value=1, max_value=512,
                                          value=default_response_tokens(),
                                          key="cmp_eval_tokens")
                go = st.form_submit_button("Evaluate")
            if go:
                run = next(r for r in missing if r.name == target)
                with st.spinner(f"Evaluating {run.name}..."):
                    evaluate_run(run, int(n), int(max_new))
                st.success(f"Evaluation of {run.name} saved in {run.path / 'eval.json'}.")
                st.rerun()

        with_gen = [r for r in picked if r.eval and r.eval.get("generations")]
        if with_gen:
            st.subheader("Generations side by side")
            gens = {r.name: r.eval["generations"] for r in with_gen}
            first = gens[with_gen[0].name]
            i = st.selectbox("Test prompt", range(len(first)), key="cmp_gen_idx",
                             format_func=lambda k: f"{k}: {first[k]['instruction'][:80]}")
            st.markdown(f"**Instruction:** {first[i]['instruction']}")
            if first[i].get("context"):
                st.caption(first[i]["context"])
            cols = st.columns(len(with_gen) + 1)
            cols[0].markdown("**Teacher**")
            cols[0].write(first[i].get("teacher") or "-")
            for col, r in zip(cols[1:], with_gen):
                g = gens[r.name]
                col.markdown(f"**{r.name}** ({r.config.get('loss')})")
                col.write((g[i].get("student") or "-") if i < len(g) else "-")
