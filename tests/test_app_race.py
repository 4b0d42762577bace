"""AppTest of the Live page's race mode and its layout fixes (small random models, a few
steps): the race runs and draws, settings are locked while it runs and kept across pages, a
header names the run, stale errors go on a new run, students are saved by default."""

from __future__ import annotations

import json
from pathlib import Path

from tests import test_app
from tests.test_app import chart, errors, open_page, set_live, wait_for_run

app_env = test_app.app_env  # the same module-scoped fixture (small teacher, data, folders)

PAGE = "1_Live_distillation.py"


def _race(at, data, losses=("fkl", "akl"), **values) -> None:
    set_live(at, data, mode="Race", **values)
    at.multiselect(key="live_race_losses").set_value(list(losses))


def test_race_runs_draws_and_switches_racers(app_env):
    at = open_page(PAGE)
    assert at.radio(key="live_mode").value == "Race"  # race mode is the default
    assert at.multiselect(key="live_race_losses").value == ["fkl", "rkl", "akl"]
    assert at.checkbox(key="live_save_student").value is True
    # before Run: the race's empty panels (plotly.js loads with the page, not at step 1)
    waiting = chart(at, "waiting for the first step")
    assert {t["name"] for t in waiting["data"]} == {"fkl", "rkl", "akl"}
    _race(at, app_env["data"])
    at.button(key="live_run").click().run()
    assert not at.exception and not errors(at)
    wait_for_run(at)
    view = at.session_state["live"].view()
    assert view.status == "finished", view.error
    assert sorted((s.racer, s.step) for s in view.records) == [
        (r, k) for r in ("akl", "fkl") for k in (1, 2, 3)]
    assert any("Finished 3 steps" in s.value for s in at.success)
    # the header names the run's settings
    assert any("Last run: Race: **fkl vs akl**" in m.value and "3 steps of 2 x 48" in m.value
               for m in at.markdown)
    # common curves, own-loss panel, token view, top-k bars
    charts = at.get("plotly_chart")
    assert len(charts) == 4
    curves = json.loads(charts[0].proto.spec)
    names = {t["name"] for t in curves["data"]}
    assert names == {"fkl", "akl"}
    assert all(t["mode"] == "lines+markers" for t in curves["data"])
    assert curves["layout"]["xaxis"]["tickformat"] == "d"
    # the token view switches between racers; w's colour range is fixed at [0, 1]
    tokens_fkl = chart(at, "Tokens coloured by")
    assert (tokens_fkl["data"][-1]["marker"]["cmin"], tokens_fkl["data"][-1]["marker"]["cmax"]) \
        == (0, 1)
    assert chart(at, "fkl, position 0")
    at.selectbox(key="live_racer").select("akl").run()
    assert not at.exception and chart(at, "Tokens coloured by") != tokens_fkl
    assert chart(at, "akl, position 0")
    at.selectbox(key="live_metric").select("g_tail").run()
    bar = chart(at, "Tokens coloured by")["data"][-1]["marker"]
    assert (bar["cmin"], bar["cmax"]) == (0.0, 2.0)
    # the full prompt is shown
    probe = view.records[-1].record.probe
    assert any(t.value == probe.prompt for t in at.text)
    # one run folder per racer, grouped by the race id, students saved by default
    race_id = view.info["race_id"]
    folders = sorted(p for p in app_env["runs"].iterdir() if p.name.startswith(race_id))
    assert [p.name for p in folders] == [f"{race_id}-akl", f"{race_id}-fkl"]
    for p in folders:
        assert json.loads((p / "config.json").read_text())["meta"]["race"]["id"] == race_id
        assert (p / "student").is_dir()
        steps = [json.loads(x) for x in (p / "steps.jsonl").read_text().splitlines()]
        assert [s["step"] for s in steps] == [1, 2, 3] and "kl_pq" in steps[0]["heldout"]


def test_settings_locked_while_running_kept_across_pages_and_stop(app_env):
    at = open_page(PAGE)
    _race(at, app_env["data"], live_steps=400, live_probe_every=0, live_seed=3)
    at.button(key="live_run").click().run()
    wait_for_run(at, min_records=2)
    for kind, key in (("number_input", "live_steps"), ("number_input", "live_lr"),
                      ("multiselect", "live_race_losses"), ("radio", "live_mode"),
                      ("text_input", "live_student"), ("checkbox", "live_save_student"),
                      ("selectbox", "live_threads"), ("button", "live_run")):
        assert getattr(at, kind)(key=key).disabled, key
    assert any(m.value.startswith("Running: Race") for m in at.markdown)
    at.button(key="live_stop").click().run()
    wait_for_run(at)
    view = at.session_state["live"].view()
    assert view.status == "stopped" and len(view.records) >= 2
    assert any("Stopped after" in w.value for w in at.warning)
    assert not at.number_input(key="live_steps").disabled
    # another page and back: every setting as it was
    at.switch_page("pages/2_Toy_lab.py").run()
    at.switch_page(f"pages/{PAGE}").run()
    assert not at.exception
    assert at.number_input(key="live_steps").value == 400
    assert at.number_input(key="live_seed").value == 3
    assert at.multiselect(key="live_race_losses").value == ["fkl", "akl"]
    assert at.text_input(key="live_data").value == str(app_env["data"])
    at.radio(key="live_mode").set_value("Single run").run()
    at.selectbox(key="live_loss").select("akl").run()
    at.number_input(key="live_akl_mu").set_value(0.3).run()
    at.switch_page("pages/2_Toy_lab.py").run()
    at.switch_page(f"pages/{PAGE}").run()
    assert at.radio(key="live_mode").value == "Single run"
    assert at.number_input(key="live_akl_mu").value == 0.3


def test_a_new_run_clears_stale_errors(app_env):
    at = open_page(PAGE)
    _race(at, app_env["data"])
    at.number_input(key="live_lr").set_value(0.0)
    at.button(key="live_run").click().run()
    assert any("Cannot start: lr must be in" in e for e in errors(at)), errors(at)
    at.multiselect(key="live_race_losses").set_value(["fkl"])
    at.number_input(key="live_lr").set_value(1e-3)
    at.button(key="live_run").click().run()
    assert errors(at) == ["Cannot start: a race needs 2 to 4 losses, got 1"]
    at.multiselect(key="live_race_losses").set_value(["fkl", "rkl"])
    at.number_input(key="live_steps").set_value(1)
    at.button(key="live_run").click().run()
    wait_for_run(at)
    assert not errors(at), errors(at)
    assert at.session_state["live"].view().status == "finished"
    assert not Path(at.session_state["live"].view().info["run_dir"]).name.startswith("race")


def test_race_inputs_are_built_with_the_page_and_used_by_run(app_env, monkeypatch):
    # the held-out batch (a teacher pass) and the student are built while the page is drawn,
    # so Run starts training at once; the race uses those (no second build)
    import threading

    from akl_core.lab import race

    built = []
    original = race.HeldOut.build.__func__

    def counting(cls, *args, **kwargs):
        built.append(threading.current_thread().name)
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(race.HeldOut, "build", classmethod(counting))
    at = open_page(PAGE)
    _race(at, app_env["data"], live_maxlen=44, live_seed=7)  # settings no other test caches
    built.clear()
    at.run()
    assert not at.exception and built == ["ScriptRunner.scriptThread"]  # drawing the page
    at.button(key="live_run").click().run()
    wait_for_run(at)
    view = at.session_state["live"].view()
    assert view.status == "finished", view.error
    assert len(built) == 1, built
    # a change the held-out batch depends on builds a new one; the step count does not
    at.number_input(key="live_steps").set_value(4).run()
    assert len(built) == 1
    at.number_input(key="live_batch").set_value(3).run()
    assert len(built) == 2
