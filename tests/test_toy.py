"""akl_core.lab.toy: the paper's toy claims as tests, plus targets, trainer mechanics and bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import akl_core
from akl_core.lab import toy

# ---------------------------------------------------------------------------------------------
# targets
# ---------------------------------------------------------------------------------------------


def test_fig2_targets_match_the_paper_setup():
    bi, uni = toy.fig2_bimodal(), toy.fig2_unimodal()
    for t in (bi, uni):
        assert t.size == 50
        np.testing.assert_allclose(t.x, np.arange(0, 100, 2))
        assert t.probs.sum() == pytest.approx(1.0, abs=1e-12)
        np.testing.assert_allclose(np.exp(t.log_probs), t.probs, rtol=1e-12)
        assert np.isfinite(t.log_probs).all()
    # bimodal: the heavier mode at 75, the lighter at 25, ratio ~ 0.5 / 0.3 at the peaks
    assert bi.x[np.argmax(bi.probs)] in (74.0, 76.0)
    left = bi.probs[bi.x < 50]
    assert bi.x[np.argmax(left)] in (24.0, 26.0)
    assert bi.probs.max() / left.max() == pytest.approx(0.5 / 0.3, rel=0.02)
    assert uni.x[np.argmax(uni.probs)] == 50.0
    # unimodal is symmetric around 50 on the bins 0..98 (bins 2 and 98 mirror)
    assert uni.probs[1] == pytest.approx(uni.probs[-1], rel=1e-9)


def test_fig3_long_tail_target():
    t = toy.fig3_long_tail()
    assert t.size == 80
    assert t.x[0] == 0.0 and t.x[-1] == pytest.approx(98.75)
    assert t.probs.sum() == pytest.approx(1.0, abs=1e-12)
    assert t.probs[0] > t.probs[20] > t.probs[40] > t.probs[79] > 0
    # half-Gaussian N(0, 16) times (1 + 0.01 U): within 1% of the clean shape
    clean = np.exp(-0.5 * (t.x / 16.0) ** 2)
    clean /= clean.sum()
    ratio = t.probs / clean
    assert ratio.max() / ratio.min() < 1.0101
    assert ratio.max() / ratio.min() > 1.001  # the noise is really there
    # the seed fixes the noise
    np.testing.assert_array_equal(t.probs, toy.fig3_long_tail().probs)
    assert not np.array_equal(t.probs, toy.fig3_long_tail(seed=2).probs)


def test_user_mixture_on_bins_and_make_target():
    t = toy.gaussian_mixture_on_bins([0, 1, 2, 3, 4], [1, 1], [0, 4], [0.5, 0.5], name="two")
    assert t.name == "two"
    np.testing.assert_allclose(t.probs, t.probs[::-1], rtol=1e-9)
    # far bins keep a finite log-probability (log space), even when exp underflows
    far = toy.gaussian_mixture_on_bins(np.arange(0, 2000, 10.0), [1.0], [0.0], [1.0])
    assert np.isfinite(far.log_probs).all()
    assert far.probs[0] == pytest.approx(1.0)
    assert toy.make_target("fig2_bimodal").name == "fig2_bimodal"
    assert set(toy.PAPER_SETTINGS) == set(toy.PRESETS)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"x": [], "weights": [1], "means": [0], "stds": [1]},  # empty support
        {"x": [0, 1], "weights": [-1, 2], "means": [0, 1], "stds": [1, 1]},  # negative weight
        {"x": [0, 1], "weights": [float("nan")], "means": [0], "stds": [1]},  # NaN weight
        {"x": [0, 1], "weights": [0, 0], "means": [0, 1], "stds": [1, 1]},  # not normalisable
        {"x": [0, 1], "weights": [1], "means": [0], "stds": [0]},  # zero std
        {"x": [0, 1], "weights": [1, 1], "means": [0], "stds": [1, 1]},  # length mismatch
        {"x": [0, float("nan")], "weights": [1], "means": [0], "stds": [1]},  # NaN support
        {"x": [0, 1], "weights": [float("inf")], "means": [0], "stds": [1]},  # inf weight
    ],
)
def test_bad_mixtures_raise(kwargs):
    with pytest.raises(ValueError):
        toy.gaussian_mixture_on_bins(**kwargs)


def test_bad_targets_raise():
    with pytest.raises(ValueError, match="unknown target"):
        toy.make_target("nope")
    with pytest.raises(ValueError):
        toy.target_from_probs([0.0, 0.0, 0.0])
    with pytest.raises(ValueError):
        toy.target_from_probs([0.5, -0.1])
    with pytest.raises(ValueError):
        toy.target_from_probs([])
    with pytest.raises(ValueError):
        toy.ContinuousMixture((1.0, -1.0), (0.0, 1.0), (1.0, 1.0))
    with pytest.raises(ValueError):
        toy.fig3_long_tail(noise=-1.0)


# ---------------------------------------------------------------------------------------------
# the paper's claims
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("preset", ["fig2_bimodal", "fig2_unimodal"])
@pytest.mark.parametrize("loss", ["fkl", "rkl"])
def test_fig2_both_fkl_and_rkl_reach_the_target(preset, loss):
    """Paper Fig. 2: on a discrete support free logits converge to p with FKL and with RKL."""
    settings = toy.PAPER_SETTINGS[preset]
    res = toy.train_free_logits(
        toy.make_target(preset), loss, steps=settings["steps"], lr=settings["lr"],
        seed=settings["seed"], record=["fkl", "rkl"], snapshot_steps=settings["snapshot_steps"],
    )
    assert res.at(1, "fkl") > 0.05  # far from p at the start: the claim is not vacuous
    assert res.at(200, "fkl") < 1e-3
    assert res.at(200, "rkl") < 1e-3
    assert sorted(res.snapshots) == [1, 200]
    assert np.abs(res.snapshots[200] - res.target).sum() < 0.05


def test_classic_demo_fkl_spreads_rkl_picks_a_mode():
    """Paper Fig. 1: one Gaussian vs a bimodal mixture; FKL moment-matches, RKL locks on a mode."""
    mix = toy.classic_mixture()
    fkl = toy.fit_gaussian(mix, "fkl")
    rkl = toy.fit_gaussian(mix, "rkl")
    assert fkl.std > rkl.std
    assert fkl.std > 2.0 * max(mix.stds)  # covers both modes
    # FKL's optimum is moment matching
    assert fkl.mean == pytest.approx(mix.mean(), abs=0.05)
    assert fkl.std == pytest.approx(mix.std(), rel=0.03)
    # RKL sits on one mode with about that mode's width
    nearest = min(mix.means, key=lambda m: abs(m - rkl.mean))
    assert abs(rkl.mean - nearest) < 0.2
    assert rkl.std == pytest.approx(mix.stds[0], rel=0.15)
    assert fkl.fitted.shape == fkl.x.shape == fkl.target.shape
    assert fkl.history["loss"][-1] < fkl.history["loss"][0]


@pytest.fixture(scope="module")
def long_tail_runs():
    target = toy.fig3_long_tail()
    s = toy.PAPER_SETTINGS["fig3_long_tail"]
    return target, {
        loss: toy.train_free_logits(target, loss, steps=s["steps"], lr=s["lr"], seed=s["seed"],
                                    snapshot_steps=s["snapshot_steps"], mu=0.5)
        for loss in ("fkl", "rkl", "akl")
    }


def test_long_tail_fkl_closes_the_head_first(long_tail_runs):
    """Paper Fig. 3: at step 10 FKL's head gap is far below RKL's (reference re-run: 0.068 vs
    0.198), while RKL is closer to the teacher on the far tail (bins 37..79)."""
    _, runs = long_tail_runs
    g_fkl, g_rkl = runs["fkl"].at(10, "g_head"), runs["rkl"].at(10, "g_head")
    assert g_fkl < g_rkl
    assert g_fkl == pytest.approx(0.068, abs=0.02)
    assert g_rkl == pytest.approx(0.198, abs=0.03)
    far = slice(37, None)
    tail = {k: np.abs(r.snapshots[10][far] - r.target[far]).sum() for k, r in runs.items()}
    assert tail["rkl"] < tail["fkl"]


def test_long_tail_everything_converges_by_step_300(long_tail_runs):
    _, runs = long_tail_runs
    for loss, res in runs.items():
        assert res.at(1, "g_head") + res.at(1, "g_tail") > 0.3, loss
        assert res.final("fkl") < 1e-3, loss
        assert res.final("g_head") + res.final("g_tail") < 0.01, loss
        assert res.history["step"][-1] == 300


@pytest.mark.parametrize("loss", ["fkl_rkl", "akl_r", "jsd", "tvd", "skl", "srkl", "ab", "taid"])
def test_long_tail_rest_of_catalogue_converges(loss):
    res = toy.train_free_logits(toy.fig3_long_tail(), loss, steps=300, lr=0.2, seed=1,
                                record=["fkl"])
    assert res.final("fkl") < 2e-3
    assert res.final("fkl") < 0.01 * res.at(0, "fkl")


# ---------------------------------------------------------------------------------------------
# trainer mechanics
# ---------------------------------------------------------------------------------------------


def test_diagnostics_match_akl_core_head_tail(long_tail_runs):
    target, runs = long_tail_runs
    res = runs["akl"]
    teacher = torch.tensor(target.log_probs, dtype=torch.float32)
    for step in (1, 10):
        student = torch.log(torch.tensor(res.snapshots[step]))
        ht = akl_core.head_tail(student, teacher, mu=0.5)
        assert res.at(step, "g_head") == pytest.approx(float(ht.g_head), abs=1e-5)
        assert res.at(step, "g_tail") == pytest.approx(float(ht.g_tail), abs=1e-5)
        assert res.at(step, "w") == pytest.approx(float(ht.w), abs=1e-5)
        fkl = float(akl_core.divergence("fkl", student, teacher))
        assert res.at(step, "fkl") == pytest.approx(fkl, rel=1e-3, abs=1e-6)
    # training loss recorded is AKL itself
    student = torch.log(torch.tensor(res.snapshots[5]))
    akl = float(akl_core.divergence("akl", student, teacher, mu=0.5))
    assert res.at(5, "loss") == pytest.approx(akl, rel=1e-3)


def test_deterministic_for_a_seed():
    t = toy.fig2_bimodal()
    a = toy.train_free_logits(t, "akl", steps=20, lr=0.1, seed=1, snapshot_steps=[0, 20])
    b = toy.train_free_logits(t, "akl", steps=20, lr=0.1, seed=1, snapshot_steps=[0, 20])
    c = toy.train_free_logits(t, "akl", steps=20, lr=0.1, seed=2, snapshot_steps=[0, 20])
    for key in a.history:
        np.testing.assert_array_equal(a.history[key], b.history[key])
    np.testing.assert_array_equal(a.snapshots[20], b.snapshots[20])
    assert not np.array_equal(a.snapshots[0], c.snapshots[0])
    # step 0 is the U(0, 1) initialisation from a torch.Generator seeded with `seed`
    init = torch.rand(1, 50, generator=torch.Generator().manual_seed(1))
    np.testing.assert_allclose(a.snapshots[0], torch.softmax(init, -1)[0].numpy(), rtol=1e-6)


def test_rows_train_independently_and_logits_equal_probs():
    """Many rows: each evolves as if alone ('sum' reduction); logits input == probs input."""
    t1, t2 = toy.fig2_bimodal(), toy.fig2_unimodal()
    both = np.stack([t1.probs, t2.probs])
    many = toy.train_free_logits(both, "rkl", steps=15, lr=0.1, seed=3, snapshot_steps=[15],
                                 per_row=True)
    one = toy.train_free_logits(t1.probs, "rkl", steps=15, lr=0.1, seed=3, snapshot_steps=[15])
    assert many.snapshots[15].shape == (2, 50)
    assert one.snapshots[15].shape == (50,)
    np.testing.assert_allclose(many.snapshots[15][0], one.snapshots[15], rtol=1e-5, atol=1e-7)
    assert many.rows["g_head"].shape == (16, 2)
    np.testing.assert_allclose(many.history["g_head"], many.rows["g_head"].mean(axis=1))
    logit = toy.train_free_logits(np.log(both) + 7.0, "rkl", steps=15, lr=0.1, seed=3,
                                  target_type="logits", snapshot_steps=[15])
    np.testing.assert_allclose(logit.snapshots[15], many.snapshots[15], rtol=1e-4, atol=1e-7)


def test_record_every_snapshot_rows_and_options():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, 300)) * 3
    res = toy.train_free_logits(logits, "akl", steps=10, lr=0.1, target_type="logits",
                                record=["fkl", "jsd", "tvd"], record_every=4,
                                snapshot_steps=[3, 10], snapshot_rows=[1, 4], optimizer="sgd")
    assert res.history["step"].tolist() == [0, 4, 8, 10]
    assert set(res.history) >= {"step", "loss", "fkl", "jsd", "tvd", "g_head", "g_tail", "w"}
    assert res.snapshots[3].shape == (2, 300)
    assert res.final_q.shape == (6, 300)
    assert ((res.history["w"] >= 0) & (res.history["w"] <= 1)).all()
    with pytest.raises(ValueError, match="not recorded"):
        res.at(3, "fkl")
    seen = []
    toy.train_free_logits(logits, "fkl", steps=3, target_type="logits",
                          progress=lambda done, total: seen.append((done, total)))
    assert seen == [(1, 3), (2, 3), (3, 3)]


def test_taid_uses_its_schedule():
    res = toy.train_free_logits(toy.fig2_unimodal(), "taid", steps=30, lr=0.1)
    assert res.params["t"] > 0.4  # TAIDSchedule grew t from its start
    fixed = toy.train_free_logits(toy.fig2_unimodal(), "taid", steps=30, lr=0.1,
                                  params={"t": 0.7})
    assert fixed.params["t"] == 0.7


def test_compare_losses():
    out = toy.compare_losses(toy.fig2_unimodal(), ["fkl", "rkl"], steps=5, lr=0.1)
    assert list(out) == ["fkl", "rkl"]
    assert out["fkl"].loss == "fkl"


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"loss": "kl"}, "unknown loss"),
        ({"steps": 0}, "steps"),
        ({"steps": -5}, "steps"),
        ({"steps": 2.5}, "steps"),
        ({"lr": 0.0}, "lr"),
        ({"lr": -0.1}, "lr"),
        ({"lr": float("nan")}, "lr"),
        ({"optimizer": "lbfgs"}, "optimizer"),
        ({"record": ["fkl", "nope"]}, "nope"),
        ({"snapshot_steps": [11]}, "snapshot_steps"),
        ({"mu": 1.5}, "mu"),
        ({"params": {"beta": 0.3}}, "beta"),
        ({"target_type": "probabilities"}, "target_type"),
        ({"record_every": 0}, "record_every"),
    ],
)
def test_trainer_bad_arguments_raise(kwargs, match):
    args = {"loss": "akl", "steps": 10, "lr": 0.1}
    args.update(kwargs)
    loss = args.pop("loss")
    with pytest.raises(ValueError, match=match):
        toy.train_free_logits(toy.fig2_unimodal(), loss, **args)


@pytest.mark.parametrize(
    "target",
    [
        [[0.5, float("nan")]],
        [0.5, -0.5, 1.0],
        [[0.0, 0.0], [0.5, 0.5]],
        [],
        np.ones((2, 2, 2)),
        "abc",
    ],
)
def test_trainer_bad_targets_raise(target):
    with pytest.raises(ValueError):
        toy.train_free_logits(target, "fkl", steps=2)


def test_fit_gaussian_bad_arguments_raise():
    mix = toy.classic_mixture()
    with pytest.raises(ValueError):
        toy.fit_gaussian(mix, "nope")
    with pytest.raises(ValueError):
        toy.fit_gaussian(mix, "fkl", steps=0)
    with pytest.raises(ValueError):
        toy.fit_gaussian(mix, "fkl", init_std=-1.0)
    assert math.isclose(sum(mix.weights), 1.0)


def test_full_vocabulary_rows_run():
    """Level-2 shape: several rows of a 49k vocabulary given as teacher logits."""
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 49152, generator=gen) * 4
    res = toy.train_free_logits(logits, "akl", steps=3, lr=0.1, target_type="logits",
                                record=["fkl"], snapshot_steps=[3], snapshot_rows=[2])
    assert res.snapshots[3].shape == (1, 49152)
    assert res.final_q.shape == (4, 49152)
    assert res.history["fkl"][-1] < res.history["fkl"][0]
    with pytest.raises(ValueError, match="snapshot_rows"):
        toy.train_free_logits(logits, "fkl", steps=1, target_type="logits", snapshot_rows=[4])


# ---------------------------------------------------------------------------------------------
# one head for the loss and its diagnostics; realistic starts; tail regions
# ---------------------------------------------------------------------------------------------


def test_diagnostics_use_the_head_the_loss_trains_with():
    """params={'mu': 0.8} must also set the recorded g_head / g_tail / w (one head, not two)."""
    t = toy.fig3_long_tail()
    teacher = torch.tensor(t.log_probs, dtype=torch.float32)
    res = toy.train_free_logits(t, "akl", steps=6, lr=0.2, params={"mu": 0.8},
                                snapshot_steps=[3])
    assert res.mu == 0.8 and res.params["mu"] == 0.8
    student = torch.log(torch.tensor(res.snapshots[3]))
    ht = akl_core.head_tail(student, teacher, mu=0.8)
    assert res.at(3, "w") == pytest.approx(float(ht.w), abs=1e-5)
    assert res.at(3, "g_head") == pytest.approx(float(ht.g_head), abs=1e-5)
    # the head at mu 0.5 is a different one: the diagnostics would differ
    assert abs(float(akl_core.head_tail(student, teacher, mu=0.5).w) - float(ht.w)) > 1e-3
    # same through the mu argument; a conflict is refused
    same = toy.train_free_logits(t, "akl", steps=6, lr=0.2, mu=0.8, snapshot_steps=[3])
    np.testing.assert_array_equal(same.history["w"], res.history["w"])
    with pytest.raises(ValueError, match="mu given twice"):
        toy.train_free_logits(t, "akl", steps=2, mu=0.5, params={"mu": 0.8})
    with pytest.raises(ValueError, match="boundary given twice"):
        toy.train_free_logits(t, "akl_r", steps=2, boundary="paper",
                              params={"boundary": "reference"})
    # losses without a head: mu only sets the diagnostics' split
    fkl = toy.train_free_logits(t, "fkl", steps=2, mu=0.8)
    assert fkl.mu == 0.8 and "mu" not in fkl.params


def test_init_logits_start_and_regions():
    rng = np.random.default_rng(3)
    teacher = rng.normal(size=(3, 40)) * 3
    start = rng.normal(size=(3, 40))
    res = toy.train_free_logits(teacher, "rkl", steps=4, lr=0.1, target_type="logits",
                                init_logits=start, snapshot_steps=[0])
    np.testing.assert_allclose(res.snapshots[0], torch.softmax(torch.tensor(start), -1).numpy(),
                               rtol=1e-5)
    assert isinstance(start, np.ndarray)  # the caller's array is not trained in place
    far = np.zeros((3, 40), dtype=bool)
    far[:, 20:] = True
    res = toy.train_free_logits(teacher, "fkl", steps=3, lr=0.1, target_type="logits",
                                init_logits=start, regions={"far": far}, snapshot_steps=[2],
                                per_row=True)
    q = res.snapshots[2]
    p = torch.softmax(torch.tensor(teacher), -1).numpy()
    l1 = (np.abs(p - q) * far).sum(-1)
    logabs = (np.abs(np.log(q) - np.log(p)) * far).sum(-1) / far.sum(-1)
    np.testing.assert_allclose(res.rows["l1_far"][2], l1, rtol=1e-4)
    np.testing.assert_allclose(res.rows["logabs_far"][2], logabs, rtol=1e-4)
    with pytest.raises(ValueError, match="init_logits has shape"):
        toy.train_free_logits(teacher, "fkl", steps=1, target_type="logits",
                              init_logits=start[:2])
    with pytest.raises(ValueError, match="finite"):
        toy.train_free_logits(teacher, "fkl", steps=1, target_type="logits",
                              init_logits=np.full((3, 40), np.nan))
    with pytest.raises(ValueError, match="boolean"):
        toy.train_free_logits(teacher, "fkl", steps=1, target_type="logits",
                              regions={"far": far.astype(float)})
    with pytest.raises(ValueError, match="identifiers"):
        toy.train_free_logits(teacher, "fkl", steps=1, target_type="logits",
                              regions={"far tail": far})


def test_long_tail_head_first_depends_on_the_step():
    """Fig. 3 at lr 0.2: FKL's head gap is below RKL's for steps 1-19, not at 20-25 (RKL's
    gap falls through FKL's), below again after; the toy's head-first claim is step-bound."""
    from akl_core.lab import analysis

    t = toy.fig3_long_tail()
    runs = {name: toy.train_free_logits(t, name, steps=40, lr=0.2, seed=1)
            for name in ("fkl", "rkl")}
    cmp = analysis.head_first_over_steps(runs["fkl"], runs["rkl"])
    assert cmp["flip_step"] == 20
    not_below = [s for s in range(1, 41) if s not in cmp["first_below"]]
    assert not_below == [20, 21, 22, 23, 24, 25]


def test_a_targets_head_is_akl_cores_head_mask():
    t = toy.fig3_long_tail()
    for mu, boundary in [(0.5, "reference"), (0.8, "paper")]:
        expected = akl_core.head_mask(torch.as_tensor(t.log_probs), mu=mu, boundary=boundary)
        np.testing.assert_array_equal(t.head(mu, boundary), expected.numpy())
    assert 1 < t.head(0.8).sum() < t.size
