"""Live distillation: a short teacher -> student run with any loss, drawn step by step.

akl_core.lab.experiment.run_experiment (the engine on KDTrainer) runs in a background thread per
browser session (app/live_runner) and writes its run folder step by step (akl_core.lab.runs); a
st.fragment polls the thread's record buffer every second while it runs, so the page stays
responsive. Figures: akl_core.lab.viz.
"""

from __future__ import annotations

import streamlit as st
from live_runner import LiveRun, LiveView
from ui_common import (
    confine_data,
    confine_model_spec,
    default_response_tokens,
    default_student_spec,
    default_teacher_spec,
    get_teacher,
    loss_picker,
    page_setup,
    runs_root,
    show_errors,
    token_strip_html,
)

from akl_core.lab import viz
from akl_core.lab.distill import DistillConfig
from akl_core.lab.experiment import run_experiment

page_setup("Live distillation")

POLL_SECONDS = 1.0
CURVE_KEYS = ("loss", "g_head", "g_tail", "w")
TOKEN_METRICS = {
    "w": "AKL weight w on FKL",
    "g_head": "head gap g_head",
    "g_tail": "tail gap g_tail",
    "head_size": "teacher head size |H|",
    "head_mass": "teacher head mass",
    "teacher_entropy": "teacher entropy",
    "student_entropy": "student entropy",
    "loss_value": "the chosen loss per token",
    "fkl": "KL(p||q) per token",
    "rkl": "KL(q||p) per token",
}
FIXED_RANGE = {"w": (0.0, 1.0)}

live: LiveRun | None = st.session_state.get("live")
active = live is not None and live.view().active
settings: dict = {}  # DistillConfig field -> widget value: the run's config, in one mapping

# ----------------------------------------------------------------------------- sidebar
with st.sidebar:
    st.header("Models")
    teacher_spec = settings["teacher"] = st.text_input(
        "Teacher", default_teacher_spec(), key="live_teacher", disabled=active,
        placeholder="bundled (SmolLM2-135M-Instruct)",
        help="Empty or 'bundled' = the embedded SmolLM2-135M-Instruct; or a hub name (needs a "
             "network) or a local model folder.",
    )
    settings["student"] = st.text_input(
        "Student", default_student_spec(), key="live_student", disabled=active,
        help="truncate:K = the teacher's first K layers; tiny = a fresh small model with the "
             "teacher's vocabulary; or a model name / folder sharing the teacher's tokenizer.",
    )
    st.header("Loss")
    loss, loss_params = settings["loss"], settings["loss_params"] = loss_picker(
        key="live", container=st.sidebar)
    if loss == "taid" and st.checkbox("t from TAIDSchedule (ignore t above)", value=True,
                                      key="live_taid_schedule"):
        loss_params.pop("t", None)
    st.header("Training")
    num = st.number_input
    settings["steps"] = num("Steps", min_value=1, max_value=100_000, value=20, key="live_steps")
    settings["batch_size"] = num("Batch size", min_value=1, max_value=256, value=4,
                                 key="live_batch")
    settings["max_length"] = num("Max length (tokens)", min_value=8, max_value=4096, value=96,
                                 key="live_maxlen")
    settings["lr"] = num("Learning rate", min_value=0.0, max_value=1.0, value=5e-4, step=1e-4,
                         format="%.1e", key="live_lr")
    settings["kd_ratio"] = num("kd_ratio (KD weight; rest = LM loss)", min_value=0.0,
                               max_value=1.0, value=1.0, step=0.1, key="live_kd_ratio")
    settings["temperature"] = num("Temperature", min_value=0.0, max_value=100.0, value=1.0,
                                  step=0.1, key="live_temperature")
    settings["seed"] = num("Seed", min_value=0, max_value=2**31 - 1, value=0, key="live_seed")
    with st.expander("More settings"):
        settings["probe_every"] = num("Probe every k steps (0 = never)", min_value=0,
                                      max_value=10_000, value=5, key="live_probe_every")
        settings["probe_topk"] = num("Top-k tokens in the probe", min_value=1, max_value=50,
                                     value=10, key="live_topk")
        settings["data"] = st.text_input(
            "Data", "bundled:train", key="live_data",
            help="bundled:train / bundled:validation / bundled:test, or a Dolly-style JSONL "
                 "file path")
        settings["targets"] = st.selectbox(
            "Train on", ["teacher", "gold"], key="live_targets",
            help="teacher = the teacher's greedy responses (cached); gold = the data's "
                 "reference responses")
        settings["response_tokens"] = st.number_input(
            "Teacher response tokens", min_value=1, max_value=2048,
            value=default_response_tokens(), key="live_response_tokens",
            help="Length bound of the teacher's greedy responses, generated once and cached. "
                 "The default matches the responses shipped for the bundled teacher and "
                 "prompts, so nothing is generated on a first run.")
        settings["max_examples"] = num("Max examples (0 = all)", min_value=0,
                                       max_value=100_000, value=0, key="live_max_examples")
        use_cache = st.checkbox(
            "Teacher cache", value=True, key="live_teacher_cache",
            help="With the bundled teacher on bundled data (temperature 1): its top-64 "
                 "log-probs are stored once (a few minutes, with a progress message) and "
                 "later runs read them instead of running the teacher.")
        save_student = st.checkbox("Save the trained student in the run folder", value=False,
                                   key="live_save_student",
                                   help="Needed to evaluate the run later from another session.")
    c1, c2 = st.columns(2)
    run_clicked = c1.button("Run", type="primary", disabled=active, key="live_run")
    stop_clicked = c2.button("Stop", disabled=not active, key="live_stop")


with show_errors("Cannot load the teacher"):
    # Loaded (once per process) when the page opens, so pressing Run starts training at once.
    loaded = get_teacher(teacher_spec.strip())
    st.caption(f"Teacher **{loaded.name}**: {loaded.num_layers} layers, "
               f"{loaded.num_parameters():,} parameters, vocabulary "
               f"{len(loaded.tokenizer)}, on {loaded.device}.")


def live_config(values: dict) -> DistillConfig:
    """The run's DistillConfig from the sidebar's mapping (empty teacher = bundled, 0
    examples = all, text stripped)."""
    values = dict(values)
    values["teacher"] = values["teacher"].strip() or None
    values["student"] = confine_model_spec(values["student"].strip(), "Student")
    values["data"] = confine_data(values["data"].strip())
    values["max_examples"] = int(values["max_examples"]) or None
    return DistillConfig.from_mapping(values)


def cache_eligible(config: DistillConfig) -> bool:
    """The dashboard caches the bundled teacher on bundled data (needs akl_core.SparseTeacher)."""
    import akl_core

    return (config.teacher in (None, "bundled") and config.data.startswith("bundled")
            and config.temperature == 1.0 and hasattr(akl_core, "SparseTeacher"))


def make_job(config: DistillConfig, teacher: object, save: bool, use_cache: bool = False):
    """The background job: run_experiment (student, run folder, training), records to emit.
    With `use_cache` (and an eligible config) the teacher's top-k come from a cache, built
    once."""

    def job(should_stop, info, emit):
        nonlocal config

        def progress(stage: str, done: int, total: int) -> None:
            info["stage"] = stage if total <= 0 else f"{stage}: {done}/{total}"

        if use_cache and cache_eligible(config):
            from dataclasses import replace

            from akl_core.lab import teacher_cache

            info["stage"] = "teacher cache (built once)"
            path = teacher_cache.ensure(teacher, config, progress=progress)
            config = replace(config, teacher_cache=str(path))

        def on_run(path) -> None:
            info["run_dir"] = str(path)
            info["run_name"] = path.name

        def on_record(record) -> None:
            info["stage"] = "training"
            emit(record)

        info["stage"] = f"building the student {config.student}"
        result = run_experiment(config, teacher=teacher, runs_dir=runs_root(),
                                save_student=save, evaluation=None, on_record=on_record,
                                should_stop=should_stop, progress=progress, on_run=on_run)
        info["student"] = result.student  # kept in memory for evaluation (Compare runs)
        info["stage"] = "done"

    return job


if stop_clicked and live is not None:
    live.stop()

if run_clicked:
    with show_errors("Cannot start"):
        config = live_config(settings)
        teacher = get_teacher(teacher_spec.strip())
        live = LiveRun(make_job(config, teacher, save_student, use_cache), total_steps=config.steps,
                       info={"loss": config.loss})
        st.session_state.live = live.start()
        st.session_state.live_polling = True
        st.rerun()  # redraw the sidebar with Run disabled and Stop enabled

# ----------------------------------------------------------------------------- live view


def history(records: list) -> dict:
    return {"step": [r.step for r in records], **{k: [getattr(r, k) for r in records]
                                                   for k in CURVE_KEYS}}


def draw_status(view: LiveView) -> None:
    done = len(view.records)
    last = view.records[-1] if view.records else None
    rate = f" · {last.tokens_per_second:,.0f} tokens/s" if last else ""
    text = f"step {done} / {view.total_steps}{rate} · {view.elapsed_s:.0f} s"
    st.progress(min(done / max(view.total_steps, 1), 1.0), text=text)
    stage = view.info.get("stage", "starting")
    if view.status == "error":
        st.error(f"Run failed: {view.error}")
    elif view.status == "stopped":
        st.warning(f"Stopped after {done} steps; every finished step is saved.")
    elif view.status == "finished":
        st.success(f"Finished {done} steps in {view.elapsed_s:.1f} s.")
    elif view.status == "stopping":
        st.info("Stopping after the current step...")
    else:
        st.caption(f"Status: {view.status} ({stage})")
    if view.first_step_s is not None:
        st.caption(f"First step after {view.first_step_s:.1f} s.")
    if "run_dir" in view.info:
        st.caption(f"Run folder (written step by step): `{view.info['run_dir']}`")


def draw_probe(view: LiveView, loss_name: str) -> None:
    probes = [r.probe for r in view.records if r.probe is not None]
    if not probes:
        st.caption("The per-token view appears at the first probe step.")
        return
    st.subheader("Per-token view of the probe example")
    c1, c2 = st.columns([2, 1])
    metric = c2.selectbox("Colour tokens by", list(TOKEN_METRICS), key="live_metric",
                          format_func=lambda m: TOKEN_METRICS[m].replace(
                              "the chosen loss", loss_name))
    steps_avail = [p.step for p in probes]
    if len(steps_avail) > 1:
        at = c2.select_slider("Probe at step", steps_avail, value=steps_avail[-1],
                              key=f"live_probe_step_{len(steps_avail)}")
    else:
        at = steps_avail[0]
    probe = probes[steps_avail.index(at)]
    values = getattr(probe, metric)
    lo, hi = FIXED_RANGE.get(metric, (None, None))
    hover = {k: getattr(probe, k) for k in ("w", "g_head", "g_tail", "head_size",
                                            "teacher_entropy", "loss_value")}
    pick = c2.selectbox(
        "Pick a token", range(len(probe.tokens)), key="live_token",
        format_func=lambda i: f"{i}: {probe.tokens[i]!r}",
    )
    with c1:
        st.caption(f"Prompt: {probe.prompt[:200]}  ·  step {probe.step}")
        st.html(token_strip_html(probe.tokens, values, metric=metric, hover=hover,
                                 selected=pick, lo=lo, hi=hi))
    if pick is not None and pick < len(probe.tokens):
        fig = viz.topk_figure(
            probe.teacher_topk[pick], probe.student_topk[pick],
            head_size=probe.head_size[pick],
            title=f"Position {pick} (next token {probe.tokens[pick]!r}): w = "
                  f"{probe.w[pick]:.3f}, g_head = {probe.g_head[pick]:.3f}, "
                  f"g_tail = {probe.g_tail[pick]:.3f}",
        )
        st.plotly_chart(fig, key="live_topk_chart")


def live_panel() -> None:
    run: LiveRun | None = st.session_state.get("live")
    if run is None:
        st.info("Pick a teacher, a student and a loss in the sidebar, then press **Run**.")
        return
    view = run.view()
    draw_status(view)
    if view.records:
        loss_name = view.info.get("loss", "loss")
        fig = viz.gap_curves({loss_name: history(view.records)}, keys=CURVE_KEYS,
                             title="Loss, head/tail gaps and mean AKL weight over steps")
        st.plotly_chart(fig, key="live_curves")
        draw_probe(view, loss_name)
    if not view.active and st.session_state.get("live_polling"):
        st.session_state.live_polling = False
        st.rerun()  # the run ended: redraw the whole page (buttons, polling off)


st.fragment(run_every=POLL_SECONDS if active else None)(live_panel)()
