"""Issue 12, items 2, 4, 5 and 8 through the `akl` command: one-line errors instead of
tracebacks, no empty run folders, `akl eval` over a damaged run, --probe-topk capped."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from akl_core.lab import cli, data, models
from akl_core.lab.distill import DistillConfig
from akl_core.lab.runs import Run, load_run
from tests import small_lm


@pytest.fixture(autouse=True)
def _env(tmp_path, monkeypatch):
    monkeypatch.setenv("AKL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("AKL_RUNS_DIR", raising=False)


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    """Small teacher / student folders, damaged copies of the student, a JSONL data file."""
    base = tmp_path_factory.mktemp("cli_errors")
    teacher = small_lm.small_teacher()
    small_lm.save_bundle(teacher, base / "teacher")
    small_lm.save_bundle(small_lm.small_student(teacher), base / "student")
    small_lm.write_jsonl(base / "data.jsonl", small_lm.examples(4))
    weights = (base / "student" / "model.safetensors").read_bytes()
    for name, content in (("truncated", weights[: len(weights) // 2]),
                          ("corrupt", b"not a safetensors file" * 4)):
        shutil.copytree(base / "student", base / name)
        (base / name / "model.safetensors").write_bytes(content)
    # a pickle checkpoint holding a non-weight object: torch.load(weights_only=True) refuses it
    shutil.copytree(base / "student", base / "pickled")
    (base / "pickled" / "model.safetensors").unlink()
    state = dict(small_lm.small_student(teacher).model.state_dict(), extra=Path("x"))
    torch.save(state, base / "pickled" / "pytorch_model.bin")
    return base


def call(argv, capsys) -> tuple[int, str, str]:
    try:
        code = cli.main([str(a) for a in argv])
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code: int, err: str, fragment: str) -> str:
    """Exit 2, no traceback, one `akl ...: error: ...` line, last on stderr (progress bars
    and the run folder line may come before it)."""
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, err
    assert "Traceback" not in err
    errors = [ln for ln in lines if ln.startswith("akl") and "error:" in ln]
    assert len(errors) == 1 and lines[-1] == errors[0], err
    assert fragment in errors[0], errors[0]
    return errors[0]


def distill_args(dirs, runs_dir, *extra):
    return ["distill", "--teacher", dirs / "teacher", "--student", dirs / "student",
            "--data", dirs / "data.jsonl", "--targets", "gold", "--steps", "2",
            "--batch-size", "2", "--max-length", "48", "--probe-every", "0",
            "--eval-examples", "0", "--runs-dir", runs_dir, "--quiet", *extra]


# --------------------------------------------------------------------------- item 5: devices

DEVICES = [("bogus", "unknown device 'bogus'"), ("meta", "device 'meta' holds no weights"),
           ("cuda:99", "cuda")]
if not torch.cuda.is_available():
    DEVICES.append(("cuda", "no CUDA device is available on this machine"))


@pytest.mark.parametrize(("device", "fragment"), DEVICES)
@pytest.mark.parametrize("command", ["distill", "eval"])
def test_bad_device_is_one_line(command, device, fragment, capsys, tmp_path):
    argv = [command, "--device", device] + (["some-run"] if command == "eval" else [])
    code, _, err = call(argv, capsys)
    assert "--device" in one_line_error(code, err, fragment)


def test_resolve_device_accepts_what_exists():
    assert models.resolve_device("cpu") == torch.device("cpu")
    assert models.resolve_device(None) == models.default_device()


# ------------------------------------------------------------------- item 5: damaged students


@pytest.mark.parametrize(("student", "fragment"), [
    ("truncated", "SafetensorError"), ("corrupt", "SafetensorError"),
    ("pickled", "pickle checkpoint holds more than plain weights and was refused"),
])
def test_damaged_or_unsafe_student_is_one_line(dirs, student, fragment, capsys, tmp_path):
    argv = distill_args(dirs, tmp_path / "runs")
    argv[argv.index("--student") + 1] = dirs / student
    code, _, err = call(argv, capsys)
    one_line_error(code, err, fragment)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_akl_eval_on_a_half_saved_student_is_one_line(dirs, capsys, tmp_path):
    run = Run.create(tmp_path, name="half")
    run.write_config({"loss": "akl", "teacher": str(dirs / "teacher")})
    shutil.copytree(dirs / "truncated", run.student_dir)
    code, _, err = call(["eval", run.path, "--data", dirs / "data.jsonl", "--examples", "1"],
                        capsys)
    one_line_error(code, err, "SafetensorError")


# ------------------------------------------------------------------- item 2: akl eval + damage


@pytest.fixture()
def evaluable_run(dirs, tmp_path):
    run = Run.create(tmp_path, name="ev")
    run.write_config({"loss": "akl", "teacher": str(dirs / "teacher")})
    run.append_step({"step": 1, "loss": 1.0})
    run.finish()
    shutil.copytree(dirs / "student", run.student_dir)
    return run.path


def test_akl_eval_overwrites_a_corrupt_eval_json(dirs, evaluable_run, capsys):
    (evaluable_run / "eval.json").write_text("{corrupt")
    assert load_run(evaluable_run).broken
    code, out, err = call(["eval", evaluable_run, "--data", dirs / "data.jsonl", "--examples",
                           "2", "--max-new-tokens", "3", "--quiet"], capsys)
    assert code == 0, err
    assert json.loads((evaluable_run / "eval.json").read_text())["n_examples"] == 2
    assert not load_run(evaluable_run).broken


def test_akl_eval_names_a_damaged_config(dirs, evaluable_run, capsys):
    (evaluable_run / "config.json").write_text("[1, 2]")
    code, _, err = call(["eval", evaluable_run, "--quiet"], capsys)
    line = one_line_error(code, err, "config.json")
    assert "expected a JSON object" in line


# -------------------------------------------------------------- item 5: folders, names, files


def test_unwritable_runs_dir_is_one_line(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    for runs_dir in (blocker / "x", "/proc/akl-no-such/x"):
        code, _, err = call(["distill", "--runs-dir", runs_dir], capsys)
        one_line_error(code, err, "cannot create the runs folder")


def test_name_over_255_characters_is_one_line(capsys, tmp_path):
    code, _, err = call(["distill", "--runs-dir", tmp_path, "--name", "n" * 300], capsys)
    one_line_error(code, err, "run name is too long: 300 characters")


@pytest.mark.parametrize(("argv", "fragment"), [
    (["toy", "fig2_bimodal", "--steps", "-5"], "--steps must be a positive integer, got -5"),
    (["toy", "fig2_bimodal", "--steps", "0"], "--steps must be a positive integer"),
    (["toy", "fig2_bimodal", "--lr", "nan"], "--lr must be a finite number > 0"),
    (["toy", "fig2_bimodal", "--steps", "2", "--json", "{tmp}"], "is a folder"),
    (["toy", "fig2_bimodal", "--steps", "2", "--json", "{tmp}/no/x.json"], "no folder"),
    (["distill", "--probe-topk", "100000"], "probe_topk must be at most 100"),
])
def test_toy_and_option_errors_are_one_line(argv, fragment, capsys, tmp_path):
    argv = [a.format(tmp=tmp_path) for a in argv]
    code, _, err = call(argv, capsys)
    one_line_error(code, err, fragment)


def test_probe_topk_cap_is_in_the_config():
    with pytest.raises(ValueError, match="probe_topk must be at most 100"):
        DistillConfig(probe_topk=101).validate()
    DistillConfig(probe_topk=100).validate()


def test_huge_learning_rate_blames_the_learning_rate(dirs, capsys, tmp_path):
    argv = distill_args(dirs, tmp_path / "runs", "--lr", "1e6", "--loss", "fkl")
    argv[argv.index("--steps") + 1] = "4"
    code, _, err = call(argv, capsys)
    line = one_line_error(code, err, "learning rate 1e+06 is too high")
    assert "logits contain NaN" not in line


def test_empty_teacher_means_bundled_in_cli_and_app():
    args = cli.build_parser().parse_args(["distill", "--teacher", ""])
    assert args.teacher is None  # = the bundled teacher, as the dashboard's empty Teacher box
    assert cli.build_parser().parse_args(["distill", "--teacher", "  "]).teacher is None
    assert models._is_bundled(args.teacher) and models._is_bundled("")


# ----------------------------------------------------------------------- item 5: BOM in JSONL


def test_utf8_bom_in_jsonl_is_accepted(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_text('{"instruction": "Say hi", "response": "hi"}\n'
                    '{"instruction": "Count", "response": "1 2 3"}\n', encoding="utf-8-sig")
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")
    assert [e.instruction for e in data.load_jsonl(path)] == ["Say hi", "Count"]


# ---------------------------------------------------------------- item 4: no empty run folders


def test_bad_data_leaves_no_empty_run_folder(dirs, capsys, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "ok", "response": "fine"}\nnot json at all\n')
    argv = distill_args(dirs, tmp_path / "runs")
    argv[argv.index("--data") + 1] = bad
    code, _, err = call(argv, capsys)
    one_line_error(code, err, "bad.jsonl")
    assert list((tmp_path / "runs").iterdir()) == []


def test_ctrl_c_during_teacher_responses_keeps_no_run(dirs, capsys, tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(data, "teacher_responses", interrupted)
    argv = distill_args(dirs, tmp_path / "runs")
    argv[argv.index("--targets") + 1] = "teacher"
    code, _, err = call(argv, capsys)
    assert code == cli.EXIT_INTERRUPTED
    assert "run kept" not in err and "no run folder was kept" in err
    assert list((tmp_path / "runs").iterdir()) == []
