"""Streamlit AppTest tests of every dashboard page, on small random models (no real LLM).

The app reads its defaults from environment variables (AKL_APP_TEACHER, AKL_APP_STUDENT,
AKL_APP_RUNS_DIR); here they point at a small teacher saved to a temporary folder, so every
page runs in seconds. Live runs train on a small JSONL file with gold responses.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

import akl_core  # noqa: E402
from akl_core.lab import viz  # noqa: E402
from tests.small_lm import examples, save_bundle, small_teacher, write_jsonl  # noqa: E402

APP = Path(__file__).resolve().parents[1] / "app" / "Home.py"
TIMEOUT = 120


@pytest.fixture(scope="module")
def app_env(tmp_path_factory):
    """A saved small teacher, a gold JSONL file and empty runs/cache folders, set in the env."""
    base = tmp_path_factory.mktemp("app")
    teacher_dir = save_bundle(small_teacher(), base / "teacher")
    data = write_jsonl(base / "train.jsonl", examples(8))
    env = {
        "AKL_APP_TEACHER": str(teacher_dir),
        "AKL_APP_STUDENT": "truncate:1",
        "AKL_APP_RUNS_DIR": str(base / "runs"),
        "AKL_CACHE_DIR": str(base / "cache"),
        "AKL_ALLOWED_DIRS": str(base),  # paths typed into pages must be in allowed folders
    }
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        yield {"teacher": teacher_dir, "data": data, "runs": base / "runs", "base": base}


def open_page(page: str | None = None) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    assert not at.exception, at.exception
    if page is not None:
        at.switch_page(f"pages/{page}").run()
        assert not at.exception, at.exception
    return at


def errors(at: AppTest) -> list[str]:
    return [e.value for e in at.error]


def set_live(at: AppTest, data: Path, mode: str = "Single run", **values) -> None:
    """Small live-run settings: gold JSONL data, short sequences, a probe every step; a single
    run unless `mode` says "Race"."""
    at.radio(key="live_mode").set_value(mode).run()
    defaults = {"live_steps": 3, "live_batch": 2, "live_maxlen": 48, "live_probe_every": 1,
                "live_topk": 5}
    for key, value in {**defaults, **values}.items():
        at.number_input(key=key).set_value(value)
    at.text_input(key="live_data").input(str(data))
    at.selectbox(key="live_targets").select("gold")


def wait_for_run(at: AppTest, *, min_records: int | None = None) -> None:
    """Rerun the page while the background run works, until it ends (or has min_records)."""
    live = at.session_state["live"]
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        view = live.view()
        if not view.active or (min_records is not None and len(view.records) >= min_records):
            break
        live.join(0.3)
        at.run()  # the page redraws while the run works
        assert not at.exception, at.exception
    at.run()
    assert not at.exception, at.exception


def run_lines(path: Path, name: str) -> list[dict]:
    return [json.loads(line) for line in (path / name).read_text().splitlines() if line.strip()]


# ----------------------------------------------------------------------------------------- home


def test_home_links_every_page(app_env):
    at = open_page()
    text = " ".join(m.value for m in at.markdown)
    assert "Adaptive KL" in text
    links = [el.proto.page for el in at.get("page_link")]
    assert links == ["Live_distillation", "Toy_lab", "Compare_runs", "Token_inspector"]


# ----------------------------------------------------------------------------- live: widgets


@pytest.mark.parametrize("loss", list(akl_core.LOSSES))
def test_live_sidebar_widgets_follow_the_registry(app_env, loss):
    at = open_page("1_Live_distillation.py")
    at.radio(key="live_mode").set_value("Single run").run()
    at.selectbox(key="live_loss").select(loss).run()
    assert not at.exception
    spec = akl_core.LOSSES[loss]
    for name, pspec in spec.params.items():
        key = f"live_{loss}_{name}"
        if pspec.choices is not None and isinstance(pspec.choices[0], bool):
            widget = at.checkbox(key=key)
            assert widget.value is pspec.default
        elif pspec.choices is not None:
            widget = at.selectbox(key=key)
            assert widget.options == [str(c) for c in pspec.choices]
            assert widget.value == pspec.default
        else:
            widget = at.number_input(key=key)
            assert widget.min == pspec.low and widget.max == pspec.high
            assert widget.value == pytest.approx(pspec.default)
    assert at.text_input(key="live_teacher").value == str(app_env["teacher"])
    assert at.text_input(key="live_student").value == "truncate:1"


# ------------------------------------------------------------------------------- live: runs


def test_pages_turn_off_streamlits_gc_after_every_rerun(app_env):
    # a full gc.collect(2) per rerun stalled the training threads of a live run (see
    # ui_common.no_gc_after_reruns); every page turns it off, however the app was started
    from streamlit import config

    config.set_option("runner.postScriptGC", True)
    at = open_page("1_Live_distillation.py")
    assert not at.exception
    assert config.get_option("runner.postScriptGC") is False


def test_live_run_completes_draws_and_writes_the_run_folder(app_env):
    at = open_page("1_Live_distillation.py")
    set_live(at, app_env["data"])
    at.run()
    # before Run: the single run's own empty panels, named by its loss (not the race's)
    waiting = chart(at, "waiting for the first step")
    assert waiting["layout"]["title"]["text"].startswith("Training loss, head/tail gaps")
    assert {t["name"] for t in waiting["data"]} == {at.selectbox(key="live_loss").value}
    at.button(key="live_run").click().run()
    assert not at.exception and not errors(at)
    wait_for_run(at)
    view = at.session_state["live"].view()
    assert view.status == "finished", view.error
    assert [r.step for r in view.records] == [1, 2, 3]
    assert any("Finished 3 steps" in s.value for s in at.success)
    # curves, the clickable token view (one cell per probe token, every metric on hover) and
    # the top-k bars of the picked token
    assert len(at.get("plotly_chart")) == 3
    probe = view.records[-1].probe
    tokens = chart(at, "Tokens coloured by")
    assert len(tokens["data"][0]["text"]) == len(probe.tokens) > 0
    for name in ("g_head", "g_tail", "head_size", "teacher_entropy"):
        assert name in tokens["data"][0]["hovertemplate"], name
    assert (tokens["data"][-1]["marker"]["cmin"], tokens["data"][-1]["marker"]["cmax"]) == (0, 1)
    # switching the colouring metric and picking a token redraw the view
    at.selectbox(key="live_metric").select("g_head").run()
    bar = chart(at, "Tokens coloured by")["data"][-1]["marker"]
    assert (bar["cmin"], bar["cmax"]) == (0.0, 2.0)
    at.selectbox(key="live_token").select(1).run()
    widths = chart(at, "Tokens coloured by")["data"][0]["marker"]["line"]["width"]
    assert widths[1] == 4 and sum(widths) == 4
    assert chart(at, "position 1 (next token")
    assert not at.exception
    # the run folder holds every step, the probes, the config and a summary
    run_dir = Path(view.info["run_dir"])
    assert run_dir.parent == app_env["runs"]
    steps = run_lines(run_dir, "steps.jsonl")
    assert [s["step"] for s in steps] == [1, 2, 3]
    assert steps[-1]["loss"] == pytest.approx(view.records[-1].loss)
    assert len(run_lines(run_dir, "probes.jsonl")) == 3
    assert json.loads((run_dir / "config.json").read_text())["loss"] == "akl"
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "finished"
    # buttons are back to idle
    assert not at.button(key="live_run").disabled and at.button(key="live_stop").disabled


def test_live_stop_keeps_the_finished_steps(app_env):
    at = open_page("1_Live_distillation.py")
    set_live(at, app_env["data"], live_steps=500, live_probe_every=0)
    at.button(key="live_run").click().run()
    wait_for_run(at, min_records=2)
    assert at.button(key="live_stop").disabled is False
    at.button(key="live_stop").click().run()
    wait_for_run(at)
    view = at.session_state["live"].view()
    assert view.status == "stopped"
    assert 2 <= len(view.records) < 500
    assert any("Stopped after" in w.value for w in at.warning)
    run_dir = Path(view.info["run_dir"])
    assert len(run_lines(run_dir, "steps.jsonl")) == len(view.records)
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "stopped"


def test_two_sessions_train_without_touching_each_other(app_env):
    a, b = open_page("1_Live_distillation.py"), open_page("1_Live_distillation.py")
    set_live(a, app_env["data"], live_steps=2, live_seed=1)
    set_live(b, app_env["data"], live_steps=3, live_seed=2)
    b.selectbox(key="live_loss").select("rkl")
    a.button(key="live_run").click().run()
    b.button(key="live_run").click().run()
    wait_for_run(a)
    wait_for_run(b)
    va, vb = a.session_state["live"].view(), b.session_state["live"].view()
    assert (va.status, vb.status) == ("finished", "finished")
    assert va.info["run_dir"] != vb.info["run_dir"]
    for view, loss, n in ((va, "akl", 2), (vb, "rkl", 3)):
        run_dir = Path(view.info["run_dir"])
        assert [s["step"] for s in run_lines(run_dir, "steps.jsonl")] == list(range(1, n + 1))
        assert json.loads((run_dir / "config.json").read_text())["loss"] == loss


@pytest.mark.parametrize(
    ("widget", "key", "value", "message"),
    [
        ("text_input", "live_teacher", "{base}/no/such/model/folder", "model folder not found"),
        ("text_input", "live_data", "{base}/no/such/file.jsonl", "no such JSONL file"),
        ("number_input", "live_lr", 0.0, "lr must be in"),
        ("number_input", "live_akl_mu", 0.0, "mu must be in (0, 0.9999]"),
    ],
)
def test_live_bad_input_shows_an_error(app_env, widget, key, value, message):
    at = open_page("1_Live_distillation.py")
    set_live(at, app_env["data"])
    if isinstance(value, str):
        value = value.format(base=app_env["base"])
    getattr(at, widget)(key=key).set_value(value)
    at.button(key="live_run").click().run()
    assert not at.exception
    assert any(message in e for e in errors(at)), errors(at)
    assert "live" not in at.session_state


@pytest.fixture(scope="module")
def other_tokenizer_model(app_env):
    """A model folder whose tokenizer differs from the teacher's (500 instead of 1000 tokens)."""
    from akl_core.lab.models import ModelBundle
    from tests.small_lm import small_model, small_tokenizer

    tok = small_tokenizer(500)
    bundle = ModelBundle(small_model(len(tok)), tok, "other", None)
    return save_bundle(bundle, app_env["base"] / "other_tokenizer")


@pytest.mark.parametrize("student", ["truncate:99", "other-tokenizer"])
def test_live_bad_student_fails_in_the_page(app_env, other_tokenizer_model, student):
    at = open_page("1_Live_distillation.py")
    set_live(at, app_env["data"])
    spec = str(other_tokenizer_model) if student == "other-tokenizer" else student
    at.text_input(key="live_student").input(spec)
    at.button(key="live_run").click().run()
    wait_for_run(at)
    assert not at.exception
    assert at.session_state["live"].view().status == "error"
    message = ("truncate:K needs 1 <= K <= 2" if student == "truncate:99"
               else "do not share a tokenizer")
    assert any(message in e for e in errors(at)), errors(at)
    assert not at.button(key="live_run").disabled  # the page keeps working


# ------------------------------------------------------------------------------------ toy lab


def none_texts(at: AppTest) -> list[str]:
    """Text elements that print a bare None (e.g. magic writing a call's None result)."""
    found = []
    for kind in ("markdown", "text", "caption", "code", "json"):
        for el in at.get(kind):
            value = str(getattr(el, "value", "") or "")
            if value.strip("` \n") == "None":
                found.append(f"{kind}: {value}")
    return found


def test_toy_lab_trains_and_draws(app_env):
    at = open_page("2_Toy_lab.py")
    assert not errors(at) and not none_texts(at)
    mu = at.number_input(key="toy_mu")
    assert (mu.min, mu.max, mu.value) == (0.0, 1.0, 0.5)
    assert at.multiselect(key="toy_losses").value == ["fkl", "rkl", "akl"]
    assert len(at.get("plotly_chart")) == 4
    # default: Fig. 2 bimodal, 200 steps; both FKL and RKL converge (KL(p||q) < 1e-3)
    table = {row["loss"]: row for row in at.dataframe[0].value.to_dict("records")}
    assert table["fkl"]["final KL(p||q)"] < 1e-3 and table["rkl"]["final KL(p||q)"] < 1e-3
    assert all(row["final KL(p||q)"] >= 0 for row in table.values())  # clamped, never -6e-8
    # custom-mixture fields only for a custom mixture
    assert "toy_weights" not in [w.key for w in at.text_input]
    # what to notice, computed from the run at the selected step (10)
    notice = at.info[0].value
    head = min(table, key=lambda n: table[n]["g_head"])
    assert f"At step 10, **{head}** has the smallest head gap" in notice
    # the selected step is marked on the three time-series figures; log axes say 10^k
    for title in ("Head and tail gaps", "KL(p||q) (forward) between", "AKL weight w on FKL over"):
        (line,) = chart(at, title)["layout"]["shapes"][-1:]
        assert line["x0"] == line["x1"] == 10, title
    kl = chart(at, "KL(p||q) (forward) between")
    assert kl["layout"]["yaxis"]["type"] == "log"
    assert kl["layout"]["yaxis"]["exponentformat"] == "power"
    assert min(min(values(tr["y"])) for tr in kl["data"]) >= 1e-12  # plotting floor
    at.slider(key="toy_step_200").set_value(0).run()
    step0 = {row["loss"]: row for row in at.dataframe[0].value.to_dict("records")}
    assert step0["fkl"]["KL(p||q) at step"] > 100 * table["fkl"]["final KL(p||q)"]
    line = chart(at, "Head and tail gaps")["layout"]["shapes"][-1]
    assert line["x0"] == 0
    assert "At step 0," in at.info[0].value


def test_toy_lab_presets_apply_the_paper_settings(app_env):
    at = open_page("2_Toy_lab.py")
    assert (at.number_input(key="toy_lr").value, at.number_input(key="toy_steps").value) == \
        (0.1, 200)
    at.multiselect(key="toy_losses").set_value(["fkl"])  # one loss: a faster test
    at.button(key="FormSubmitter:toy_form-Run toy experiment").click().run()
    at.selectbox(key="toy_target").select("fig3_long_tail").run()
    assert not at.exception and not errors(at)
    paper = {"lr": 0.2, "steps": 300, "seed": 1}  # PAPER.md, Fig. 3
    assert at.number_input(key="toy_lr").value == pytest.approx(paper["lr"])
    assert at.number_input(key="toy_steps").value == paper["steps"]
    assert at.number_input(key="toy_seed").value == paper["seed"]
    assert any("lr 0.2, 300 steps" in c.value for c in at.caption)
    assert at.get("slider")[0].max == 300  # the page ran with the preset's settings
    at.selectbox(key="toy_target").select("fig2_unimodal").run()
    assert at.number_input(key="toy_lr").value == pytest.approx(0.1)
    assert at.number_input(key="toy_steps").value == 200


def test_toy_lab_classic_demo_offers_akl_and_follows_the_sidebar(app_env):
    at = open_page("2_Toy_lab.py")
    at.radio(key="toy_view").set_value("Classic one-Gaussian demo").run()
    assert not at.exception and not errors(at) and not none_texts(at)
    assert len(at.get("plotly_chart")) == 1
    # only the controls the demo uses: no bins, target or mu
    keys = {w.key for w in [*at.number_input, *at.selectbox, *at.text_input]}
    assert not keys & {"toy_mu", "toy_target", "toy_bins"}
    assert at.multiselect(key="toy_classic_losses").value == ["fkl", "rkl", "akl"]
    fits = {r["loss"]: r for r in at.dataframe[0].value.to_dict("records")}
    assert set(fits) == {"fkl", "rkl", "akl"}
    assert fits["fkl"]["std"] > 2 * fits["rkl"]["std"]  # FKL spreads, RKL locks onto a mode
    notice = at.info[0].value
    assert "**fkl** spreads over both modes" in notice and "**rkl** locks onto" in notice
    # the sidebar's steps are used: 3 steps barely move the start (std 0.8)
    at.number_input(key="toy_classic_steps").set_value(3)
    at.multiselect(key="toy_classic_losses").set_value(["fkl"])
    at.button(key="FormSubmitter:toy_classic_form-Fit the Gaussians").click().run()
    fits = {r["loss"]: r for r in at.dataframe[0].value.to_dict("records")}
    assert list(fits) == ["fkl"] and fits["fkl"]["std"] < 1.0


def test_toy_lab_custom_mixture_and_bad_input(app_env):
    at = open_page("2_Toy_lab.py")
    at.selectbox(key="toy_target").select("custom mixture").run()  # shows the mixture fields
    assert {"toy_weights", "toy_means", "toy_stds"} <= {w.key for w in at.text_input}
    at.number_input(key="toy_steps").set_value(20)
    at.text_input(key="toy_weights").input("1, x")
    at.button(key="FormSubmitter:toy_form-Run toy experiment").click().run()
    assert not at.exception
    assert any("weights" in e for e in errors(at)), errors(at)
    at.text_input(key="toy_weights").input("0.7, 0.3")
    at.multiselect(key="toy_losses").set_value([])
    at.button(key="FormSubmitter:toy_form-Run toy experiment").click().run()
    assert any("pick at least one loss" in e for e in errors(at))
    at.multiselect(key="toy_losses").set_value(["akl"])
    at.button(key="FormSubmitter:toy_form-Run toy experiment").click().run()
    assert not at.exception and not errors(at) and not none_texts(at)
    assert len(at.get("plotly_chart")) == 4


# ------------------------------------------------------------------------- token inspector


def charts(at: AppTest) -> dict[str, dict]:
    """The page's plotly figures as dicts, by title text (Streamlit sends each as JSON)."""
    out = {}
    for el in at.get("plotly_chart"):
        fig = json.loads(el.proto.spec)
        out[fig["layout"].get("title", {}).get("text", "")] = fig
    return out


def values(array) -> list:
    """A plotly JSON array as a list (numpy arrays travel as {'dtype', 'bdata'})."""
    import base64

    import numpy as np

    if isinstance(array, dict) and "bdata" in array:
        return np.frombuffer(base64.b64decode(array["bdata"]), dtype=array["dtype"]).tolist()
    return list(array)


def chart(at: AppTest, title_part: str) -> dict:
    found = [f for t, f in charts(at).items() if title_part in t]
    assert len(found) == 1, (title_part, list(charts(at)))
    return found[0]


def test_token_inspector_teacher_only_and_with_student(app_env):
    at = open_page("4_Token_inspector.py")
    assert not errors(at) and not none_texts(at)
    assert at.selectbox(key="insp_metric").options == ["head_size", "head_mass",
                                                       "teacher_entropy"]
    n_tokens = len(at.selectbox(key="insp_token").options)
    view = chart(at, "Tokens coloured by")
    cells, context = view["data"][0], view["data"][1]
    assert len(cells["text"]) == n_tokens > 5
    # the text's first token is shown, greyed, as context (nothing predicts it)
    assert context["name"] == "context (not predicted)" and len(context["text"]) == 1
    # one mu / boundary control for the page (not one more under the chosen loss)
    mu_labels = [w.label for w in at.number_input if w.label.startswith("mu")]
    assert mu_labels == ["mu (head mass)"]
    assert [w.label for w in at.selectbox if w.label == "boundary"] == ["boundary"]
    assert len(at.get("plotly_chart")) == 3  # teacher curves, token view, top-k bars
    # an impossible student is a message, not a traceback
    at.selectbox(key="insp_student_choice").select("truncate:4").run()
    assert not at.exception
    assert any("truncate:K needs 1 <= K <= 2" in e for e in errors(at)), errors(at)
    # a real student: every catalogue divergence per token, plus the chosen loss
    at.selectbox(key="insp_student_choice").select("other...").run()
    at.text_input(key="insp_student_other").input("truncate:1").run()
    assert not at.exception and not errors(at)
    options = at.selectbox(key="insp_metric").options
    assert set(akl_core.LOSSES) <= set(options) and "akl (chosen)" in options
    assert at.selectbox(key="insp_metric").value == "w"
    rows = at.dataframe[0].value.to_dict("records")
    by_name = {r["divergence"]: r["mean over positions"] for r in rows}
    assert by_name["akl (chosen)"] == pytest.approx(by_name["akl"], rel=1e-5)
    assert all(v >= -1e-6 for v in by_name.values())
    assert by_name["fkl"] > 0
    # the student's per-position curves, and every number on hover of a token
    curves = chart(at, "Student against the teacher")
    titles = [a["text"] for a in curves["layout"]["annotations"]]
    assert {"head gap g_head", "tail gap g_tail", "AKL weight w on FKL"} <= set(titles)
    assert len(values(curves["data"][0]["y"])) == n_tokens
    hover = chart(at, "Tokens coloured by")["data"][0]["hovertemplate"]
    for name in ("g_head", "g_tail", "head_size", "head_mass", "teacher_entropy",
                 "student_entropy", "akl loss value", "AKL weight w on FKL"):
        assert name in hover, (name, hover)
    # the fixed w range and its labelled colour bar
    bar = chart(at, "Tokens coloured by")["data"][2]["marker"]
    assert (bar["cmin"], bar["cmax"]) == (0.0, 1.0)
    assert "w < 0.5 leans RKL" in bar["colorbar"]["title"]["text"]
    # the loss's mu follows the page's single mu control
    at.number_input(key="insp_mu").set_value(0.8).run()
    assert not at.exception and not errors(at)
    assert "mu = 0.8" in chart(at, "Student against the teacher")["layout"]["title"]["text"]
    # picking a token outlines it and redraws the top-k bars for it
    at.selectbox(key="insp_token").select(2).run()
    widths = chart(at, "Tokens coloured by")["data"][0]["marker"]["line"]["width"]
    assert widths[2] == 4 and sum(widths) == 4
    assert chart(at, "Position 2:")


def test_token_inspector_empty_text_is_an_error(app_env):
    at = open_page("4_Token_inspector.py")
    at.text_area(key="insp_text").input("   ").run()
    assert not at.exception
    assert any("text is empty" in e for e in errors(at))


# ---------------------------------------------------------------------------- compare runs


@pytest.fixture(scope="module")
def saved_runs(app_env):
    """Two finished runs written by the engine; only the second keeps its student."""
    from akl_core.lab.distill import DistillConfig
    from akl_core.lab.experiment import run_experiment
    from akl_core.lab.models import load_student, load_teacher

    root = app_env["base"] / "cmp_runs"
    teacher = load_teacher(str(app_env["teacher"]))
    made = []
    for i, loss in enumerate(("fkl", "akl")):
        student = load_student("truncate:1", teacher, seed=i)
        cfg = DistillConfig(teacher=str(app_env["teacher"]), student="truncate:1", loss=loss,
                            steps=2, batch_size=2, max_length=48, probe_every=0,
                            data=str(app_env["data"]), targets="gold")
        result = run_experiment(cfg, teacher=teacher, student=student, examples=examples(8),
                                runs_dir=root, name=f"run{i}-{loss}", save_student=i == 1)
        made.append(result.run_dir)
    return root, made


def test_compare_runs_overlays_and_evaluates(app_env, saved_runs):
    import re

    root, (run0, run1) = saved_runs
    at = open_page("3_Compare_runs.py")
    at.text_input(key="cmp_root").input(str(root)).run()
    assert not at.exception and not errors(at) and not none_texts(at)
    table = at.dataframe[0].value.to_dict("records")
    # labels like "fkl - 2 steps - 22:28"; the folder stays in its own column
    assert [r["folder"] for r in table] == ["run0-fkl", "run1-akl"]
    assert all(re.fullmatch(r"(fkl|akl) - 2 steps - \d\d:\d\d", r["run"]) for r in table)
    assert [r["steps"] for r in table] == [2, 2]
    # config columns, '-' instead of None (fkl has no mu; nothing evaluated yet)
    assert [r["mu"] for r in table] == ["-", "0.5"]
    assert [r["batch x length"] for r in table] == ["2 x 48"] * 2
    assert {r["rougeL_teacher"] for r in table} == {"-"}
    assert not any(v is None or v == "None" for r in table for v in r.values())
    assert [r["saved student"] for r in table] == ["no", "yes"]
    # column help on the table
    config = at.dataframe[0].proto.columns
    assert "saved student" in config and "needed to evaluate" in config
    # curves: colour by loss, dash by run
    curves = chart(at, "Loss, head/tail gaps")
    lines = {tr["name"]: tr["line"] for tr in curves["data"] if tr.get("showlegend")}
    fkl_label, akl_label = (r["run"] for r in table)
    assert lines[fkl_label]["color"] == viz.loss_color("fkl")
    assert lines[akl_label]["color"] == viz.loss_color("akl")
    assert lines[fkl_label]["dash"] != lines[akl_label]["dash"]
    # only the run with a saved student is offered; a sentence says why the other is not
    assert at.selectbox(key="cmp_eval_run").options == [akl_label]
    assert any(fkl_label in c.value and "did not save their trained student" in c.value
               for c in at.caption)
    at.number_input(key="cmp_eval_n").set_value(2)
    at.number_input(key="cmp_eval_tokens").set_value(6)
    at.button(key="FormSubmitter:cmp_eval_form-Evaluate").click().run()
    assert not at.exception, at.exception
    assert not any(e.startswith("Cannot list runs") for e in errors(at)), errors(at)
    result = json.loads((run1 / "eval.json").read_text())
    assert result["n_examples"] == 2 and len(result["generations"]) == 2
    eval_rows = at.dataframe[1].value.to_dict("records")
    assert [r["model"] for r in eval_rows] == ["teacher", akl_label]
    assert any("Generations side by side" in h.value for h in at.subheader)
    # a second evaluated run (with an empty generation): still one teacher row
    other = {**result, "student": {**result["student"], "rougeL_teacher": 0.01},
             "generations": [{**g, "student": ""} for g in result["generations"]]}
    (run0 / "eval.json").write_text(json.dumps(other))
    at.run()
    eval_rows = at.dataframe[1].value.to_dict("records")
    assert [r["model"] for r in eval_rows] == ["teacher", fkl_label, akl_label]
    shown = [m.value for m in at.markdown]
    assert "(empty: the student ended its turn at once)" in shown
    (run0 / "eval.json").unlink()


def test_compare_runs_shows_a_race_and_selected_rows(app_env, saved_runs):
    root, (run0, run1) = saved_runs
    config = json.loads((run0 / "config.json").read_text())
    meta = {**config.get("meta", {}), "race": {"id": "race-1", "racer": config["loss"]}}
    (run0 / "config.json").write_text(json.dumps({**config, "meta": meta}))
    try:
        at = open_page("3_Compare_runs.py")
        at.text_input(key="cmp_root").input(str(root)).run()
        assert not at.exception and not errors(at)
        labels = [r["run"] for r in at.dataframe[0].value.to_dict("records")]

        def comparing() -> list[str]:
            return [c.value for c in at.caption if c.value.startswith("Comparing: ")]

        assert comparing() == ["Comparing: " + ", ".join(labels)]  # none selected: the last 3
        # rows selected in the table (Streamlit's dataframe selection state)
        at.session_state["cmp_all_table"] = {"selection": {"rows": [1], "columns": []}}
        at.run()
        assert comparing() == [f"Comparing: {labels[1]}"]
        assert [tr["name"] for tr in chart(at, "Loss, head/tail")["data"]
                if tr.get("showlegend")] == [labels[1]]
        # a race: its runs together
        at.selectbox(key="cmp_race").select("race-1").run()
        assert comparing() == [f"Comparing: {labels[0]}"]
    finally:
        (run0 / "config.json").write_text(json.dumps(config))


def test_compare_runs_empty_folder(app_env):
    empty = app_env["base"] / "empty_runs"
    empty.mkdir(exist_ok=True)
    at = open_page("3_Compare_runs.py")
    at.text_input(key="cmp_root").input(str(empty)).run()
    assert not at.exception and not errors(at)
    assert any("No runs under" in i.value for i in at.info)


# ------------------------------------------------------------------- figure and HTML helpers


def test_topk_figure_marks_the_head_boundary():
    from akl_core.lab import viz

    teacher = [["a", 0.4], ["b", 0.3], ["c", 0.2], ["d", 0.1]]
    student = [["c", 0.5], ["a", 0.3], ["d", 0.1], ["b", 0.1]]
    fig = viz.topk_figure(teacher, student, head_size=2, title="t")
    bars = [tr for tr in fig.data if tr.type == "bar"]
    assert [list(b.y) for b in bars] == [["a", "b", "c", "d"]] * 2  # one order, both panels
    assert list(bars[1].x) == [0.3, 0.1, 0.5, 0.1]  # student's p for each token
    gold = bars[0].marker.color[0]
    assert [c == gold for c in bars[0].marker.color] == [True, True, False, False]
    assert [c == gold for c in bars[1].marker.color] == [True, True, False, False]
    (line,) = fig.layout.shapes
    assert line.y0 == line.y1 == 1.5  # between rank 2 and rank 3
    with pytest.raises(ValueError, match="empty"):
        viz.topk_figure([], None)



# ------------------------------------------------------------------------ app-wide settings


def test_presentation_mode_is_kept_across_pages_and_enlarges_fonts(app_env):
    at = open_page()
    icons = [el.proto.icon for el in at.get("page_link")]
    assert all(icon.startswith(":material/") for icon in icons), icons  # no emoji boxes
    assert at.toggle(key="_akl_presentation").value is False
    assert not at.html  # no extra CSS by default
    at.toggle(key="_akl_presentation").set_value(True).run()
    assert at.session_state["akl_presentation"] is True
    assert "font-size: 22px" in at.html[0].value
    at.switch_page("pages/4_Token_inspector.py").run()
    assert not at.exception
    assert at.toggle(key="_akl_presentation").value is True  # kept across pages
    assert any("font-size: 22px" in h.value for h in at.html)
    fig = chart(at, "Teacher next-token distribution")
    assert fig["layout"]["font"]["size"] == 22
    assert fig["layout"]["xaxis3"]["tickfont"]["size"] == 22
    at.toggle(key="_akl_presentation").set_value(False).run()
    assert chart(at, "Teacher next-token distribution")["layout"]["font"]["size"] == 14
