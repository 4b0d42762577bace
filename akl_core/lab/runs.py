"""Runs on disk: one folder per distillation run, safe to kill at any moment.

Layout of a run folder::

    config.json     the DistillConfig (plus free-form metadata), written once, atomically
    steps.jsonl     one JSON object per finished step, appended, flushed and fsync'd each step
    probes.jsonl    per-token probe diagnostics, appended like steps.jsonl
    eval.json       evaluation results (atomic write)
    summary.json    status and headline numbers (atomic write; status "running" until closed)
    student/        optional: the trained student (save_pretrained), for ``akl eval RUN``

Atomic writes go to a temporary file in the same folder, then ``os.replace``. JSONL files are
append-only; a run killed mid-line leaves at most one torn last line, which loading ignores.
The default root is ``./runs``; override it with the ``root`` argument or ``AKL_RUNS_DIR``.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RUNS_ENV = "AKL_RUNS_DIR"


def default_root() -> Path:
    """The runs root: ``$AKL_RUNS_DIR`` if set, else ``./runs``."""
    return Path(os.environ.get(RUNS_ENV) or "runs")


def _jsonable(obj: Any) -> Any:
    """Make ``obj`` strict JSON: NaN/inf become None, tuples become lists, tensors become lists."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):  # torch tensors, numpy arrays and scalars
        return _jsonable(obj.tolist())
    return obj


def dumps(obj: Any) -> str:
    """Strict one-line JSON (no NaN)."""
    return json.dumps(_jsonable(obj), allow_nan=False, ensure_ascii=False)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as JSON to ``path`` atomically (temp file in the same folder + os.replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps(_jsonable(obj), allow_nan=False, ensure_ascii=False, indent=2))
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def read_json(path: str | os.PathLike) -> Any | None:
    """Read a JSON file; None when it does not exist."""
    path = Path(path)
    if not path.exists():
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Read a JSON-lines file, skipping a torn (unparseable) LAST line; [] if missing.

    A bad line anywhere else is corruption, not a kill, and raises ValueError with its number.
    """
    path = Path(path)
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8", errors="replace").split("\n")
    while lines and not lines[-1].strip():
        lines.pop()
    out = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as e:
            if i == len(lines) - 1:
                break  # torn last line from a killed writer
            raise ValueError(f"{path}: line {i + 1} is not valid JSON ({e.msg})") from None
    return out


class JsonlWriter:
    """Append-only JSON-lines file; each record is flushed and fsync'd before returning."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._f = None

    def append(self, record: Any) -> None:
        if self._f is None:
            self._f = open(self.path, "a", encoding="utf-8")
        self._f.write(dumps(record) + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "-", text).strip("-") or "run"


class Run:
    """A run folder being written. Create with :meth:`Run.create`; use as a context manager."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self._steps = JsonlWriter(self.path / "steps.jsonl")
        self._probes = JsonlWriter(self.path / "probes.jsonl")
        self._started = time.time()
        self._n_steps = 0
        self._last: dict | None = None

    @classmethod
    def create(
        cls, root: str | os.PathLike | None = None, *, name: str | None = None, loss: str = "run"
    ) -> Run:
        """Make a fresh folder ``<root>/<name>`` (default name ``<timestamp>-<loss>``)."""
        root = Path(root) if root is not None else default_root()
        base = _slug(name) if name else f"{time.strftime('%Y%m%d-%H%M%S')}-{_slug(loss)}"
        path = root / base
        k = 1
        while path.exists():
            k += 1
            path = root / f"{base}-{k}"
        path.mkdir(parents=True)
        return cls(path)

    @classmethod
    def reopen(cls, path: str | os.PathLike, *, keep_steps: int) -> Run:
        """An existing run folder, continued after step ``keep_steps`` (a resume from a
        checkpoint): records of later steps in steps.jsonl / probes.jsonl are dropped (each
        file rewritten atomically), then appending goes on."""
        path = Path(path)
        if not (path / "config.json").is_file():
            raise ValueError(f"{path} is not a run folder (no config.json)")
        for name in ("steps.jsonl", "probes.jsonl"):
            kept = [r for r in read_jsonl(path / name)
                    if isinstance(r.get("step"), int) and r["step"] <= keep_steps]
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=path)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.writelines(dumps(r) + "\n" for r in kept)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path / name)
        run = cls(path)
        steps = read_jsonl(path / "steps.jsonl")
        run._n_steps, run._last = len(steps), (steps[-1] if steps else None)
        started = (read_json(path / "summary.json") or {}).get("started")
        if isinstance(started, (int, float)):
            run._started = float(started)
        run.write_summary({"status": "running", "pid": os.getpid(), "started": run._started})
        return run

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def student_dir(self) -> Path:
        return self.path / "student"

    def write_config(self, config: dict) -> None:
        atomic_write_json(self.path / "config.json", config)
        self.write_summary({"status": "running", "pid": os.getpid(), "started": self._started})

    def append_step(self, record: dict) -> None:
        self._steps.append(record)
        self._n_steps += 1
        self._last = record

    def append_probe(self, probe: dict) -> None:
        self._probes.append(probe)

    def write_eval(self, result: dict) -> None:
        atomic_write_json(self.path / "eval.json", result)

    def write_summary(self, summary: dict) -> None:
        atomic_write_json(self.path / "summary.json", summary)

    def finish(self, status: str = "finished", **extra: Any) -> dict:
        """Close the files and write summary.json with the headline numbers."""
        self._steps.close()
        self._probes.close()
        summary = summarize(read_jsonl(self.path / "steps.jsonl"))
        summary.update(status=status, started=self._started, finished=time.time(), **extra)
        self.write_summary(summary)
        return summary

    def __enter__(self) -> Run:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.finish("finished")
        elif issubclass(exc_type, KeyboardInterrupt):
            self.finish("stopped")
        else:
            self.finish("failed", error=f"{exc_type.__name__}: {exc}")


def summarize(steps: list[dict], window: int = 10) -> dict:
    """Headline numbers from step records: steps done, first/last/final-window mean loss."""
    if not steps:
        return {"steps_done": 0}
    last = steps[-window:]

    def mean(key: str) -> float | None:
        vals = [s[key] for s in last if isinstance(s.get(key), (int, float))]
        return sum(vals) / len(vals) if vals else None

    return {
        "steps_done": len(steps),
        "first_loss": steps[0].get("loss"),
        "final_loss": mean("loss"),
        "final_kd_loss": mean("kd_loss"),
        "final_lm_loss": mean("lm_loss"),
        "final_g_head": mean("g_head"),
        "final_g_tail": mean("g_tail"),
        "tokens_per_second": mean("tokens_per_second"),
        "elapsed": steps[-1].get("elapsed"),
    }


@dataclass
class RunData:
    """A run as loaded from disk (any stage: running, finished, or killed)."""

    path: Path
    config: dict = field(default_factory=dict)
    steps: list[dict] = field(default_factory=list)
    probes: list[dict] = field(default_factory=list)
    eval: dict | None = None
    summary: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def status(self) -> str:
        """finished / stopped / failed / running / interrupted (killed: pid gone, no summary)."""
        status = self.summary.get("status", "interrupted")
        if status == "running" and not _pid_alive(self.summary.get("pid")):
            return "interrupted"
        return status

    @property
    def has_student(self) -> bool:
        return (self.path / "student" / "config.json").exists()


def _pid_alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def load_run(path: str | os.PathLike) -> RunData:
    """Load a run folder; works on a folder whose writer was killed at any point."""
    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"no run folder at {path}")
    if not (path / "config.json").exists() and not (path / "steps.jsonl").exists():
        raise ValueError(f"{path} is not a run folder (no config.json or steps.jsonl)")
    return RunData(
        path=path,
        config=read_json(path / "config.json") or {},
        steps=read_jsonl(path / "steps.jsonl"),
        probes=read_jsonl(path / "probes.jsonl"),
        eval=read_json(path / "eval.json"),
        summary=read_json(path / "summary.json") or {},
    )


def resolve_run(ref: str | os.PathLike, root: str | os.PathLike | None = None) -> Path:
    """A run given as a folder path, or as a name under the root."""
    p = Path(ref)
    if p.is_dir():
        return p
    q = (Path(root) if root is not None else default_root()) / str(ref)
    if q.is_dir():
        return q
    raise ValueError(f"no run named {str(ref)!r} (looked at {p} and {q})")


def list_runs(root: str | os.PathLike | None = None) -> list[RunData]:
    """Every run folder under ``root`` (default ./runs), oldest first by folder name."""
    root = Path(root) if root is not None else default_root()
    if not root.is_dir():
        return []
    runs = []
    for p in sorted(root.iterdir()):
        if p.is_dir() and ((p / "config.json").exists() or (p / "steps.jsonl").exists()):
            try:
                runs.append(load_run(p))
            except (ValueError, json.JSONDecodeError):
                continue  # a corrupt folder must not hide the others
    return runs


def compare(runs: Iterable[RunData]) -> list[dict]:
    """One row per run: name, loss, status, steps, final losses/gaps, eval scores."""
    rows = []
    for r in runs:
        s = r.summary if r.summary.get("steps_done") is not None else summarize(r.steps)
        if len(r.steps) != s.get("steps_done"):
            s = summarize(r.steps)
        ev = (r.eval or {}).get("student", {})
        rows.append(
            {
                "run": r.name,
                "loss": r.config.get("loss"),
                "status": r.status,
                "steps": s.get("steps_done", 0),
                "final_loss": s.get("final_loss"),
                "g_head": s.get("final_g_head"),
                "g_tail": s.get("final_g_tail"),
                "rougeL_teacher": ev.get("rougeL_teacher"),
                "rougeL_gold": ev.get("rougeL_gold"),
                "distinct_2": ev.get("distinct_2"),
            }
        )
    return rows


def format_table(rows: list[dict]) -> str:
    """Plain-text table of ``rows`` (dicts with the same keys); floats to 4 significant digits."""
    if not rows:
        return "(no runs)"
    cols = list(rows[0].keys())

    def fmt(v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    cells = [[fmt(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def steps_history(steps: list[dict]) -> dict[str, list]:
    """Step records as a history for akl_core.lab.viz: {'step': [...], key: [...]} over every
    numeric key present in all records (None where a value is missing)."""
    if not steps:
        return {"step": []}
    keys = [k for k, v in steps[0].items() if isinstance(v, (int, float)) and not
            isinstance(v, bool)]
    return {k: [s.get(k) for s in steps] for k in keys}
