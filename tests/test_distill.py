"""The short-distillation engine (KDTrainer through run_experiment): unit tests on small models,
integration on the bundled teacher."""

from __future__ import annotations

import json
import math

import pytest
import torch

import akl_core
from akl_core.lab.distill import (
    DistillConfig,
    ProbeRecord,
    StepRecord,
    fit_real_positions,
    teacher_positions,
)
from akl_core.lab.experiment import run_experiment
from akl_core.lab.runs import load_run
from tests import reference, small_lm


@pytest.fixture(scope="module")
def teacher():
    return small_lm.small_teacher()


@pytest.fixture(scope="module")
def batch4():
    exs = small_lm.examples(4)
    return exs, [e.response for e in exs]


def _result(teacher, exs, resp, seed_student=0, student=None, **cfg):
    base = dict(steps=6, batch_size=4, max_length=64, lr=1e-2, probe_every=0)
    base.update(cfg)
    student = student or small_lm.small_student(teacher, seed=seed_student)
    return run_experiment(DistillConfig(**base), teacher=teacher, student=student,
                          examples=exs, responses=resp, save=False)


def _run(teacher, exs, resp, seed_student=0, **cfg):
    result = _result(teacher, exs, resp, seed_student, **cfg)
    return result.records, result


@pytest.mark.parametrize("loss", ["fkl", "rkl", "akl"])
def test_loss_decreases_on_fixed_batch(teacher, batch4, loss):
    exs, resp = batch4  # 4 examples, batch 4: every step sees the same batch
    recs, _ = _run(teacher, exs, resp, loss=loss, steps=12)
    losses = [r.loss for r in recs]
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.8 * losses[0], losses
    assert sum(b < a for a, b in zip(losses, losses[1:])) >= 9, losses
    if loss == "akl":
        assert all(0.0 <= r.w <= 1.0 for r in recs)
        assert recs[-1].g_head + recs[-1].g_tail < recs[0].g_head + recs[0].g_tail


def test_first_step_matches_aligned_loss(teacher, batch4):
    """kd_loss of step 1 is distillation_loss on logits[:, :-1] vs labels[:, 1:] before any update."""
    from akl_core.lab import data

    exs, resp = batch4
    student = small_lm.small_student(teacher, seed=0)
    enc = data.tokenize_for_kd(teacher.tokenizer, exs, resp, max_length=64)
    batch = next(data.iterate_batches(enc, 4, seed=0))
    with torch.no_grad():
        s = student.model(input_ids=batch["input_ids"],
                          attention_mask=batch["attention_mask"]).logits
        t = teacher.model(input_ids=batch["input_ids"],
                          attention_mask=batch["attention_mask"]).logits
    labels = batch["labels"][:, 1:]
    want_kd = akl_core.distillation_loss(s[:, :-1], t[:, :-1], loss="akl", labels=labels)
    valid = labels != -100
    want_lm = torch.nn.functional.cross_entropy(s[:, :-1][valid], labels[valid])
    ht = akl_core.head_tail(s[:, :-1][valid], t[:, :-1][valid])
    (rec,) = run_experiment(DistillConfig(steps=1, batch_size=4, max_length=64, probe_every=0,
                                          kd_ratio=0.25, loss="akl"),
                            teacher=teacher, student=student, examples=exs, responses=resp,
                            save=False).records
    assert rec.kd_loss == pytest.approx(float(want_kd), rel=1e-4)
    assert rec.lm_loss == pytest.approx(float(want_lm), rel=1e-4)
    assert rec.loss == pytest.approx(0.25 * float(want_kd) + 0.75 * float(want_lm), rel=1e-4)
    assert rec.g_head == pytest.approx(float(ht.g_head.mean()), rel=1e-4)
    assert rec.w == pytest.approx(float(ht.w.mean()), rel=1e-4)
    assert rec.tokens == int(batch["attention_mask"].sum())
    assert rec.world_size == 1 and rec.grad_accum == 1


def test_deterministic_for_a_seed(teacher):
    exs = small_lm.examples(6)
    resp = [e.response for e in exs]
    a, _ = _run(teacher, exs, resp, loss="akl", steps=4, batch_size=2, seed=3)
    b, _ = _run(teacher, exs, resp, loss="akl", steps=4, batch_size=2, seed=3)
    c, _ = _run(teacher, exs, resp, loss="akl", steps=4, batch_size=2, seed=4)
    assert [r.loss for r in a] == [r.loss for r in b]
    assert [r.g_head for r in a] == [r.g_head for r in b]
    assert [r.loss for r in a] != [r.loss for r in c]  # another batch order


def test_should_stop_between_steps(teacher, batch4):
    exs, resp = batch4
    seen = []
    result = run_experiment(DistillConfig(steps=50, batch_size=4, max_length=64, probe_every=0),
                            teacher=teacher, student=small_lm.small_student(teacher),
                            examples=exs, responses=resp, save=False, on_record=seen.append,
                            should_stop=lambda: len(seen) >= 3)
    assert [r.step for r in seen] == [1, 2, 3]
    assert result.stopped and [r.step for r in result.records] == [1, 2, 3]


def test_records_and_probes(teacher, batch4):
    exs, resp = batch4
    recs, result = _run(teacher, exs, resp, loss="akl", steps=4, probe_every=2, probe_topk=3,
                        temperature=2.0)
    assert [r.probe is not None for r in recs] == [True, True, False, True]
    for r in recs:
        assert isinstance(r, StepRecord)
        d = json.loads(json.dumps(r.to_dict(), allow_nan=False))
        assert d["step"] == r.step and d["lr"] == pytest.approx(1e-2)
    p = recs[-1].probe
    assert isinstance(p, ProbeRecord) and p.step == 4 and p.example_id == exs[0].id
    n = len(p.tokens)
    assert n > 3
    for key in ("w", "g_head", "g_tail", "head_size", "head_mass", "teacher_entropy",
                "student_entropy", "loss_value", "fkl", "rkl", "teacher_topk", "student_topk"):
        assert len(getattr(p, key)) == n, key
    assert all(0 <= w <= 1 for w in p.w)
    assert all(h >= 1 for h in p.head_size)
    # the probed tokens are the example's response tokens, in order
    assert "".join(p.tokens).startswith(resp[0][:10])
    for tk in p.teacher_topk + p.student_topk:
        probs = [pr for _, pr in tk]
        assert len(tk) == 3 and probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-5
    # the last probe is the trained student on example 0, recomputed here independently
    # (float64 reference formulas, temperature 2)
    from akl_core.lab import data

    enc = data.tokenize_for_kd(teacher.tokenizer, exs[:1], resp[:1], max_length=64)
    ids, labels = enc["input_ids"], enc["labels"]
    keep = labels[0, 1:] != -100
    with torch.no_grad():
        s = result.student.model(input_ids=ids).logits[0, :-1][keep].double()
        t = teacher.model(input_ids=ids).logits[0, :-1][keep].double()
    pq, qq = reference.probs(t, 2.0), reference.probs(s, 2.0)
    assert p.token_ids == labels[0, 1:][keep].tolist()
    assert p.fkl == pytest.approx(reference.fkl(pq, qq).tolist(), rel=1e-4, abs=1e-6)
    assert p.rkl == pytest.approx(reference.rkl(pq, qq).tolist(), rel=1e-4, abs=1e-6)
    assert p.loss_value == pytest.approx(reference.akl(pq, qq).tolist(), rel=1e-4, abs=1e-6)
    top = qq.topk(3, dim=-1)
    assert [pr for tk in p.student_topk for _, pr in tk] == pytest.approx(
        top.values.flatten().tolist(), rel=1e-4)


def test_kd_ratio_zero_is_pure_lm(teacher, batch4):
    exs, resp = batch4
    recs, _ = _run(teacher, exs, resp, loss="fkl", steps=3, kd_ratio=0.0)
    assert all(r.loss == pytest.approx(r.lm_loss) for r in recs)
    assert recs[-1].lm_loss < recs[0].lm_loss


def test_scheduler_warmup_and_linear_decay(teacher, batch4):
    exs, resp = batch4
    recs, _ = _run(teacher, exs, resp, steps=6, lr=1e-3, warmup_steps=2, scheduler="linear")
    lrs = [r.lr for r in recs]
    assert lrs[:2] == pytest.approx([5e-4, 1e-3])
    assert lrs[2] == pytest.approx(1e-3) and lrs[-1] < lrs[2]
    assert all(b <= a for a, b in zip(lrs[1:], lrs[2:]))


def test_taid_schedule_is_recorded(teacher, batch4):
    exs, resp = batch4
    recs, _ = _run(teacher, exs, resp, loss="taid", steps=3)
    assert all(r.taid_t is not None and 0 < r.taid_t <= 1 for r in recs)
    assert all(r.taid_t is None for r in _run(teacher, exs, resp, loss="fkl", steps=1)[0])


def test_run_folder_written(teacher, batch4, tmp_path):
    exs, resp = batch4
    result = run_experiment(DistillConfig(steps=3, batch_size=4, max_length=64, probe_every=2),
                            teacher=teacher, student=small_lm.small_student(teacher),
                            examples=exs, responses=resp, runs_dir=tmp_path, name="r")
    loaded = load_run(result.run_dir)
    assert loaded.config["loss"] == "akl" and loaded.config["steps"] == 3
    assert loaded.config["meta"]["world_size"] == 1
    assert [s["loss"] for s in loaded.steps] == [r.loss for r in result.records]
    assert [p["step"] for p in loaded.probes] == [1, 2]
    assert loaded.status == "finished" and loaded.summary["steps_done"] == 3
    assert loaded.has_student


def test_stopping_early_marks_run_stopped(teacher, batch4, tmp_path):
    exs, resp = batch4
    seen = []
    result = run_experiment(DistillConfig(steps=10, batch_size=4, max_length=64, probe_every=0,
                                          loss="fkl"),
                            teacher=teacher, student=small_lm.small_student(teacher),
                            examples=exs, responses=resp, runs_dir=tmp_path,
                            on_record=seen.append, should_stop=lambda: len(seen) >= 2)
    loaded = load_run(result.run_dir)
    assert len(loaded.steps) == 2 and loaded.status == "stopped" and result.stopped


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("steps", 0), ("batch_size", -1), ("max_length", 2), ("lr", 0.0), ("lr", float("nan")),
        ("kd_ratio", 1.5), ("temperature", 0), ("seed", -1), ("probe_every", -2),
        ("probe_topk", 0), ("scheduler", "step"), ("targets", "mine"), ("loss", "nope"),
        ("loss_params", {"mu": 2.0}), ("data", "no/such/file.jsonl"), ("data", "bundled:dev"),
        ("max_examples", 0), ("grad_clip", -1.0), ("student", ""), ("grad_accum", 0),
        ("save_every", -1), ("bf16", "yes"),
    ],
)
def test_bad_config_names_the_field(field, value):
    cfg = DistillConfig(**{field: value, "loss": "akl"} if field != "loss" else {field: value})
    with pytest.raises(ValueError, match=field):
        cfg.validate()
    with pytest.raises(ValueError, match=field):
        run_experiment(cfg, save=False)


def test_config_roundtrip():
    cfg = DistillConfig(loss="akl", loss_params={"mu": 0.3}, steps=7)
    again = DistillConfig.from_dict(json.loads(json.dumps(cfg.to_dict())) | {"extra": 1})
    assert again == cfg and again.head_params() == (0.3, "reference")
    assert DistillConfig.from_mapping({"loss": "akl", "loss_params": {"mu": 0.3},
                                       "steps": 7}) == cfg
    with pytest.raises(ValueError, match="unknown DistillConfig fields: stpes"):
        DistillConfig.from_mapping({"stpes": 7})


def test_gold_targets_need_responses(teacher):
    exs = small_lm.examples(2)
    exs[1].response = None
    with pytest.raises(ValueError, match="no response"):
        run_experiment(DistillConfig(steps=1, targets="gold", batch_size=2), teacher=teacher,
                       student=small_lm.small_student(teacher), examples=exs, save=False)


def test_fit_real_positions_level2(teacher):
    texts = [e.instruction for e in small_lm.examples(3)]
    pos = teacher_positions(teacher, texts, positions=20, seed=0)
    assert pos.logits.shape == (20, len(teacher.tokenizer))
    assert len(pos.next_token) == 20 and len(pos.text_index) == 20
    assert all(0 <= i < 3 for i in pos.text_index)
    again = teacher_positions(teacher, texts, positions=20, seed=0)
    assert torch.equal(again.logits, pos.logits)  # seeded choice of positions
    out = fit_real_positions(teacher, texts, ["fkl", "rkl"], positions=20, steps=40, lr=1.0)
    assert set(out) == {"positions", "fkl", "rkl"}
    for name in ("fkl", "rkl"):
        h = out[name].history
        assert h["fkl"][-1] < 0.5 * h["fkl"][0]
        assert out[name].final_q.shape == (20, len(teacher.tokenizer))
    with pytest.raises(ValueError, match="unknown loss"):
        fit_real_positions(teacher, texts, ["nope"])
    with pytest.raises(ValueError, match="texts"):
        teacher_positions(teacher, [], positions=3)


# ---------------------------------------------------------------------------------------------
# The real bundled teacher (slow): a few steps of truncate:4 per loss on a fixed batch
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["fkl", "rkl", "akl"])
def test_real_pair_loss_decreases(bundled_teacher, loss):
    from akl_core.lab import data, models

    exs = data.load_bundled("train")[:2]
    resp = data.teacher_responses(bundled_teacher, exs)
    student = models.load_student("truncate:4", bundled_teacher)
    cfg = DistillConfig(loss=loss, steps=4, batch_size=2, max_length=64, lr=5e-4,
                        probe_every=4)
    recs = run_experiment(cfg, teacher=bundled_teacher, student=student, examples=exs,
                          responses=resp, save=False).records
    losses = [r.loss for r in recs]
    assert losses[-1] < losses[0], losses
    assert recs[0].head_size < 50  # a real LLM's head is a handful of tokens
    probe = recs[-1].probe
    assert probe is not None and probe.teacher_topk[0][0][1] > 0.05
