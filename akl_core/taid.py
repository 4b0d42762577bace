"""TAID's adaptive interpolation schedule (Shing et al., ICLR 2025, Algorithm 1).

t starts at t_start and only grows, towards t_end: each step, with J the loss,
    delta = (J_prev - J) / (J_prev + eps)          relative improvement
    m     = momentum * m + (1 - momentum) * delta
    t     = max(t_linear(step), t + step_size * sigmoid(m) * (1 - t)),  capped at t_end
where t_linear is the straight line from t_start to t_end over the run. Use it with
`divergence("taid", ..., t=schedule.t)`.
"""

from __future__ import annotations

import math

_DELTA_LIMIT = 1e300


def _sigmoid(x: float) -> float:
    """1 / (1 + e^-x) without overflow for any finite x."""
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


class TAIDSchedule:
    """Adaptive t for the `taid` loss. `update(loss, step, total_steps)` returns the new t."""

    def __init__(
        self,
        t_start: float = 0.4,
        t_end: float = 1.0,
        step_size: float = 5e-4,
        momentum: float = 0.99,
        adaptive: bool = True,
    ) -> None:
        if not 0.0 <= t_start < 1.0:
            raise ValueError(f"t_start must be in [0, 1), got {t_start!r}")
        if not t_start < t_end <= 1.0:
            raise ValueError(f"t_end must be in (t_start, 1], got {t_end!r}")
        if not 0.0 <= step_size <= 1.0:
            raise ValueError(f"step_size must be in [0, 1], got {step_size!r}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
        self.t_start, self.t_end = float(t_start), float(t_end)
        self.step_size, self.momentum, self.adaptive = float(step_size), float(momentum), adaptive
        self.t = self.t_start
        self.m = 0.0
        self._prev_loss: float | None = None

    def linear_t(self, step: int, total_steps: int) -> float:
        """The linear lower bound at `step` of `total_steps`."""
        if total_steps <= 0:
            raise ValueError(f"total_steps must be > 0, got {total_steps!r}")
        frac = min(max(step / total_steps, 0.0), 1.0)
        return self.t_start + (self.t_end - self.t_start) * frac

    def update(self, loss: float, step: int, total_steps: int) -> float:
        """Feed this step's loss value; returns t for the next step."""
        loss = float(loss)
        if not math.isfinite(loss):
            raise ValueError(f"loss must be finite, got {loss!r}")
        floor = self.linear_t(step, total_steps)
        if self.adaptive and self._prev_loss is not None:
            delta = (self._prev_loss - loss) / (abs(self._prev_loss) + 1e-15)
            delta = min(max(delta, -_DELTA_LIMIT), _DELTA_LIMIT)  # finite even after a 0 loss
            self.m = self.momentum * self.m + (1.0 - self.momentum) * delta
            grown = self.t + self.step_size * _sigmoid(self.m) * (1.0 - self.t)
        else:
            grown = self.t
        self._prev_loss = loss
        self.t = min(self.t_end, max(floor, grown))
        return self.t
