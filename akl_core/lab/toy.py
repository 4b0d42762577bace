"""Toy experiments (levels 1 and 2 of DESIGN.md): targets on bins, a continuous one-Gaussian
student, and a free-logit trainer for any `[N, V]` target.

Conventions: p = teacher / target distribution, q = student distribution; every loss and
divergence comes from akl_core itself (`distillation_loss`, `per_token_divergences`,
`head_mask`). A "step" counts optimizer updates: step 0 is the initial student, step k is the
student after k updates.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

import akl_core
from akl_core._checks import check_positive

__all__ = [
    "DiscreteTarget",
    "ContinuousMixture",
    "GaussianFit",
    "TrainResult",
    "PAPER_SETTINGS",
    "PRESETS",
    "gaussian_mixture_on_bins",
    "target_from_probs",
    "fig2_bimodal",
    "fig2_unimodal",
    "fig3_long_tail",
    "make_target",
    "classic_mixture",
    "fit_gaussian",
    "train_free_logits",
    "compare_losses",
]

# ----------------------------------------------------------------------------------------------
# Discrete targets on bins
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DiscreteTarget:
    """A target distribution over V bins.

    x: bin positions [V] (for plotting); probs: p [V], sums to 1; log_probs: log p [V]
    (finite, computed in log space, usable directly as teacher logits).
    """

    name: str
    x: np.ndarray
    probs: np.ndarray
    log_probs: np.ndarray
    description: str = ""

    @property
    def logits(self) -> np.ndarray:
        """Teacher logits whose softmax is `probs` (= log_probs)."""
        return self.log_probs

    @property
    def size(self) -> int:
        return int(self.probs.shape[-1])

    def head(self, mu: float = 0.5, boundary: str = "reference") -> np.ndarray:
        """Bool `[V]`: the bins of the target's head (akl_core.head_mask)."""
        return akl_core.head_mask(torch.as_tensor(self.log_probs), mu=mu,
                                  boundary=boundary).numpy()


def _as_float_array(values: object, label: str, *, ndim: int | None = 1) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{label} must be numbers, got {values!r}") from None
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{label} must be a {ndim}-d sequence, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{label} is empty")
    if np.isnan(arr).any():
        raise ValueError(f"{label} contains NaN")
    return arr


def _check_support(x: object) -> np.ndarray:
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"bin positions must be numbers, got {x!r}") from None
    if arr.ndim != 1:
        raise ValueError(f"bin positions must be 1-d, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError("empty support: the target needs at least one bin")
    if not np.isfinite(arr).all():
        raise ValueError("bin positions must be finite (found NaN or inf)")
    return arr


def _normalise_log(logw: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Normalise log-weights over the last axis; return (probs, log_probs)."""
    top = logw.max(axis=-1, keepdims=True)
    if not np.isfinite(top).all():
        raise ValueError(
            f"{what} is not normalisable: every bin has zero (or infinite) weight"
        )
    lse = top + np.log(np.exp(logw - top).sum(axis=-1, keepdims=True))
    log_probs = logw - lse
    return np.exp(log_probs), log_probs


def _gauss_logpdf(x: np.ndarray, mean: float, std: float) -> np.ndarray:
    z = (x - mean) / std
    return -0.5 * z * z - math.log(std) - 0.5 * math.log(2 * math.pi)


def _check_mixture(
    weights: Sequence[float], means: Sequence[float], stds: Sequence[float]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    w = _as_float_array(weights, "mixture weights")
    m = _as_float_array(means, "mixture means")
    s = _as_float_array(stds, "mixture stds")
    if not (w.size == m.size == s.size):
        raise ValueError(
            f"mixture weights, means and stds must have the same length, got "
            f"{w.size}, {m.size}, {s.size}"
        )
    if not np.isfinite(w).all() or (w < 0).any():
        raise ValueError(f"mixture weights must be finite and >= 0, got {w.tolist()}")
    if w.sum() <= 0:
        raise ValueError("mixture weights are all zero: the target is not normalisable")
    if not np.isfinite(m).all():
        raise ValueError(f"mixture means must be finite, got {m.tolist()}")
    if not np.isfinite(s).all() or (s <= 0).any():
        raise ValueError(f"mixture stds must be finite and > 0, got {s.tolist()}")
    return w, m, s


def gaussian_mixture_on_bins(
    x: Sequence[float],
    weights: Sequence[float],
    means: Sequence[float],
    stds: Sequence[float],
    *,
    name: str = "mixture",
    description: str = "",
) -> DiscreteTarget:
    """p(x_i) proportional to sum_k weights[k] * N(x_i; means[k], stds[k]) on the bins `x`.

    Weights need not sum to 1 (the result is normalised over the bins). Computed in log space,
    so bins far from every component get tiny but finite log-probabilities. Raises ValueError
    on an empty support, negative/NaN weights, non-positive stds or mismatched lengths.
    """
    xs = _check_support(x)
    w, m, s = _check_mixture(weights, means, stds)
    with np.errstate(divide="ignore"):
        logw = np.log(w)
    comps = np.stack([logw[k] + _gauss_logpdf(xs, m[k], s[k]) for k in range(w.size)])
    top = comps.max(axis=0)
    safe_top = np.where(np.isfinite(top), top, 0.0)
    mix = safe_top + np.log(np.exp(comps - safe_top).sum(axis=0))
    mix = np.where(np.isfinite(top), mix, -np.inf)
    probs, log_probs = _normalise_log(mix, f"target {name!r}")
    if not np.isfinite(log_probs).all():
        raise ValueError(f"target {name!r} has bins of exactly zero weight")
    return DiscreteTarget(name, xs, probs, log_probs, description)


def target_from_probs(
    probs: Sequence[float], x: Sequence[float] | None = None, *, name: str = "custom"
) -> DiscreteTarget:
    """A target from explicit non-negative weights [V] (normalised here); x defaults to 0..V-1.

    Zero entries are allowed (log p = -inf there; reverse-KL-type losses are then infinite,
    and the trainer raises a clear error if that happens).
    """
    p = _as_float_array(probs, "target probabilities")
    if not np.isfinite(p).all() or (p < 0).any():
        raise ValueError("target probabilities must be finite and >= 0")
    xs = np.arange(p.size, dtype=np.float64) if x is None else _check_support(x)
    if xs.size != p.size:
        raise ValueError(f"x has {xs.size} bins but probs has {p.size}")
    with np.errstate(divide="ignore"):
        probs_n, log_probs = _normalise_log(np.log(p), f"target {name!r}")
    return DiscreteTarget(name, xs, probs_n, log_probs)


FIG2_X = np.arange(0.0, 100.0, 2.0)  # 50 bins: 0, 2, ..., 98
FIG3_X = np.arange(80) * 1.25  # 80 bins: 0, 1.25, ..., 98.75


def fig2_bimodal() -> DiscreteTarget:
    """Paper Fig. 2 (left): 50 bins, p proportional to 0.5*N(75, 10) + 0.3*N(25, 10)."""
    return gaussian_mixture_on_bins(
        FIG2_X, [0.5, 0.3], [75.0, 25.0], [10.0, 10.0], name="fig2_bimodal",
        description="Fig. 2 bimodal: 0.5*N(75,10) + 0.3*N(25,10) on 50 bins",
    )


def fig2_unimodal() -> DiscreteTarget:
    """Paper Fig. 2 (right): 50 bins, p proportional to 0.8*N(50, 15)."""
    return gaussian_mixture_on_bins(
        FIG2_X, [0.8], [50.0], [15.0], name="fig2_unimodal",
        description="Fig. 2 unimodal: 0.8*N(50,15) on 50 bins",
    )


def fig3_long_tail(*, seed: int = 1, noise: float = 0.01, std: float = 16.0) -> DiscreteTarget:
    """Paper Fig. 3: 80 bins x = 0, 1.25, ..., 98.75; half-Gaussian N(0, std) times (1 + noise*U),
    U ~ Uniform(0, 1) drawn with numpy's default_rng(seed); normalised."""
    if not math.isfinite(noise) or noise < 0:
        raise ValueError(f"noise must be finite and >= 0, got {noise}")
    if not math.isfinite(std) or std <= 0:
        raise ValueError(f"std must be finite and > 0, got {std}")
    u = np.random.default_rng(seed).uniform(0.0, 1.0, FIG3_X.size)
    logw = _gauss_logpdf(FIG3_X, 0.0, std) + np.log1p(noise * u)
    probs, log_probs = _normalise_log(logw, "fig3_long_tail")
    return DiscreteTarget(
        "fig3_long_tail", FIG3_X.copy(), probs, log_probs,
        f"Fig. 3 long tail: half-Gaussian N(0,{std:g}) x (1 + {noise:g}*U) on 80 bins",
    )


PRESETS: dict[str, Callable[[], DiscreteTarget]] = {
    "fig2_bimodal": fig2_bimodal,
    "fig2_unimodal": fig2_unimodal,
    "fig3_long_tail": fig3_long_tail,
}

#: The paper's optimisation settings per preset (Adam, seed 1).
PAPER_SETTINGS: dict[str, dict] = {
    "fig2_bimodal": {"lr": 0.1, "steps": 200, "snapshot_steps": (1, 200), "seed": 1},
    "fig2_unimodal": {"lr": 0.1, "steps": 200, "snapshot_steps": (1, 200), "seed": 1},
    "fig3_long_tail": {"lr": 0.2, "steps": 300, "snapshot_steps": (1, 5, 10, 300), "seed": 1},
}


def make_target(name: str) -> DiscreteTarget:
    """Build a preset target by name (see PRESETS)."""
    if name not in PRESETS:
        raise ValueError(f"unknown target preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]()


# ----------------------------------------------------------------------------------------------
# Continuous demo: one Gaussian student vs a Gaussian mixture
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ContinuousMixture:
    """A 1-D Gaussian mixture density sum_k w_k N(x; means_k, stds_k) (weights normalised)."""

    weights: tuple[float, ...]
    means: tuple[float, ...]
    stds: tuple[float, ...]

    def __post_init__(self) -> None:
        w, m, s = _check_mixture(self.weights, self.means, self.stds)
        object.__setattr__(self, "weights", tuple((w / w.sum()).tolist()))
        object.__setattr__(self, "means", tuple(m.tolist()))
        object.__setattr__(self, "stds", tuple(s.tolist()))

    def log_density(self, x: np.ndarray) -> np.ndarray:
        xs = np.asarray(x, dtype=np.float64)
        comps = np.stack(
            [math.log(w) + _gauss_logpdf(xs, m, s) for w, m, s in self._components()]
        )
        top = comps.max(axis=0)
        return top + np.log(np.exp(comps - top).sum(axis=0))

    def density(self, x: np.ndarray) -> np.ndarray:
        return np.exp(self.log_density(x))

    def mean(self) -> float:
        return float(sum(w * m for w, m, _ in self._components()))

    def std(self) -> float:
        mu = self.mean()
        var = sum(w * (s * s + (m - mu) ** 2) for w, m, s in self._components())
        return float(math.sqrt(var))

    def grid(self, size: int = 801, pad: float = 6.0) -> np.ndarray:
        """Evenly spaced points covering every component, and the mixture as a whole, +- pad
        stds (wide enough that a fitted Gaussian is not truncated by the grid)."""
        mu, sd = self.mean(), self.std()
        lo = min([mu - pad * sd] + [m - pad * s for _, m, s in self._components()])
        hi = max([mu + pad * sd] + [m + pad * s for _, m, s in self._components()])
        return np.linspace(lo, hi, int(size))

    def _components(self) -> Iterable[tuple[float, float, float]]:
        return [(w, m, s) for w, m, s in zip(self.weights, self.means, self.stds) if w > 0]


def classic_mixture() -> ContinuousMixture:
    """The classic demo's bimodal target: 0.4*N(-3, 0.8) + 0.6*N(3, 0.8)."""
    return ContinuousMixture((0.4, 0.6), (-3.0, 3.0), (0.8, 0.8))


@dataclass
class GaussianFit:
    """Result of fitting one Gaussian N(mean, std) to a ContinuousMixture with a divergence.

    x: grid [G]; target: target density on the grid [G]; fitted: fitted density [G];
    history: per step arrays 'step', 'mean', 'std', 'loss'.
    """

    loss: str
    mean: float
    std: float
    x: np.ndarray
    target: np.ndarray
    fitted: np.ndarray
    history: dict[str, np.ndarray]


def fit_gaussian(
    mixture: ContinuousMixture,
    loss: str = "fkl",
    *,
    steps: int = 300,
    lr: float = 0.1,
    init_mean: float | None = None,
    init_std: float | None = None,
    seed: int = 1,
    grid_size: int = 801,
    params: dict | None = None,
) -> GaussianFit:
    """Fit a single Gaussian student to `mixture` by minimising `loss` with Adam.

    The densities are discretised on an even grid (akl_core's divergences then act on the
    grid points as a "vocabulary": teacher logits = log p(x), student logits = log q(x)),
    which approximates the continuous divergence. Parameters: mean and log std. The default
    start is the mixture's mean plus a small seeded jitter (N(0, 0.1 * mixture std)), with the
    smallest component std: from there FKL widens to cover every mode and RKL slides into one.
    """
    loss = _check_loss(loss)
    steps = _check_steps(steps)
    lr = check_positive("lr", lr)
    extra = akl_core.resolve_params(loss, **(params or {}))
    if grid_size < 16:
        raise ValueError(f"grid_size must be >= 16, got {grid_size}")
    x = mixture.grid(grid_size)
    gen = torch.Generator().manual_seed(int(seed))
    jitter = float(torch.randn((), generator=gen)) * 0.1 * mixture.std()
    m0 = mixture.mean() + jitter if init_mean is None else float(init_mean)
    s0 = min(mixture.stds) if init_std is None else float(init_std)
    if not (math.isfinite(m0) and math.isfinite(s0) and s0 > 0):
        raise ValueError(f"init_mean must be finite and init_std > 0, got {m0}, {s0}")

    xt = torch.as_tensor(x, dtype=torch.float64)
    teacher = torch.as_tensor(mixture.log_density(x), dtype=torch.float64)
    mean = torch.tensor(m0, dtype=torch.float64, requires_grad=True)
    log_std = torch.tensor(math.log(s0), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([mean, log_std], lr=lr)

    def student_logits() -> torch.Tensor:
        return -0.5 * ((xt - mean) / log_std.exp()) ** 2 - log_std

    hist: dict[str, list[float]] = {"step": [], "mean": [], "std": [], "loss": []}
    for step in range(steps + 1):
        value = akl_core.divergence(loss, student_logits(), teacher, **extra)
        if not torch.isfinite(value):
            raise ValueError(f"{loss} became non-finite at step {step} of the Gaussian fit")
        hist["step"].append(step)
        hist["mean"].append(float(mean.detach()))
        hist["std"].append(float(log_std.detach().exp()))
        hist["loss"].append(float(value.detach()))
        if step == steps:
            break
        opt.zero_grad()
        value.backward()
        opt.step()

    mu, sd = float(mean.detach()), float(log_std.detach().exp())
    fitted = np.exp(_gauss_logpdf(x, mu, sd))
    return GaussianFit(
        loss, mu, sd, x, mixture.density(x), fitted,
        {k: np.asarray(v) for k, v in hist.items()},
    )


# ----------------------------------------------------------------------------------------------
# Free-logit trainer (levels 1 and 2)
# ----------------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    """Output of `train_free_logits`.

    history: 'step' [R] (the recorded steps) and, per recorded step, 'loss' (training loss, mean
    over rows), every requested divergence, 'g_head', 'g_tail', 'w' (AKL weight on FKL), each a
    float array [R] averaged over rows. rows: the same keys (not 'step') per row, [R, N], only
    when per_row=True. snapshots: step -> q as float32 array [n, V] (rows picked by
    snapshot_rows), or [V] when the target was a single 1-d distribution.
    """

    loss: str
    params: dict
    lr: float
    steps: int
    seed: int
    mu: float
    target: np.ndarray
    history: dict[str, np.ndarray]
    snapshots: dict[int, np.ndarray]
    final_q: np.ndarray
    rows: dict[str, np.ndarray] = field(default_factory=dict)

    def at(self, step: int, key: str) -> float:
        """History value `key` at a recorded `step`."""
        steps = self.history["step"]
        idx = np.nonzero(steps == step)[0]
        if idx.size == 0:
            raise ValueError(f"step {step} was not recorded (record_every skipped it)")
        return float(self.history[key][idx[0]])

    def final(self, key: str) -> float:
        return float(self.history[key][-1])


_OPTIMIZERS = ("adam", "sgd")


def _check_loss(loss: str) -> str:
    if not isinstance(loss, str) or loss not in akl_core.LOSSES:
        raise ValueError(f"unknown loss {loss!r}; choose one of {sorted(akl_core.LOSSES)}")
    return loss


def _check_steps(steps: int) -> int:
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps <= 0:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    return int(steps)


def _teacher_logits(target: object, target_type: str) -> tuple[torch.Tensor, bool]:
    """Return teacher logits [N, V] (float32) and whether the input was a single 1-d row."""
    if target_type not in ("probs", "logits"):
        raise ValueError(f"target_type must be 'probs' or 'logits', got {target_type!r}")
    if isinstance(target, DiscreteTarget):
        return torch.as_tensor(target.log_probs, dtype=torch.float32)[None], True
    if isinstance(target, torch.Tensor):
        t = target.detach().to(torch.float64)  # stays on its device (CPU or GPU)
    else:
        try:
            t = torch.as_tensor(np.asarray(target, dtype=np.float64))
        except (TypeError, ValueError):
            raise ValueError("target must be a DiscreteTarget or an array of numbers") from None
    single = t.dim() == 1
    if single:
        t = t[None]
    if t.dim() != 2:
        raise ValueError(f"target must have shape [V] or [N, V], got {tuple(t.shape)}")
    if t.shape[0] == 0 or t.shape[1] == 0:
        raise ValueError(f"empty target of shape {tuple(t.shape)}")
    if torch.isnan(t).any():
        raise ValueError("target contains NaN")
    if target_type == "logits":
        if torch.isposinf(t).any():
            raise ValueError("teacher logits contain +inf")
        if torch.isneginf(t).all(dim=-1).any():
            raise ValueError("a row of teacher logits is all -inf (not normalisable)")
        return t.to(torch.float32), single
    if torch.isinf(t).any() or (t < 0).any():
        raise ValueError("target probabilities must be finite and >= 0")
    sums = t.sum(dim=-1)
    if (sums <= 0).any():
        bad = int(torch.nonzero(sums <= 0)[0, 0])
        raise ValueError(f"target row {bad} sums to 0: not normalisable")
    logp = torch.log(t / sums[:, None])
    return logp.to(torch.float32), single


def train_free_logits(
    target: object,
    loss: str = "akl",
    *,
    steps: int = 200,
    lr: float = 0.1,
    seed: int = 1,
    params: dict | None = None,
    record: Sequence[str] = ("fkl", "rkl"),
    snapshot_steps: Sequence[int] = (),
    snapshot_rows: Sequence[int] | None = None,
    mu: float | None = None,
    boundary: str | None = None,
    optimizer: str = "adam",
    target_type: str = "probs",
    record_every: int = 1,
    per_row: bool = False,
    progress: bool | Callable[[int, int], None] = False,
    init_logits: object = None,
    regions: Mapping[str, object] | None = None,
) -> TrainResult:
    """Fit free student logits z [N, V] to a fixed target with an akl_core loss.

    target: a DiscreteTarget, or probabilities [V] / [N, V] (rows normalised here), or teacher
    logits with target_type='logits' (e.g. real LLM next-token logits). The student starts at
    z ~ U(0, 1) from a torch.Generator seeded with `seed` (the paper uses seed 1) and is trained
    with Adam (or SGD) on the sum over rows of distillation_loss(z, teacher, loss=loss,
    reduction='none', **params): every row evolves exactly as it would alone. For 'akl' /
    'akl_r' the loss uses `mu` and `boundary` unless `params` sets them; 'taid' without a fixed
    params['t'] follows akl_core.TAIDSchedule. A torch tensor target stays on its device (GPU
    works; the initialisation is drawn on the CPU, so it is the same on every device).
    init_logits: start from these student logits [N, V] (or [V]) instead of U(0, 1), e.g. a
    real student's own logits at the same positions; `seed` is then unused by the init.

    One head for training and diagnostics: mu / boundary default to 0.5 / "reference"; for
    'akl' / 'akl_r' a `params` entry sets them as well, and giving both with different values
    raises ValueError. The recorded g_head, g_tail and w always use the head the loss uses.
    Cost per step: one loss forward/backward, plus one pass per recorded quantity on recorded
    steps; for large [N, V] use record_every > 1 and a short `record`.

    Recorded (mean over rows, every `record_every` steps plus the last): training loss, every
    divergence named in `record` (akl_core.per_token_divergences, default parameters), and the
    head/tail diagnostics for the split `mu`: g_head, g_tail and the AKL weight w (the teacher's
    head mask is computed once with akl_core.head_mask; gaps use the detached q).
    regions: {name: bool mask [N, V] or [V]} of vocabulary entries (e.g. near and far tail by
    teacher rank, akl_core.lab.analysis.rank_regions); each adds two recorded keys:
    'l1_<name>' = sum over the region of |p - q| and 'logabs_<name>' = mean over the region of
    |log q - log p| (closeness in log space, which L1 cannot see in a thin tail).
    """
    loss = _check_loss(loss)
    steps = _check_steps(steps)
    lr = check_positive("lr", lr)
    if optimizer not in _OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; choose one of {_OPTIMIZERS}")
    if isinstance(record_every, bool) or not isinstance(record_every, int) or record_every < 1:
        raise ValueError(f"record_every must be a positive integer, got {record_every!r}")
    record = [record] if isinstance(record, str) else list(record)
    for name in record:
        if name not in akl_core.LOSSES:
            raise ValueError(f"cannot record unknown divergence {name!r}")
    snaps = sorted({int(s) for s in snapshot_steps})
    if snaps and (snaps[0] < 0 or snaps[-1] > steps):
        raise ValueError(f"snapshot_steps must lie in [0, {steps}], got {list(snapshot_steps)}")
    loss_params = dict(params or {})
    mu, boundary = _one_head(loss, loss_params, mu, boundary)
    loss_params = akl_core.resolve_params(loss, **loss_params)
    schedule = None
    if loss == "taid" and "t" not in (params or {}):
        schedule = akl_core.TAIDSchedule()

    teacher, single = _teacher_logits(target, target_type)
    n_rows, vocab = teacher.shape
    rows_idx = None
    if snapshot_rows is not None:
        picked = [int(r) for r in snapshot_rows]
        if not picked or min(picked) < 0 or max(picked) >= n_rows:
            raise ValueError(f"snapshot_rows must index rows 0..{n_rows - 1}, got {picked}")
        rows_idx = torch.tensor(picked, dtype=torch.long, device=teacher.device)

    with torch.no_grad():
        log_p = torch.log_softmax(teacher, dim=-1)
        p = log_p.exp()
        head = akl_core.head_mask(teacher, mu=mu, boundary=boundary)
    region_masks = _region_masks(regions, n_rows, vocab, teacher.device)
    if init_logits is None:
        gen = torch.Generator().manual_seed(int(seed))
        z = torch.rand(n_rows, vocab, generator=gen, dtype=torch.float32).to(teacher.device)
    else:
        z = _init_logits(init_logits, n_rows, vocab, teacher.device)
    z.requires_grad_(True)
    opt = _make_optimizer(optimizer, z, lr)

    keys = ["loss", *record, "g_head", "g_tail", "w"]
    for name in region_masks:
        keys += [f"l1_{name}", f"logabs_{name}"]
    rec_steps: list[int] = []
    rec: dict[str, list[torch.Tensor]] = {k: [] for k in keys}
    snapshots: dict[int, np.ndarray] = {}
    report = _progress(progress, steps)

    for step in range(steps + 1):
        last = step == steps
        want_record = last or step % record_every == 0
        if schedule is not None:
            loss_params["t"] = float(schedule.t)
        with torch.set_grad_enabled(not last):
            # one call per step: per-row values [N]; their sum is the training objective
            per_row_loss = akl_core.distillation_loss(
                z, teacher, loss=loss, reduction="none", **loss_params
            )
            value = per_row_loss.sum()
        value_f = float(value.detach())
        if not math.isfinite(value_f):
            raise ValueError(
                f"loss {loss!r} became non-finite at step {step}; the target may have "
                f"zero-probability entries (reverse-KL-type losses are infinite there) or "
                f"lr={lr} is too large"
            )
        with torch.no_grad():
            zd = z.detach()
            if step in snaps:
                q = torch.softmax(zd if rows_idx is None else zd[rows_idx], dim=-1)
                q = q.cpu().numpy().copy()
                snapshots[step] = q[0] if single else q
            if want_record:
                rec_steps.append(step)
                rec["loss"].append(per_row_loss.detach().reshape(n_rows).float())
                if record:
                    divs = akl_core.per_token_divergences(zd, teacher, names=record)
                    for name in record:  # divergences are >= 0: float rounding
                        # near q = p can give -1e-8, clamped at 0
                        rec[name].append(divs[name].reshape(n_rows).float().clamp_min(0.0))
                gap = (p - torch.softmax(zd, dim=-1)).abs_()
                g_total = gap.sum(-1)
                g_head = gap.mul_(head).sum(-1)
                g_tail = (g_total - g_head).clamp_min(0.0)
                w = torch.where(g_total > 0, g_head / g_total.clamp_min(1e-30),
                                torch.full_like(g_total, 0.5))
                rec["g_head"].append(g_head)
                rec["g_tail"].append(g_tail)
                rec["w"].append(w)
                if region_masks:
                    log_q = torch.log_softmax(zd, dim=-1)
                    for name, (mask, count) in region_masks.items():
                        rec[f"l1_{name}"].append(
                            ((p - log_q.exp()).abs() * mask).sum(-1))
                        rec[f"logabs_{name}"].append(
                            ((log_q - log_p).abs() * mask).sum(-1) / count)
        if last:
            break
        opt.zero_grad(set_to_none=True)
        value.backward()
        opt.step()
        if schedule is not None:
            schedule.update(value_f / n_rows, step, steps)
        report(step + 1)

    stacked = {k: torch.stack(v).cpu().numpy() for k, v in rec.items()}  # [R, N]
    history = {"step": np.asarray(rec_steps)}
    history.update({k: v.mean(axis=1) for k, v in stacked.items()})
    with torch.no_grad():
        final_q = torch.softmax(z.detach(), dim=-1).cpu().numpy()
    p_np = p.cpu().numpy()
    return TrainResult(
        loss=loss,
        params=loss_params,
        lr=lr,
        steps=steps,
        seed=int(seed),
        mu=float(mu),
        target=p_np[0] if single else p_np,
        history=history,
        snapshots=snapshots,
        final_q=final_q[0] if single else final_q,
        rows=stacked if per_row else {},
    )


def _one_head(
    loss: str, loss_params: dict, mu: float | None, boundary: str | None
) -> tuple[float, str]:
    """The single (mu, boundary) used by the loss and by the diagnostics; fills loss_params."""
    uses_head = loss in ("akl", "akl_r")
    for key, arg in (("mu", mu), ("boundary", boundary)):
        if uses_head and key in loss_params and arg is not None and loss_params[key] != arg:
            raise ValueError(
                f"{key} given twice with different values ({key}={arg!r}, "
                f"params[{key!r}]={loss_params[key]!r}); the loss and its diagnostics use "
                f"one head: give it once"
            )
    if uses_head:
        mu = loss_params.get("mu", mu)
        boundary = loss_params.get("boundary", boundary)
    mu = 0.5 if mu is None else mu
    boundary = "reference" if boundary is None else boundary
    if uses_head:
        loss_params["mu"], loss_params["boundary"] = mu, boundary
    return mu, boundary  # validated by resolve_params / head_mask


def _init_logits(init: object, n_rows: int, vocab: int, device: torch.device) -> torch.Tensor:
    """Starting student logits [N, V] (float32, a fresh leaf) from a tensor or array."""
    if isinstance(init, torch.Tensor):
        z = init.detach().to(device=device, dtype=torch.float32).clone()
    else:
        try:
            z = torch.as_tensor(np.asarray(init, dtype=np.float32), device=device).clone()
        except (TypeError, ValueError):
            raise ValueError("init_logits must be an array of numbers") from None
    if z.dim() == 1:
        z = z[None]
    if tuple(z.shape) != (n_rows, vocab):
        raise ValueError(f"init_logits has shape {tuple(z.shape)}, the target {(n_rows, vocab)}")
    if not torch.isfinite(z).all():
        raise ValueError("init_logits must be finite (no NaN or inf)")
    return z


def _region_masks(
    regions: Mapping[str, object] | None, n_rows: int, vocab: int, device: torch.device
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{name: (float mask [N, V], entries per row [N] clamped >= 1)}."""
    out: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for name, mask in (regions or {}).items():
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"region names must be identifiers, got {name!r}")
        m = torch.as_tensor(mask.cpu().numpy() if hasattr(mask, "cpu") else np.asarray(mask))
        if m.dtype != torch.bool:
            raise ValueError(f"region {name!r} must be a boolean mask, got {m.dtype}")
        if m.dim() == 1:
            m = m[None].expand(n_rows, -1)
        if tuple(m.shape) != (n_rows, vocab):
            raise ValueError(f"region {name!r} has shape {tuple(m.shape)}, the target "
                             f"{(n_rows, vocab)}")
        m = m.to(device=device, dtype=torch.float32)
        out[name] = (m, m.sum(-1).clamp_min(1.0))
    return out


def _make_optimizer(kind: str, z: torch.Tensor, lr: float) -> torch.optim.Optimizer:
    """Adam (fused kernel for large inputs: same update, several times faster on CPU) or SGD."""
    if kind == "sgd":
        return torch.optim.SGD([z], lr=lr)
    if z.numel() < (1 << 16):  # the fused kernel has a fixed cost that dominates small inputs
        return torch.optim.Adam([z], lr=lr)
    try:
        return torch.optim.Adam([z], lr=lr, fused=True)
    except (RuntimeError, ValueError):
        return torch.optim.Adam([z], lr=lr)


def compare_losses(
    target: object, losses: Sequence[str], **kwargs: object
) -> dict[str, TrainResult]:
    """Run `train_free_logits` once per loss with the same settings; returns {loss: result}."""
    if not losses:
        raise ValueError("losses is empty")
    return {name: train_free_logits(target, name, **kwargs) for name in losses}


def _progress(progress: bool | Callable[[int, int], None], total: int) -> Callable[[int], None]:
    if callable(progress):
        return lambda done: progress(done, total)
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc="training", leave=False)

        def update(done: int) -> None:
            bar.update(1)
            if done >= total:
                bar.close()

        return update
    return lambda done: None
