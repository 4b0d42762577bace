"""OpenMP's spin-wait default, set before torch loads (imports nothing heavy: no torch).

Every multi-threaded torch operation on the CPU ends in a barrier. GNU OpenMP (libgomp, which
torch's Linux wheels use) makes a thread that reaches it first spin for GOMP_SPINCOUNT
iterations (300,000 by default) before it sleeps. On a machine whose cores are shared with
other work (a browser, the dashboard's own server, a neighbouring training job) the thread
that still has work is often descheduled while its partner spins away the core it needs; the
chunked kernels here run a few hundred operations per call, so they pay this often.

Measured on this project's 2-core machine, 2 torch threads, beside two processes each looping
a 2-thread matmul (benchmarks/bench_losses.py's contention): a truncate:4 student's training
step with AKL took 3.5 s at the default and 2.2 s at GOMP_SPINCOUNT=3000 (FKL 1.58 s and
1.52 s); the AKL loss alone 1.27-1.50 s and 0.93 s. On quiet cores the step took 0.81 s and
0.83 s (FKL 0.55 s and 0.56 s). OMP_WAIT_POLICY=PASSIVE (never spin) was as good under load
but 7% slower on quiet cores.

libgomp reads its environment once, when it is loaded (with torch), so the default can only
be set before the first `import torch`: `akl_core` sets it when it is imported first, and the
dashboard and the CLI import it first. A value the user set (GOMP_SPINCOUNT or
OMP_WAIT_POLICY) is never changed.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, MutableMapping

SPIN_COUNT = "3000"
USER_CHOICES = ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")


def set_spin_default(
    environ: MutableMapping[str, str] | None = None, modules: Mapping[str, object] | None = None
) -> bool:
    """Set GOMP_SPINCOUNT=3000 in `environ` (default: os.environ) unless torch is already in
    `modules` (default: sys.modules) or the user chose a wait policy; True when it was set."""
    environ = os.environ if environ is None else environ
    modules = sys.modules if modules is None else modules
    if "torch" in modules or any(name in environ for name in USER_CHOICES):
        return False
    environ["GOMP_SPINCOUNT"] = SPIN_COUNT
    return True


set_spin_default()  # on import: akl_core imports this module before anything loads torch
