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
    plotly_chart,
    runs_root,
    show_errors,
)

from akl_core.lab import runs, viz

page_setup("Compare runs")

CURVE_KEYS = ("loss", "g_head", "g_tail", "w")
RUN_DASHES = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")
EMPTY_GENERATION = "(empty: the student ended its turn at once)"
COLUMN_HELP = {
    "run": "Loss - finished steps - start time (HH:MM); the folder name is in 'folder'.",
    "loss": "The distillation loss the student was trained with.",
    "status": "finished / stopped / failed / running / interrupted (killed) / broken (a file "
              "is damaged: see 'problem').",
    "steps": "Optimizer steps finished.",
    "final_loss": "Training loss, mean of the last 10 steps (each loss has its own scale).",
    "g_head": "Head gap: sum over the teacher's head of |p - q|, mean of the last 10 steps "
              "(0 to 2).",
    "g_tail": "Tail gap: sum over the teacher's tail of |p - q|, mean of the last 10 steps "
              "(0 to 2).",
    "mu": "The loss's head mass mu (only losses with a head/tail split).",
    "lr": "Learning rate.",
    "batch x length": "Sequences per step x tokens per sequence.",
    "seed": "Seed of the student initialisation and the batches.",
    "duration_s": "Seconds the run trained.",
    "rougeL_teacher": "Rouge-L of the student's generations against the teacher's (higher: "
                      "closer to the teacher).",
    "rougeL_gold": "Rouge-L against the gold references.",
    "distinct_2": "Share of distinct word pairs in the generations (diversity).",
    "saved student": "Whether the trained student was saved (needed to evaluate the run).",
    "race": "Runs trained together in one race share this id.",
    "problem": "Which file of a broken run is damaged, and why.",
    "folder": "The run's folder name under the runs folder.",
}

with st.sidebar:
    root = st.text_input("Runs folder", runs_root() or str(runs.default_root()),
                         key="cmp_root", help="Folder holding one sub-folder per run.")
    if st.button("Refresh", key="cmp_refresh"):
        st.rerun()


def history(steps: list[dict]) -> dict:
    good = [s for s in steps if all(isinstance(s.get(k), (int, float))
                                    and math.isfinite(s[k]) for k in CURVE_KEYS)]
    return {"step": [s["step"] for s in good], **{k: [s[k] for s in good] for k in CURVE_KEYS}}


def cell(value):
    """A table cell: '-' for a missing value, numbers to 4 significant digits."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return value


def runs_table(all_runs: list, labels: list[str]) -> list[dict]:
    """One row per run: label, loss, status, numbers, settings, '-' for missing values."""
    rows = []
    for r, label, base in zip(all_runs, labels, runs.compare(all_runs)):
        problem = base.pop("problem", None)
        row = {"run": label, **{k: v for k, v in base.items() if k != "run"},
               **runs.run_settings(r), "saved student": "yes" if r.has_student else "no",
               "race": runs.race_id(r), "folder": r.name, "problem": problem}
        rows.append(row)
    if not any(row["problem"] for row in rows):
        for row in rows:
            row.pop("problem")
    return [{k: cell(v) for k, v in row.items()} for row in rows]


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


all_runs = None
with show_errors("Cannot list runs"):
    all_runs = runs.list_runs(confine(root, "Runs folder"))
    if not all_runs:
        st.info(f"No runs under `{root}` yet: start one on the Live distillation page "
                "(or with `akl distill`).")
if not all_runs:
    st.stop()

labels = runs.run_labels(all_runs)
label_of = {r.name: label for r, label in zip(all_runs, labels)}
st.subheader("All runs")
st.caption("Select rows (the box at the left of a row) to compare them; with none selected, "
           "the last three runs are shown.")
table = runs_table(all_runs, labels)
event = st.dataframe(
    table, hide_index=True, key="cmp_all_table", on_select="rerun",
    selection_mode="multi-row",
    column_config={name: st.column_config.Column(help=text)
                   for name, text in COLUMN_HELP.items() if name in table[0]},
)
for r in all_runs:
    if r.broken:
        st.warning(f"Broken run {r.name}: " + "; ".join(
            f"{file}: {why}" for file, why in r.problems.items()))
races = sorted({rid for r in all_runs if (rid := runs.race_id(r))})
race = None
if races:
    race = st.selectbox("Show a race (its runs together)", ["(selected rows)", *races],
                        key="cmp_race")
selected_rows = list(getattr(getattr(event, "selection", None), "rows", None) or [])
if race not in (None, "(selected rows)"):
    picked = [r for r in all_runs if runs.race_id(r) == race]
elif selected_rows:
    picked = [all_runs[i] for i in sorted(selected_rows) if 0 <= i < len(all_runs)]
else:
    picked = all_runs[-3:]
st.caption("Comparing: " + ", ".join(label_of[r.name] for r in picked))

with show_errors("Cannot draw the curves"):
    hists = {label_of[r.name]: h for r in picked if (h := history(r.steps))["step"]}
    if hists:
        fig = viz.gap_curves(hists, keys=CURVE_KEYS,
                             title="Loss, head/tail gaps and AKL weight per run "
                                   "(colour: loss, dash: run)")
        dash = {label: RUN_DASHES[i % len(RUN_DASHES)] for i, label in enumerate(hists)}
        for trace in fig.data:
            if trace.name in dash:
                trace.line.dash = dash[trace.name]
                trace.mode = "lines+markers"
        fig.update_layout(legend_title_text="run")
        plotly_chart(fig, key="cmp_curves")
    else:
        st.caption("The chosen runs have no finished steps yet.")

st.subheader("Evaluation")
rows, teacher_rows = [], []
for r in picked:
    if not r.eval:
        continue
    student_scores = r.eval.get("student")
    if student_scores:
        rows.append({"model": label_of[r.name], "loss": str(r.config.get("loss")),
                     **{k: cell(v) for k, v in student_scores.items()
                        if isinstance(v, (int, float))}})
    t_scores = r.eval.get("teacher")
    if t_scores:
        t_row = {"model": "teacher", "loss": "-",
                 **{k: cell(v) for k, v in t_scores.items() if isinstance(v, (int, float))}}
        if t_row not in teacher_rows:
            teacher_rows.append(t_row)  # one teacher row, not one per run
if rows:
    st.dataframe(teacher_rows + rows, hide_index=True, key="cmp_eval_table")
unevaluated = [r for r in picked if not r.eval]
evaluable = [r for r in unevaluated if r.has_student or live_student_for(r.name) is not None]
not_evaluable = [r for r in unevaluated if r not in evaluable]
if not_evaluable:
    st.caption(
        "Not offered for evaluation: " + ", ".join(label_of[r.name] for r in not_evaluable)
        + ". They did not save their trained student (tick 'Save the trained student' on the "
        "Live page), so no student is left to generate with.")
if evaluable:
    with st.form("cmp_eval_form"):
        target = st.selectbox("Evaluate a run without evaluation",
                              [r.name for r in evaluable], key="cmp_eval_run",
                              format_func=lambda name: label_of[name])
        n = st.number_input("Test prompts", min_value=1, max_value=200, value=8,
                            key="cmp_eval_n")
        max_new = st.number_input("Max new tokens", min_value=1, max_value=512,
                                  value=default_response_tokens(), key="cmp_eval_tokens")
        go = st.form_submit_button("Evaluate")
    if go:
        run = next(r for r in evaluable if r.name == target)
        done = False
        with show_errors(f"Cannot evaluate {label_of[run.name]}"):
            with st.spinner(f"Evaluating {label_of[run.name]}..."):
                evaluate_run(run, int(n), int(max_new))
            done = True
        if done:
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

    def shown(text) -> str:
        """A generation as text; an empty one says so (not a blank cell)."""
        return text if isinstance(text, str) and text.strip() else EMPTY_GENERATION

    cols = st.columns(len(with_gen) + 1)
    cols[0].markdown("**Teacher**")
    cols[0].write(shown(first[i].get("teacher")))
    for col, r in zip(cols[1:], with_gen):
        g = gens[r.name]
        col.markdown(f"**{label_of[r.name]}**")
        col.write(shown(g[i].get("student")) if i < len(g) else "-")
