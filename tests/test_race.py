"""The race (akl_core.lab.race): lockstep on the same rows from the same initialisation,
held-out metrics against an independent float64 computation, Stop between phases, bad input.
Small models (conftest's small_pair, kd_folders): each race runs in about a second."""

from __future__ import annotations

import json
import threading

import pytest
import torch

from akl_core.lab import runs
from akl_core.lab.distill import DistillConfig
from akl_core.lab.race import (
    HeldOut,
    RacerSpec,
    auto_threads,
    parse_racers,
    rounds_done,
    run_race,
)
from akl_core.lab.trainer import KDTrainer
from tests import reference as ref


def _config(folders, **kw) -> DistillConfig:
    base = dict(teacher=str(folders / "teacher"), student=str(folders / "student"),
                data=str(folders / "data.jsonl"), targets="gold", steps=3, batch_size=2,
                max_length=40, lr=1e-2, probe_every=0)
    base.update(kw)
    return DistillConfig(**base)


def _race(folders, pair, losses, tmp_path=None, **kw):
    config = kw.pop("config", None) or _config(folders)
    teacher, student = pair
    kw = {"save": tmp_path is not None, "save_student": False, "threads": 1, **kw}
    return run_race(losses, config, teacher=teacher, student=student,
                    heldout_source=str(folders / "data.jsonl"), runs_dir=tmp_path, **kw)


@pytest.fixture()
def calls(monkeypatch):
    """Every KDTrainer.compute_loss call while training: (thread name, loss, input_ids)."""
    seen: list[tuple[str, str, tuple]] = []
    original = KDTrainer.compute_loss

    def spy(self, model, inputs, *a, **k):
        if model.training:
            seen.append((threading.current_thread().name, self.kd_loss_name,
                         tuple(inputs["input_ids"].flatten().tolist())))
        return original(self, model, inputs, *a, **k)

    monkeypatch.setattr(KDTrainer, "compute_loss", spy)
    return seen


def test_racers_take_turns_on_the_same_rows_from_the_same_start(kd_folders, small_pair, calls,
                                                                 tmp_path):
    before = {k: v.clone() for k, v in small_pair[1].model.state_dict().items()}
    result = _race(kd_folders, small_pair, ["fkl", "rkl", "akl"], tmp_path)
    assert [r.error for r in result.racers] == [None] * 3
    # lockstep: strict turns, one step each, in racer order
    order = [c[1] for c in calls]
    assert order == ["fkl", "rkl", "akl"] * 3
    # the same rows at every step for every racer
    for step in range(3):
        rows = {c[2] for c in calls[3 * step: 3 * step + 3]}
        assert len(rows) == 1
    assert calls[0][2] != calls[3][2]  # and the stream moves on
    # same initialisation + same batch: step 1's training-batch KL(p||q), KL(q||p) (measured
    # before the update, independent of the loss) are equal for every racer
    first = [r.steps[0].record for r in result.racers]
    assert first[0].fkl == first[1].fkl == first[2].fkl
    assert first[0].rkl == first[1].rkl == first[2].rkl
    # ... and the curves then differ (different losses)
    assert result.racers[0].steps[-1].kl_pq != result.racers[1].steps[-1].kl_pq
    # the caller's student is not trained
    after = small_pair[1].model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    # run folders: one per racer, named and tagged with the race id, held-out metrics per step
    for r in result.racers:
        assert r.run_dir.name == f"{result.race_id}-{r.spec.name}"
        cfg = json.loads((r.run_dir / "config.json").read_text())
        assert cfg["meta"]["race"]["id"] == result.race_id
        assert cfg["meta"]["race"]["racer"] == r.spec.name
        assert runs.race_id(runs.load_run(r.run_dir)) == result.race_id  # Compare runs groups it
        assert cfg["loss"] == r.spec.loss
        lines = [json.loads(x) for x in (r.run_dir / "steps.jsonl").read_text().splitlines()]
        assert [x["heldout"]["kl_pq"] for x in lines] == [s.kl_pq for s in r.steps]


def test_racers_with_the_same_loss_draw_identical_curves(kd_folders, small_pair):
    result = _race(kd_folders, small_pair, [RacerSpec("akl"), RacerSpec("akl", label="akl-2")])
    curves = result.curves()
    assert list(curves) == ["akl", "akl-2"]
    assert curves["akl"] == curves["akl-2"]
    assert len(curves["akl"]["step"]) == 3


def test_heldout_metrics_equal_an_independent_computation(kd_folders, small_pair):
    result = _race(kd_folders, small_pair, ["fkl", ("akl", {"mu": 0.3})])
    config = _config(kd_folders)
    teacher = small_pair[0]
    # independently: the first batch_size examples of the held-out file, as for training
    from akl_core.lab import data

    exs = data.load_source(str(kd_folders / "data.jsonl"))[: config.batch_size]
    enc = data.tokenize_for_kd(teacher.tokenizer, exs, [e.response for e in exs],
                               max_length=config.max_length)
    valid = enc["labels"][:, 1:] != -100
    vocab = len(teacher.tokenizer)
    with torch.no_grad():
        t = teacher.model(input_ids=enc["input_ids"],
                          attention_mask=enc["attention_mask"]).logits[:, :-1][valid][:, :vocab]
    p = ref.probs(t)
    head = ref.head_members(p, 0.5, "reference")
    for r in result.racers:
        model = r.student.model
        model.eval()
        with torch.no_grad():
            s = model(input_ids=enc["input_ids"],
                      attention_mask=enc["attention_mask"]).logits[:, :-1][valid][:, :vocab]
        q = ref.probs(s)
        g_head, g_tail, w = ref.akl_parts(p, q, 0.5, "reference")
        want = {
            "kl_pq": float(ref.fkl(p, q).mean()), "kl_qp": float(ref.rkl(p, q).mean()),
            "g_head": float(g_head.mean()), "g_tail": float(g_tail.mean()),
            "w": float(w.mean()),
            "head_acc": float(head[torch.arange(len(s)), q.argmax(-1)].double().mean()),
            "own_loss": float(ref.reference_value(r.spec.loss, s, t, **dict(r.spec.params))
                              .mean()),
        }
        got = r.steps[-1]
        for key, value in want.items():
            assert getattr(got, key) == pytest.approx(value, rel=1e-4, abs=1e-6), (r.spec, key)
        assert got.step == 3 and got.train_loss == r.steps[-1].record.loss


def test_stop_between_phases_keeps_the_finished_steps(kd_folders, small_pair, calls, tmp_path):
    flag = threading.Event()
    seen_at_stop: list[int] = []
    original = KDTrainer.compute_loss

    def stop_during_forward(self, model, inputs, *a, **k):
        out = original(self, model, inputs, *a, **k)
        if model.training and len(calls) == 5:  # the 2nd racer's 2nd step, mid-forward
            flag.set()
            seen_at_stop.append(len(calls))
        return out

    pytest.MonkeyPatch().setattr(KDTrainer, "compute_loss", stop_during_forward)
    try:
        result = _race(kd_folders, small_pair, ["fkl", "rkl", "akl"], tmp_path,
                       config=_config(kd_folders, steps=50), should_stop=flag.is_set)
    finally:
        KDTrainer.compute_loss = original
    assert result.stopped
    # no forward after the flag: the current step ends after its backward, nothing else runs
    assert len(calls) == 5 == seen_at_stop[0]
    assert [len(r.steps) for r in result.racers] == [2, 1, 1]
    assert all(r.stopped and r.error is None for r in result.racers)
    for r in result.racers:
        lines = (r.run_dir / "steps.jsonl").read_text().splitlines()
        assert len(lines) == len(r.steps)
        assert json.loads((r.run_dir / "summary.json").read_text())["status"] == "stopped"


@pytest.mark.parametrize("losses, message", [
    (["akl"], "2 to 4 losses"),
    (["fkl", "rkl", "akl", "jsd", "tvd"], "2 to 4 losses"),
    (["fkl", "nope"], "unknown loss 'nope'"),
    (["fkl", "fkl"], "repeated: fkl"),
    ("fkl", "list of 2-4"),
    ([("akl", {"mu": 2.0}), "fkl"], "racer 'akl'"),
])
def test_bad_racers_are_refused_clearly(losses, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        parse_racers(losses)


def test_a_failing_racer_is_reported_at_once_and_the_others_finish(kd_folders, small_pair,
                                                                   monkeypatch):
    from akl_core.lab import trainer

    original = trainer.KDTrainer.compute_loss

    def broken_for_rkl(self, model, inputs, *a, **k):
        if self.kd_loss_name == "rkl":
            raise RuntimeError("planted failure")
        return original(self, model, inputs, *a, **k)

    monkeypatch.setattr(trainer.KDTrainer, "compute_loss", broken_for_rkl)
    reported = []
    result = _race(kd_folders, small_pair, ["fkl", "rkl", "akl"],
                   on_error=lambda label, msg: reported.append((label, msg)))
    assert reported == [("rkl", "RuntimeError: planted failure")]
    assert [r.error for r in result.racers] == [None, "RuntimeError: planted failure", None]
    steps = {r.spec.name: r.steps for r in result.racers}
    assert [len(v) for v in steps.values()] == [3, 0, 3]
    assert rounds_done(steps, failed={"rkl"}) == 3 and rounds_done(steps) == 0


def test_rounds_done_counts_the_slowest_live_racer():
    assert rounds_done({}) == 0
    assert rounds_done({"fkl": [1, 2], "rkl": [1], "akl": [1, 2]}) == 1
    assert rounds_done({"fkl": [1, 2], "rkl": []}, failed=["rkl"]) == 2
    assert rounds_done({"fkl": [1]}, failed=["fkl"]) == 0


def test_bad_racers_fail_before_any_run(kd_folders, small_pair, tmp_path):
    with pytest.raises(ValueError, match="2 to 4 losses"):
        _race(kd_folders, small_pair, ["fkl"], tmp_path)
    with pytest.raises(ValueError, match="threads must be"):
        _race(kd_folders, small_pair, ["fkl", "rkl"], tmp_path, threads=0)
    assert not any(tmp_path.iterdir())


def test_auto_threads_uses_every_core_up_to_four():
    assert auto_threads(1) == 1
    assert auto_threads(2) == 2
    assert auto_threads(16) == 4
    assert 1 <= auto_threads() <= 4


def test_heldout_needs_the_teacher(kd_folders):
    with pytest.raises(ValueError, match="teacher model"):
        HeldOut.build(None, _config(kd_folders))


def test_head_accuracy_counts_any_head_token_not_only_the_top1():
    from akl_core.headtail import head_mask

    # p = (0.2, 0.25, 0.1, 0.1, 0.35 spread on the rest): head (mu 0.5) = {1, 0}, top-1 = 1
    p = torch.tensor([[0.2, 0.25, 0.1, 0.1] + [0.35 / 12] * 12])
    t = p.log()
    held = HeldOut(input_ids=torch.zeros(1, 2, dtype=torch.long),
                   attention_mask=torch.ones(1, 2, dtype=torch.long),
                   valid=torch.ones(1, 1, dtype=torch.bool), teacher_logits=t,
                   head=head_mask(t, mu=0.5), vocab_size=16, temperature=1.0, source="-",
                   ids=["0"])
    assert held.head[0].nonzero().flatten().tolist() == [0, 1]
    in_head = torch.zeros(1, 16)
    in_head[0, 0] = 5.0  # the student's top token: the teacher's 2nd, in the head
    in_tail = torch.zeros(1, 16)
    in_tail[0, 2] = 5.0
    assert held.metrics(in_head, "fkl", {})["head_acc"] == 1.0
    assert held.metrics(in_tail, "fkl", {})["head_acc"] == 0.0
