"""Live distillation: a race of 2-4 losses from one student on common held-out metrics (the
default), or a single run with any loss, drawn step by step.

A race is akl_core.lab.race.run_race (every racer on the one engine, in lockstep, measured on
one fixed held-out batch after each step); a single run is akl_core.lab.experiment.
run_experiment. Either runs in a background thread per browser session (app/live_runner) and
writes its run folder(s) step by step; a st.fragment polls the thread's record buffer every
second while it runs, so the page stays responsive. Settings are kept across page navigation
(st.session_state) and locked while a run is active. Figures: akl_core.lab.viz.
"""

from __future__ import annotations

import math

import streamlit as st
from live_runner import LiveRun, LiveView
from ui_common import (
    cached_figure,
    cached_student,
    cached_teacher,
    confine_data,
    confine_model_spec,
    default_response_tokens,
    default_student_spec,
    default_teacher_spec,
    error_message,
    freeze_long_lived_objects,
    get_teacher,
    loss_names,
    loss_picker,
    page_setup,
    plotly_chart,
    runs_root,
    show_errors,
    token_view,
)

import akl_core
from akl_core.lab import viz
from akl_core.lab.distill import DistillConfig
from akl_core.lab.experiment import run_experiment
from akl_core.lab.race import (
    HeldOut,
    RaceStep,
    new_race_id,
    race_curves,
    rounds_done,
    run_race,
)

page_setup("Live distillation")

POLL_SECONDS = 0.5
RACE, SINGLE = "Race", "Single run"
# The quick lecture preset: a race of 3 whose first step shows within 5 s of Run and that
# finishes within 60 s on 2 quiet cores (benchmarks/bench_app_race.py).
PRESET = {"live_mode": RACE, "live_race_losses": ["fkl", "rkl", "akl"], "live_steps": 10,
          "live_batch": 2, "live_maxlen": 64, "live_lr": 5e-4, "live_probe_every": 5,
          "live_threads": "auto"}
DEFAULTS = {
    **PRESET,
    "live_teacher": default_teacher_spec(), "live_student": default_student_spec(),
    "live_kd_ratio": 1.0, "live_temperature": 1.0, "live_seed": 0, "live_topk": 10,
    "live_data": "bundled:train", "live_targets": "teacher",
    "live_response_tokens": default_response_tokens(), "live_max_examples": 0,
    "live_teacher_cache": True, "live_save_student": True, "live_taid_schedule": True,
}
THREAD_CHOICES = ["auto", 1, 2, 4, 8]
RACE_CURVES = ("kl_pq", "kl_qp", "head_acc", "g_head", "g_tail", "w")
SINGLE_CURVES = ("loss", "g_head", "g_tail", "w")
CURVE_RANGES = {"w": (0.0, 1.0), "head_acc": (0.0, 1.0)}
TOKEN_METRICS = {
    "w": "AKL weight w on FKL",
    "g_head": "head gap g_head",
    "g_tail": "tail gap g_tail",
    "head_size": "teacher head size |H|",
    "head_mass": "teacher head mass",
    "teacher_entropy": "teacher entropy",
    "student_entropy": "student entropy",
    "loss_value": "the racer's own loss per token",
    "fkl": "KL(p||q) per token",
    "rkl": "KL(q||p) per token",
}
# Fixed colour ranges of the token strip (other metrics: fixed over the whole run).
FIXED_RANGE = {"w": (0.0, 1.0), "g_head": (0.0, 2.0), "g_tail": (0.0, 2.0)}
KEPT = "live_kept_settings"


def _param_keys() -> set[str]:
    return {f"live_{n}_{p}" for n in loss_names() for p in akl_core.LOSSES[n].params}


def restore_settings() -> dict:
    """Put the kept settings (and the defaults) back into st.session_state before the widgets
    are drawn: Streamlit forgets widget values when the user visits another page."""
    kept = st.session_state.setdefault(KEPT, {})
    for key, value in {**DEFAULTS, **kept}.items():
        # re-set every run (Streamlit's documented way to keep widget values across pages)
        st.session_state[key] = st.session_state[key] if key in st.session_state else value
    return kept


def keep_settings(kept: dict) -> None:
    """Remember every setting widget's value for the next visit of the page."""
    names = set(DEFAULTS) | _param_keys() | {"live_loss"}
    kept.update({k: st.session_state[k] for k in names if k in st.session_state})


def apply_preset() -> None:
    """The quick lecture preset (a button callback: runs before the widgets are drawn)."""
    for key, value in PRESET.items():
        st.session_state[key] = value


kept = restore_settings()
live: LiveRun | None = st.session_state.get("live")
active = live is not None and live.view().active
settings: dict = {}  # DistillConfig field -> widget value: the run's config, in one mapping

# ----------------------------------------------------------------------------- sidebar
with st.sidebar:
    mode = st.radio("Mode", [RACE, SINGLE], key="live_mode", horizontal=True, disabled=active,
                    help="Race: 2-4 losses train the same student on the same batches, taking "
                         "turns step by step, measured on one fixed held-out batch. Single "
                         "run: one loss, its own training numbers.")
    c1, c2 = st.columns(2)
    run_clicked = c1.button("Run", type="primary", disabled=active, key="live_run",
                            use_container_width=True)
    stop_clicked = c2.button("Stop", disabled=not active, key="live_stop",
                             use_container_width=True)
    st.button("Quick lecture preset", key="live_preset", disabled=active, on_click=apply_preset,
              help="A race of FKL, RKL and AKL, 10 steps of 2 x 64 tokens: first step within "
                   "a few seconds, done within a minute on 2 cores.")
    if active:
        st.caption("Settings are locked while the run is active; press Stop to change them.")
    st.header("Loss" if mode == SINGLE else "Losses")
    race_losses: list[str] = []
    if mode == RACE:
        race_losses = st.multiselect(
            "Losses racing (2-4)", loss_names(), key="live_race_losses", max_selections=4,
            disabled=active, help="Each with its default parameters; one colour + dash each.")
    else:
        loss, loss_params = settings["loss"], settings["loss_params"] = loss_picker(
            key="live", container=st.sidebar, disabled=active)
        if loss == "taid" and st.checkbox("t from TAIDSchedule (ignore t above)",
                                          key="live_taid_schedule", disabled=active):
            loss_params.pop("t", None)
    st.header("Models")
    teacher_spec = settings["teacher"] = st.text_input(
        "Teacher", key="live_teacher", disabled=active,
        placeholder="bundled (SmolLM2-135M-Instruct)",
        help="Empty or 'bundled' = the embedded SmolLM2-135M-Instruct; or a hub name (needs a "
             "network) or a local model folder.",
    )
    settings["student"] = st.text_input(
        "Student", key="live_student", disabled=active,
        help="truncate:K = the teacher's first K layers; tiny = a fresh small model with the "
             "teacher's vocabulary; or a model name / folder sharing the teacher's tokenizer.",
    )
    st.header("Training")
    num = st.number_input
    settings["steps"] = num("Steps", min_value=1, max_value=100_000, key="live_steps",
                            disabled=active)
    settings["batch_size"] = num("Batch size", min_value=1, max_value=256, key="live_batch",
                                 disabled=active)
    settings["max_length"] = num("Max length (tokens)", min_value=8, max_value=4096,
                                 key="live_maxlen", disabled=active)
    settings["lr"] = num("Learning rate", min_value=0.0, max_value=1.0, step=1e-4,
                         format="%.1e", key="live_lr", disabled=active)
    threads = st.selectbox(
        "Torch threads", THREAD_CHOICES, key="live_threads", disabled=active,
        help="auto = every core, at most 4: on 2 cores, 2 threads beat 1 both on a quiet "
             "machine and beside two other torch jobs (measured). Pick 1 if another job "
             "must keep its speed.")
    with st.expander("More settings"):
        settings["kd_ratio"] = num("kd_ratio (KD weight; rest = LM loss)", min_value=0.0,
                                   max_value=1.0, step=0.1, key="live_kd_ratio",
                                   disabled=active)
        settings["temperature"] = num("Temperature", min_value=0.0, max_value=100.0, step=0.1,
                                      key="live_temperature", disabled=active)
        settings["seed"] = num("Seed", min_value=0, max_value=2**31 - 1, key="live_seed",
                               disabled=active)
        settings["probe_every"] = num("Probe every k steps (0 = never)", min_value=0,
                                      max_value=10_000, key="live_probe_every",
                                      disabled=active)
        settings["probe_topk"] = num("Top-k tokens in the probe", min_value=1, max_value=50,
                                     key="live_topk", disabled=active)
        settings["data"] = st.text_input(
            "Data", key="live_data", disabled=active,
            help="bundled:train / bundled:validation / bundled:test, or a Dolly-style JSONL "
                 "file path. A race measures on the first batch of bundled:validation (with "
                 "bundled data) or of this file.")
        settings["targets"] = st.selectbox(
            "Train on", ["teacher", "gold"], key="live_targets", disabled=active,
            help="teacher = the teacher's greedy responses (cached); gold = the data's "
                 "reference responses")
        settings["response_tokens"] = st.number_input(
            "Teacher response tokens", min_value=1, max_value=2048,
            key="live_response_tokens", disabled=active,
            help="Length bound of the teacher's greedy responses, generated once and cached. "
                 "The default matches the responses shipped for the bundled teacher and "
                 "prompts, so nothing is generated on a first run.")
        settings["max_examples"] = num("Max examples (0 = all)", min_value=0,
                                       max_value=100_000, key="live_max_examples",
                                       disabled=active)
        use_cache = st.checkbox(
            "Teacher cache", key="live_teacher_cache", disabled=active,
            help="With the bundled teacher on bundled data (temperature 1): its top-64 "
                 "log-probs are stored once (a few minutes, with a progress message) and "
                 "later runs read them instead of running the teacher.")
        save_student = st.checkbox(
            "Save the trained student in the run folder", key="live_save_student",
            disabled=active,
            help="Needed to evaluate the run later (Compare runs). A truncate:4 student of "
                 "the bundled teacher takes about 140 MB per run folder.")
keep_settings(kept)


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
    return (config.teacher in (None, "bundled") and config.data.startswith("bundled")
            and config.temperature == 1.0 and hasattr(akl_core, "SparseTeacher"))


def heldout_source(config: DistillConfig) -> str:
    """Where a race's fixed held-out batch comes from: bundled:validation for bundled data,
    else the data file itself (its first batch)."""
    return "bundled:validation" if config.data.startswith("bundled") else config.data


@st.cache_resource(show_spinner=False, max_entries=2)
def cached_heldout(teacher_spec: str, source: str, config_json: str) -> HeldOut:
    """A race's held-out batch (one teacher pass), built once per teacher, source and the
    settings it depends on (`config_json`: see race_inputs); read-only, shared."""
    import json

    config = DistillConfig.from_mapping(json.loads(config_json))
    teacher = cached_teacher(confine_model_spec(teacher_spec, "Teacher"))
    return HeldOut.build(teacher, config, source=source)


def race_inputs(config: DistillConfig, teacher_spec: str) -> dict:
    """{"heldout": HeldOut, "student": untrained student} of a race with `config`, built when
    the page is drawn (cached) so that Run starts training at once: on 2 busy cores they took
    ~0.9 s of the first step. {} when they cannot be built; Run then builds them itself and
    reports what is wrong."""
    import json
    from dataclasses import replace

    needs = replace(DistillConfig(), teacher=config.teacher, targets=config.targets,
                    response_tokens=config.response_tokens, batch_size=config.batch_size,
                    max_length=config.max_length, temperature=config.temperature)
    try:
        heldout = cached_heldout(teacher_spec, heldout_source(config),
                                 json.dumps(needs.to_dict(), sort_keys=True))
        student = cached_student(teacher_spec, config.student, config.seed)
    except Exception:  # noqa: BLE001 - Run reports it with the run's own error handling
        return {}
    return {"heldout": heldout, "student": student}


def describe(config: DistillConfig, mode: str, losses: list[str], threads: object) -> str:
    """One line naming a run's settings (the header above its results)."""
    what = (" vs ".join(losses) if mode == RACE else
            f"{config.loss} {config.loss_params}" if config.loss_params else config.loss)
    return (f"{'Race' if mode == RACE else 'Single run'}: **{what}** · student "
            f"`{config.student}` · {config.steps} steps of {config.batch_size} x "
            f"{config.max_length} tokens · lr {config.lr:g} · seed {config.seed} · "
            f"threads {threads}")


def probe_truncated(config: DistillConfig, teacher: object) -> bool:
    """Whether the probe example's response is cut by max_length (the strip shows a prefix)."""
    from akl_core.lab import data, engine

    ex = engine.load_examples(config)[:1]
    resp = engine.training_responses(config, teacher, ex)
    full = data.tokenize_for_kd(teacher.tokenizer, ex, resp, max_length=1_000_000)
    cut = data.tokenize_for_kd(teacher.tokenizer, ex, resp, max_length=config.max_length)
    return int((cut["labels"] != -100).sum()) < int((full["labels"] != -100).sum())


def make_job(config: DistillConfig, teacher: object, save: bool, use_cache: bool = False, *,
             mode: str = SINGLE, losses: list[str] | None = None, threads: object = "auto",
             prepared: dict | None = None):
    """The background job: a race (run_race) or a single run (run_experiment); records to
    emit (RaceStep or StepRecord). With `use_cache` (and an eligible config) the teacher's
    top-k come from a cache, built once. `prepared`: race_inputs (held-out batch, student)."""

    def job(should_stop, info, emit):
        nonlocal config
        import torch

        from akl_core.lab.race import resolve_threads

        def progress(stage: str, done: int, total: int) -> None:
            info["stage"] = stage if total <= 0 else f"{stage}: {done}/{total}"

        freeze_long_lived_objects()
        info["threads"] = n = resolve_threads(threads)
        torch.set_num_threads(n)
        if use_cache and cache_eligible(config):
            from dataclasses import replace

            from akl_core.lab import teacher_cache

            info["stage"] = "teacher cache (built once)"
            path = teacher_cache.ensure(teacher, config, progress=progress)
            config = replace(config, teacher_cache=str(path))
        try:
            info["probe_truncated"] = probe_truncated(config, teacher)
        except Exception:  # noqa: BLE001 - only a label; the run reports real problems
            info["probe_truncated"] = None

        def on_record(record) -> None:
            info["stage"] = "training"
            emit(record)

        if mode == RACE:
            def on_run(label, path) -> None:
                info.setdefault("run_dirs", {})[label] = str(path)
                info["run_dir"] = str(path.parent)

            def on_error(label, message) -> None:  # shown at once; the others go on
                info["racer_errors"] = {**info.get("racer_errors", {}), label: message}

            result = run_race(losses, config, teacher=teacher, runs_dir=runs_root(),
                              save_student=save, on_step=on_record, should_stop=should_stop,
                              threads=n, heldout_source=heldout_source(config),
                              race_id=info.get("race_id"),
                              progress=progress, on_run=on_run, on_error=on_error,
                              **(prepared or {}))
            info["students"] = {r.spec.name: r.student for r in result.racers}
            failed = {r.spec.name: r.error for r in result.racers if r.error}
            info["racer_errors"] = failed
            if len(failed) == len(result.racers):
                raise ValueError(next(iter(failed.values())))
        else:
            def on_run(path) -> None:
                info["run_dir"] = str(path)
                info["run_name"] = path.name

            info["stage"] = f"building the student {config.student}"
            result = run_experiment(config, teacher=teacher, runs_dir=runs_root(),
                                    save_student=save, evaluation=None, on_record=on_record,
                                    should_stop=should_stop, progress=progress, on_run=on_run)
            info["student"] = result.student  # kept in memory for evaluation (Compare runs)
        info["stage"] = "done"

    return job


if stop_clicked and live is not None:
    live.stop()

prepared: dict = {}
if mode == RACE and not active:
    try:
        prepared = race_inputs(live_config({**settings, "loss": "akl", "loss_params": {}}),
                               teacher_spec.strip())
    except Exception:  # noqa: BLE001 - bad settings: Run says what is wrong
        prepared = {}

if run_clicked:
    st.session_state.pop("live", None)  # a new run: the last run's messages go
    st.session_state.pop("live_start_error", None)
    try:
        config = live_config({**settings, **({"loss": "akl", "loss_params": {}}
                                             if mode == RACE else {})})
        if mode == RACE:
            from akl_core.lab.race import parse_racers

            parse_racers(list(race_losses))
        teacher = get_teacher(teacher_spec.strip())
        info = {"loss": config.loss, "mode": mode, "losses": list(race_losses),
                "header": describe(config, mode, list(race_losses), threads),
                "max_length": config.max_length, "race_id": new_race_id()}
        live = LiveRun(make_job(config, teacher, save_student, use_cache, mode=mode,
                                losses=list(race_losses), threads=threads,
                                prepared=prepared if mode == RACE else None),
                       total_steps=config.steps, info=info)
        st.session_state.live = live.start()
        st.session_state.live_polling = True
        st.rerun()  # redraw the sidebar locked, with Stop enabled
    except Exception as exc:  # noqa: BLE001 - shown until the next Run
        st.session_state.live_start_error = f"Cannot start: {error_message(exc)}"

if st.session_state.get("live_start_error"):
    st.error(st.session_state.live_start_error)

# ----------------------------------------------------------------------------- live view


def racer_steps(view: LiveView) -> dict[str, list[RaceStep]]:
    """{racer label: its RaceSteps} in the race's order."""
    out: dict[str, list[RaceStep]] = {label: [] for label in view.info.get("losses", [])}
    for step in view.records:
        out.setdefault(step.racer, []).append(step)
    return out


def single_history(records: list) -> dict:
    return {"step": [r.step for r in records], **{k: [getattr(r, k) for r in records]
                                                   for k in SINGLE_CURVES}}


def timing(view: LiveView, racers: int) -> tuple[float | None, float | None]:
    """(seconds per step, seconds left): a step = every racer's step (race); from the mean
    of the last few records' step + measure times."""
    recent = view.records[-6 * racers:]
    if not recent:
        return None, None
    each = [getattr(r, "step_time", 0.0) + getattr(r, "measure_time", 0.0) for r in recent]
    per_step = sum(each) / len(each) * racers
    done = len(view.records) / racers
    return per_step, max(view.total_steps - done, 0.0) * per_step


def draw_status(view: LiveView) -> None:
    race = view.info.get("mode") == RACE
    racers = max(len(view.info.get("losses", [])), 1) if race else 1
    done = (rounds_done(racer_steps(view), view.info.get("racer_errors", {})) if race
            else len(view.records))
    per_step, left = timing(view, racers)
    text = f"step {done} / {view.total_steps}"
    if per_step is not None:
        text += f" · {per_step:.1f} s per step"
        if view.active:
            text += f" · about {left:.0f} s left"
    text += f" · {view.elapsed_s:.0f} s"
    st.progress(min(len(view.records) / max(view.total_steps * racers, 1), 1.0), text=text)
    stage = view.info.get("stage", "starting")
    if view.status == "error":
        st.error(f"Run failed: {view.error}")
    elif view.status == "stopped":
        st.warning(f"Stopped after {done} steps; every finished step is saved.")
    elif view.status == "finished":
        st.success(f"Finished {done} steps in {view.elapsed_s:.1f} s.")
    elif view.status == "stopping":
        st.info("Stopping (within one forward/backward)...")
    else:
        st.caption(f"Status: {view.status} ({stage})")
    for label, err in view.info.get("racer_errors", {}).items():
        st.error(f"Racer {label} failed: {err}")
    notes = []
    if view.first_step_s is not None:
        notes.append(f"first step after {view.first_step_s:.1f} s")
    if "threads" in view.info:
        notes.append(f"{view.info['threads']} torch thread(s)")
    if race and "run_dir" in view.info:
        notes.append(f"Run folders (written step by step): `{view.info['run_dir']}/"
                     f"{view.info.get('race_id', 'race')}-*`")
    elif "run_dir" in view.info:
        notes.append(f"Run folder (written step by step): `{view.info['run_dir']}`")
    if notes:
        st.caption(" · ".join(notes))


HOVER_METRICS = ("w", "g_head", "g_tail", "head_size", "head_mass", "teacher_entropy",
                 "student_entropy", "loss_value", "fkl", "rkl")


def draw_tokens(probe, metric: str, zrange: tuple[float, float] | None, label: str) -> None:
    """The clickable per-token view and the top-k bars of one probe: the one place this page
    draws them. Both figures are rebuilt only when they change (the page polls twice a second)."""
    metrics = {k: getattr(probe, k) for k in HOVER_METRICS if getattr(probe, k) is not None}
    pick = token_view(probe.tokens, metrics, metric, key="live", pick_key="live_token",
                      zrange=zrange)
    sig = (label, probe.step, pick)
    fig = cached_figure("live_topk", sig, lambda: viz.topk_figure(
        probe.teacher_topk[pick], probe.student_topk[pick], head_size=probe.head_size[pick],
        title=f"{label}, position {pick} (next token {viz.cell_token(probe.tokens[pick])!r}): "
              f"w = {probe.w[pick]:.3f}, g_head = {probe.g_head[pick]:.3f}, "
              f"g_tail = {probe.g_tail[pick]:.3f}"))
    plotly_chart(fig, key="live_topk_chart")


def draw_probe(view: LiveView, probes_by_racer: dict[str, list]) -> None:
    probes_by_racer = {k: v for k, v in probes_by_racer.items() if v}
    if not probes_by_racer:
        st.caption("The per-token view appears at the first probe step.")
        return
    st.subheader("Per-token view of the probe example")
    c1, c2 = st.columns([2, 1])
    labels = list(probes_by_racer)
    label = labels[0]
    if len(labels) > 1:
        label = c2.selectbox("Racer", labels, key="live_racer",
                             help="Whose student the tokens and the bars show.")
    probes = probes_by_racer[label]
    metric = c2.selectbox("Colour tokens by", list(TOKEN_METRICS), key="live_metric",
                          format_func=lambda m: TOKEN_METRICS[m].replace(
                              "the racer's own loss", f"{label}'s loss"))
    steps_avail = [p.step for p in probes]
    if len(steps_avail) > 1:
        at = c2.select_slider("Probe at step", steps_avail, value=steps_avail[-1],
                              key=f"live_probe_step_{len(steps_avail)}")
    else:
        at = steps_avail[0]
    probe = probes[steps_avail.index(at)]
    if metric in FIXED_RANGE:
        zrange = FIXED_RANGE[metric]
    else:  # fixed over the run: every probe of every racer
        vals = [float(v) for ps in probes_by_racer.values() for p in ps
                for v in getattr(p, metric) if math.isfinite(float(v))]
        zrange = (min(vals), max(vals)) if vals and max(vals) > min(vals) else None
    with c1:
        st.markdown(f"**Prompt** (example {probe.example_id}, {label} at step {probe.step}):")
        st.text(probe.prompt)
        cut = view.info.get("probe_truncated")
        if cut:
            st.caption(f"Response cut at max length {view.info.get('max_length')} tokens: "
                       "the tokens show its first part only (…).")
        draw_tokens(probe, metric, zrange, label)


RACE_TITLE = "Common metrics on one fixed held-out batch, after each step"
SINGLE_TITLE = "Training loss, head/tail gaps and mean AKL weight (its own batches)"


def curve_figures(run: LiveRun, view: LiveView) -> list:
    """[(key, figure)] of the run's curves, rebuilt only when they change: a race's once per
    lockstep round (every racer one step further, and at the end), a single run's per step.
    Each rebuilt chart costs the browser ~0.3 s of CPU to redraw (measured in headless
    Chromium), taken from the training on a laptop; unchanged charts cost nothing. Drawing
    the first racer's point at once (and the probe view with it) delayed the end of round 1
    by ~2 s on 2 cores (benchmarks/bench_app_race.py: first step 6.2-6.7 s, now 4.4-4.6 s)."""
    race = view.info.get("mode") == RACE
    steps = racer_steps(view) if race else {}
    done = rounds_done(steps, view.info.get("racer_errors", {}))
    whole = not view.active
    sig = (id(run), race, -1 - len(view.records) if whole or not race else done)

    def build() -> list:
        if not view.records:
            labels = view.info.get("losses", []) if race else [view.info.get("loss", "loss")]
            return [("live_curves", waiting_figure(race, labels, view.total_steps))]
        if not race:
            return [("live_curves", viz.step_panels(
                {view.info.get("loss", "loss"): single_history(view.records)}, SINGLE_CURVES,
                cols=4, last_step=view.total_steps, y_ranges={"w": (0.0, 1.0)},
                title=SINGLE_TITLE))]
        curves = race_curves({k: v if whole else v[:done] for k, v in steps.items()})
        return [("live_curves", viz.step_panels(
                    curves, RACE_CURVES, cols=3, last_step=view.total_steps,
                    y_ranges=CURVE_RANGES, title=RACE_TITLE)),
                ("live_own_curves", viz.step_panels(
                    curves, ("own_loss", "train_loss"), cols=2, last_step=view.total_steps,
                    title="Each loss's own value (not comparable across losses)",
                    height_per_row=220))]

    return cached_figure("live_curves", sig, build)


def waiting_figure(race: bool, losses: list[str], steps: int):
    """The run's empty curve panels, drawn before its first step. Besides telling what will
    be plotted, it makes the browser load plotly.js with the page instead of at the first
    step (that load took ~8 s of the first step's display on a busy 2-core machine)."""
    labels = tuple(label for label in losses if label) or ("fkl", "rkl", "akl")
    keys = RACE_CURVES if race else SINGLE_CURVES
    title = (RACE_TITLE if race else SINGLE_TITLE) + " (waiting for the first step)"
    return cached_figure("live_waiting", (race, labels, steps), lambda: viz.step_panels(
        {label: {"step": [], **{k: [] for k in keys}} for label in labels}, keys,
        cols=3 if race else 4, last_step=max(int(steps), 1),
        y_ranges=CURVE_RANGES if race else {"w": (0.0, 1.0)}, title=title))


def live_panel() -> None:
    run: LiveRun | None = st.session_state.get("live")
    if run is None:
        st.info("Pick the losses to race (or a single loss) in the sidebar, then press "
                "**Run** at its top. The quick lecture preset races FKL, RKL and AKL.")
        plotly_chart(waiting_figure(mode == RACE,
                                    list(race_losses) if mode == RACE else [settings["loss"]],
                                    int(settings.get("steps") or 1)),
                     key="live_curves")
        return
    view = run.view()
    header = view.info.get("header")
    if header:
        st.markdown(("Running: " if view.active else "Last run: ") + header)
    draw_status(view)
    for key, fig in curve_figures(run, view):
        plotly_chart(fig, key=key)
    if view.records and view.info.get("mode") == RACE:
        steps = racer_steps(view)
        done = rounds_done(steps, view.info.get("racer_errors", {}))
        # the probe view follows one poll after the curves of round 1: the browser draws the
        # step count and curves first instead of four charts at once (~0.6 s sooner)
        drawn = st.session_state.get("live_rounds_drawn")
        st.session_state.live_rounds_drawn = (id(run), done)
        if view.active and (done == 0 or drawn is None or drawn[0] != id(run) or drawn[1] == 0):
            return
        draw_probe(view, {k: [s.record.probe for s in v if s.record.probe is not None]
                          for k, v in steps.items()})
    elif view.records:
        loss_name = view.info.get("loss", "loss")
        draw_probe(view, {loss_name: [r.probe for r in view.records if r.probe is not None]})
    if not view.active and st.session_state.get("live_polling"):
        st.session_state.live_polling = False
        st.rerun()  # the run ended: redraw the whole page (buttons, polling off)


st.fragment(run_every=POLL_SECONDS if active else None)(live_panel)()
