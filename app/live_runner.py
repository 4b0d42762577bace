"""A training job in a background thread, with a thread-safe record buffer for the page.

The page stores one LiveRun per browser session in st.session_state and polls it from a
st.fragment(run_every=...); the worker thread never touches Streamlit. Stopping sets an
event that the engine checks between steps (its TrainerCallback ends training); every
finished step stays in the buffer (and in the run folder, which the engine writes step by
step).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ui_common import error_message

# job(should_stop, info, emit): runs the training, calling emit(record) for each step record;
# `info` is a dict the job may fill (e.g. info["run_dir"]) and the page may read.
Job = Callable[[Callable[[], bool], dict, Callable[[Any], None]], None]


@dataclass(frozen=True)
class LiveView:
    """A consistent copy of a LiveRun's state for one redraw."""

    records: list
    status: str  # "starting" | "running" | "stopping" | "stopped" | "finished" | "error"
    error: str | None
    info: dict
    elapsed_s: float
    first_step_s: float | None
    total_steps: int

    @property
    def active(self) -> bool:
        return self.status in ("starting", "running", "stopping")


@dataclass
class LiveRun:
    """One background run. Start with .start(); poll with .view(); stop with .stop()."""

    job: Job
    total_steps: int
    records: list = field(default_factory=list)
    status: str = "starting"
    error: str | None = None
    info: dict = field(default_factory=dict)
    started_at: float = field(default_factory=time.perf_counter)
    first_step_at: float | None = None
    finished_at: float | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    def start(self) -> LiveRun:
        self.started_at = time.perf_counter()
        self._thread = threading.Thread(target=self._work, name="akl-live-run", daemon=True)
        self._thread.start()
        return self

    def _work(self) -> None:
        try:
            with self._lock:
                if self.status == "starting":
                    self.status = "running"
            self.job(self._stop.is_set, self.info, self._emit)
            with self._lock:
                self.status = "stopped" if self._stop.is_set() else "finished"
        except Exception as exc:  # noqa: BLE001 - reported in the page
            with self._lock:
                self.status = "error"
                self.error = error_message(exc)
        finally:
            with self._lock:
                self.finished_at = time.perf_counter()

    def _emit(self, record: Any) -> None:
        with self._lock:
            self.records.append(record)
            if self.first_step_at is None:
                self.first_step_at = time.perf_counter()

    def stop(self) -> None:
        """Ask the worker to stop after the current step."""
        self._stop.set()
        with self._lock:
            if self.status in ("starting", "running"):
                self.status = "stopping"

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def view(self) -> LiveView:
        with self._lock:
            end = self.finished_at if self.finished_at is not None else time.perf_counter()
            first = None if self.first_step_at is None else self.first_step_at - self.started_at
            return LiveView(
                records=list(self.records),
                status=self.status,
                error=self.error,
                info=dict(self.info),
                elapsed_s=end - self.started_at,
                first_step_s=first,
                total_steps=self.total_steps,
            )
