"""Offline teacher caches: build, read back within the stated quantisation error, refuse a cache
made for another tokenizer or other data, and train from one (with akl_core.SparseTeacher)."""

from __future__ import annotations

import json

import pytest
import torch

import akl_core
from akl_core.lab import cli, data, engine, teacher_cache
from akl_core.lab.distill import DistillConfig
from akl_core.lab.teacher_cache import TeacherCache
from tests import small_lm

needs_sparse = pytest.mark.skipif(not hasattr(akl_core, "SparseTeacher"),
                                  reason="akl_core.SparseTeacher has not landed on this branch")
K = 16


def _config(kd_folders, **kw) -> DistillConfig:
    base = dict(teacher=str(kd_folders / "teacher"), student=str(kd_folders / "student"),
                data=str(kd_folders / "data.jsonl"), targets="gold", max_length=48, steps=3,
                batch_size=2, lr=1e-2, probe_every=2)
    base.update(kw)
    return DistillConfig(**base)


@pytest.fixture(scope="module")
def caches(kd_folders, small_pair, tmp_path_factory):
    base = tmp_path_factory.mktemp("caches")
    config = _config(kd_folders)
    return {q: teacher_cache.build(small_pair[0], config, base / q, k=K, quantization=q)
            and base / q for q in teacher_cache.QUANTIZATIONS}


def _truth(small_pair, kd_folders):
    """The teacher's exact top-k log-probs at every response token, in row order."""
    teacher = small_pair[0]
    config = _config(kd_folders)
    exs = engine.load_examples(config)
    enc = data.tokenize_for_kd(teacher.tokenizer, exs, [e.response for e in exs], max_length=48)
    with torch.no_grad():
        logits = teacher.model(input_ids=enc["input_ids"],
                               attention_mask=enc["attention_mask"]).logits
    valid = enc["labels"][:, 1:] != -100
    lp = torch.log_softmax(logits[:, :-1][valid].double(), -1)
    top, ids = lp.topk(K, -1)
    return ids, top, torch.log1p(-top.exp().sum(-1)), logits[:, :-1][valid]


def test_cache_holds_the_top_k_within_the_quantisation(caches, small_pair, kd_folders):
    ids, top, log_tail, _ = _truth(small_pair, kd_folders)
    for q, path in caches.items():
        cache = TeacherCache.open(path)
        m = cache.manifest
        assert m["k"] == K and m["quantization"] == q and m["positions"] == ids.shape[0]
        assert m["id_dtype"] == "uint16" and m["examples"] == 8
        _, got_ids, got_lp = cache.load()
        assert torch.equal(got_ids, ids)
        # the k probabilities plus the stored tail always sum to 1
        # (float16 log_tail: 1/2048 of |log| at most; float32 log-probs: ~1e-7 absolute)
        tail = 1 - got_lp.double().exp().sum(-1)
        rel = 1e-5 if q == "f32" else float(log_tail.abs().max()) / 2048
        assert tail.numpy() == pytest.approx(log_tail.exp().numpy(), rel=rel, abs=5e-7)
        err = (got_lp.double() - top).abs()
        top1 = err[:, 0].max()  # where the mass is
        bound = {"f32": 1e-5, "f16": 2e-3, "u8": 5e-3}[q]
        assert float(top1) < bound, (q, float(top1))
        span = (top[:, 0] - top[:, -1]).max()
        whole = {"f32": 1e-5, "f16": 0.02, "u8": float(span) / 255 * 2 + 2e-3}[q]
        assert float(err.max()) < whole, (q, float(err.max()))
    sizes = {q: TeacherCache.open(p).manifest["bytes_per_token"] for q, p in caches.items()}
    assert sizes["u8"] < 3 * K + 8 and sizes["f16"] < 4 * K + 8 and sizes["u8"] < sizes["f16"]


def test_quantisation_error_on_the_loss_is_small(caches, small_pair, kd_folders):
    _, _, _, teacher_logits = _truth(small_pair, kd_folders)
    student_logits = teacher_logits * 0.3 + torch.randn_like(teacher_logits)
    exact = TeacherCache.open(caches["f32"]).load()
    for q in ("u8", "f16"):
        _, ids, lp = TeacherCache.open(caches[q]).load()
        for loss in ("fkl", "rkl"):
            ref = teacher_cache.sparse_kd_reference(student_logits, exact[1], exact[2], loss)
            got = teacher_cache.sparse_kd_reference(student_logits, ids, lp, loss)
            rel = float((got.mean() - ref.mean()).abs() / ref.mean())
            assert rel < 1e-3, (q, loss, rel)


def test_a_cache_for_other_data_or_tokenizer_is_refused(caches, kd_folders, small_pair):
    cache = TeacherCache.open(caches["u8"])
    exs = engine.load_examples(_config(kd_folders))
    with pytest.raises(ValueError, match="other data .*max_length: cache 48, run 64"):
        cache.rows_for(_config(kd_folders, max_length=64), exs, small_pair[0].tokenizer)
    with pytest.raises(ValueError, match="other data"):
        cache.rows_for(_config(kd_folders, max_examples=7), exs[:7], small_pair[0].tokenizer)
    with pytest.raises(ValueError, match="another tokenizer"):
        cache.rows_for(_config(kd_folders), exs, small_lm.small_tokenizer(500))
    with pytest.raises(ValueError, match="temperature"):
        cache.rows_for(_config(kd_folders, temperature=2.0), exs, small_pair[0].tokenizer)
    rows = cache.rows_for(_config(kd_folders), exs, small_pair[0].tokenizer)
    enc = data.tokenize_for_kd(small_pair[0].tokenizer, exs, [e.response for e in exs],
                               max_length=48)
    for row, want in zip(rows, engine.rows_from_encoded(enc)):
        assert torch.equal(row["input_ids"], want["input_ids"])
        assert torch.equal(row["labels"], want["labels"])
        assert row["teacher_topk_ids"].shape == (int((want["labels"][1:] != -100).sum()), K)
    with pytest.raises(ValueError, match="no teacher cache"):
        TeacherCache.open(kd_folders)


def test_tokenizer_hash_is_remembered_until_the_tokenizer_changes():
    tok = small_lm.small_tokenizer(500)
    first = teacher_cache.tokenizer_hash(tok)
    assert teacher_cache.tokenizer_hash(tok) == first == teacher_cache._tokenizer_hash(tok)
    tok.add_tokens(["<akl-new-token>"])
    assert teacher_cache.tokenizer_hash(tok) == teacher_cache._tokenizer_hash(tok) != first


def test_cli_builds_a_cache_and_distill_refuses_a_mismatch(kd_folders, tmp_path, capsys):
    out = tmp_path / "cache"
    code = cli.main(["teacher-cache", "--teacher", str(kd_folders / "teacher"), "--data",
                     str(kd_folders / "data.jsonl"), "--targets", "gold", "--max-length", "48",
                     "--k", "8", "--out", str(out), "--quiet"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "bytes/token" in captured.out
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["k"] == 8 and manifest["data"]["targets"] == "gold"
    code = cli.main(["distill", "--teacher-cache", str(out), "--student",
                     str(kd_folders / "student"), "--data", str(kd_folders / "data.jsonl"),
                     "--targets", "gold", "--max-length", "64", "--steps", "1",
                     "--runs-dir", str(tmp_path / "runs"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "was made for other data" in err and "max_length" in err
    runs_root = tmp_path / "runs"  # the root may exist (checked up front), no run folder may
    assert not runs_root.exists() or not any(runs_root.iterdir())


@needs_sparse
def test_training_from_a_cache_skips_the_teacher(caches, kd_folders, small_pair):
    from akl_core.lab.experiment import run_experiment

    config = _config(kd_folders, teacher_cache=str(caches["f32"]), loss="fkl")
    result = run_experiment(config, student=small_lm.small_student(small_pair[0]), save=False)
    assert result.teacher is None  # never loaded
    losses = [r.loss for r in result.records]
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]
    assert result.records[0].probe is not None


def test_ensure_builds_once_and_reuses(kd_folders, small_pair, tmp_path, monkeypatch):
    calls = []
    real_build = teacher_cache.build

    def counting_build(*args, **kwargs):
        calls.append(1)
        return real_build(*args, **kwargs)

    monkeypatch.setattr(teacher_cache, "build", counting_build)
    seen = []
    config = _config(kd_folders)
    a = teacher_cache.ensure(small_pair[0], config, k=8, root=tmp_path,
                             progress=lambda *p: seen.append(p))
    b = teacher_cache.ensure(small_pair[0], config, k=8, root=tmp_path)
    c = teacher_cache.ensure(small_pair[0], _config(kd_folders, max_length=40), k=8,
                             root=tmp_path)
    assert a == b != c and len(calls) == 2
    assert seen[-1] == ("teacher cache", 8, 8)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([a.name, c.name])
