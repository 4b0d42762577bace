"""TAIDSchedule's adaptive update, tested where the linear floor cannot mask it.

With total_steps huge the linear floor stays at t_start, so every rise of t comes from the
adaptive rule (Shing et al., ICLR 2025, Algorithm 1; akl_core/taid.py's docstring):
    delta = (J_prev - J) / (|J_prev| + eps);  m = momentum * m + (1 - momentum) * delta
    t = min(t_end, max(floor, t + step_size * sigmoid(m) * (1 - t)))
"""

from __future__ import annotations

import math

import pytest

import akl_core

HUGE = 10**12  # the linear floor moves by < 1e-9 over these tests


def _reference(losses, *, t_start, t_end, step_size, momentum):
    t, m, prev, out = t_start, 0.0, None, []
    for step, loss in enumerate(losses):
        floor = t_start + (t_end - t_start) * min(max(step / HUGE, 0.0), 1.0)
        if prev is None:
            grown = t
        else:
            delta = (prev - loss) / (abs(prev) + 1e-15)
            m = momentum * m + (1 - momentum) * delta
            grown = t + step_size * (1 / (1 + math.exp(-m))) * (1 - t)
        prev = loss
        t = min(t_end, max(floor, grown))
        out.append(t)
    return out


def test_adaptive_update_matches_the_algorithm_step_by_step():
    losses = [5.0, 4.0, 4.5, 2.0, 2.0, 1.0, 3.0, 0.5]
    kw = {"t_start": 0.2, "t_end": 0.9, "step_size": 0.3, "momentum": 0.6}
    schedule = akl_core.TAIDSchedule(**kw)
    got = [schedule.update(loss, step, HUGE) for step, loss in enumerate(losses)]
    expected = _reference(losses, **kw)
    assert got == pytest.approx(expected, rel=1e-12, abs=1e-12)
    assert got[0] == 0.2  # no previous loss yet: no growth
    assert got[-1] > 0.6  # far above the floor (0.2): the adaptive rule did the work


def test_faster_improvement_grows_t_faster():
    """sigmoid(m) rises with the relative improvement: a falling loss beats a flat one."""
    def run(losses):
        s = akl_core.TAIDSchedule(t_start=0.4, step_size=0.2, momentum=0.5)
        return [s.update(x, i, HUGE) for i, x in enumerate(losses)][-1]

    falling = run([8.0, 4.0, 2.0, 1.0, 0.5])
    flat = run([8.0, 8.0, 8.0, 8.0, 8.0])
    rising = run([1.0, 2.0, 4.0, 8.0, 16.0])
    assert falling > flat > rising > 0.4
    # flat loss: m stays 0, sigmoid(0) = 1/2, so t grows by step_size / 2 of the rest each step
    t = 0.4
    for _ in range(4):
        t += 0.2 * 0.5 * (1 - t)
    assert flat == pytest.approx(t, rel=1e-12)


def test_t_is_capped_at_t_end_and_never_below_the_floor():
    s = akl_core.TAIDSchedule(t_start=0.4, t_end=0.6, step_size=1.0, momentum=0.0)
    ts = [s.update(10.0 / (i + 1), i, HUGE) for i in range(20)]
    assert max(ts) == pytest.approx(0.6) and all(t <= 0.6 for t in ts)
    linear = akl_core.TAIDSchedule(t_start=0.4, adaptive=False)
    assert [linear.update(1.0, k, 10) for k in (0, 5, 10)] == pytest.approx([0.4, 0.7, 1.0])
    with pytest.raises(ValueError, match="finite"):
        linear.update(float("nan"), 1, 10)
