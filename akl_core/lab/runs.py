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

Loading never fails on a damaged run folder: a file that is not valid JSON, holds the wrong
type, or has bad lines makes the run *broken* (``RunData.problems`` names each file and the
reason; ``compare`` lists it with status "broken"), and every healthy run is still listed.
Folder names are claimed atomically (``mkdir`` without exist_ok, retried with -2, -3, ...).
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
MAX_NAME = 200  # characters of a run folder name (file systems allow 255 bytes)
RUN_FILES = ("config.json", "steps.jsonl", "probes.jsonl", "eval.json", "summary.json")


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


def dumps(obj: Any, indent: int | None = None) -> str:
    """Strict JSON (NaN and infinities become null), one line unless `indent` is given."""
    return json.dumps(_jsonable(obj), allow_nan=False, ensure_ascii=False, indent=indent)


def _loads(text: str) -> Any:
    """json.loads that reads the non-standard NaN / Infinity tokens as None."""
    return json.loads(text, parse_constant=lambda _: None)


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
        return _loads(f.read())


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
            out.append(_loads(line))
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


def run_folder_name(name: str | None = None, loss: str = "run") -> str:
    """The folder name for a run: ``name`` made file-system safe, or ``<timestamp>-<loss>``.

    Raises ValueError for a name longer than MAX_NAME characters.
    """
    base = _slug(name) if name else f"{time.strftime('%Y%m%d-%H%M%S')}-{_slug(loss)}"
    if len(base) > MAX_NAME:
        raise ValueError(f"run name is too long: {len(base)} characters (at most {MAX_NAME})")
    return base


def ensure_root(root: str | os.PathLike | None = None) -> Path:
    """Create the runs root if needed (default: :func:`default_root`); ValueError if it cannot
    be created or written to."""
    root = Path(root) if root is not None else default_root()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"cannot create the runs folder {root}: {e.strerror or e}") from None
    if not os.access(root, os.W_OK | os.X_OK):
        raise ValueError(f"cannot write to the runs folder {root}: permission denied")
    return root


def process_start(pid: int) -> str | None:
    """An identifier of when process `pid` started (None if unknown): with the PID it tells a
    live writer from an unrelated process that reused its PID. Linux: /proc; else psutil."""
    try:
        stat = Path(f"/proc/{int(pid)}/stat").read_text()
        return "proc:" + stat[stat.rindex(")") + 2 :].split()[19]  # field 22: starttime
    except (OSError, ValueError, IndexError):
        pass
    try:
        import psutil

        return f"psutil:{psutil.Process(int(pid)).create_time():.3f}"
    except Exception:  # noqa: BLE001 - no psutil, no such process, no permission: unknown
        return None


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
        base = run_folder_name(name, loss)
        ensure_root(root)
        for k in range(1, 10_000):
            path = root / (base if k == 1 else f"{base}-{k}")
            try:
                path.mkdir()  # atomic: exactly one creator gets each name
            except FileExistsError:
                continue
            except OSError as e:
                raise ValueError(f"cannot create the run folder {path}: {e.strerror or e}") from None
            return cls(path)
        raise ValueError(f"no free run folder name {base}-N under {root}")

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
        self.write_summary({"status": "running", "pid": os.getpid(),
                            "pid_start": process_start(os.getpid()), "started": self._started})

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

    def discard_if_empty(self) -> bool:
        """Remove the run folder if no step was written (a run that failed or was interrupted
        before its first step); returns True if it was removed. Unknown files keep it."""
        self._steps.close()
        self._probes.close()
        try:
            if self._n_steps or (self.path / "steps.jsonl").stat().st_size > 0:
                return False
        except FileNotFoundError:
            pass
        except OSError:
            return False
        for name in ("config.json", "summary.json", "steps.jsonl", "probes.jsonl"):
            (self.path / name).unlink(missing_ok=True)
        try:
            self.path.rmdir()
        except OSError:
            return False
        return True

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
    """A run as loaded from disk (any stage: running, finished, killed, or damaged).

    problems: {file name: reason} for every file that could not be used as written (not
    valid JSON, wrong type, bad lines); such a run is ``broken``. What could be read is kept.
    """

    path: Path
    config: dict = field(default_factory=dict)
    steps: list[dict] = field(default_factory=list)
    probes: list[dict] = field(default_factory=list)
    eval: dict | None = None
    summary: dict = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def broken(self) -> bool:
        """True when a file of the run is damaged (see ``problems``)."""
        return bool(self.problems)

    @property
    def status(self) -> str:
        """finished / stopped / failed / running / interrupted (killed: the writer is gone)."""
        status = self.summary.get("status") or "interrupted"
        if status == "running" and not _pid_alive(self.summary.get("pid"),
                                                  self.summary.get("pid_start")):
            return "interrupted"
        return status

    @property
    def has_student(self) -> bool:
        return (self.path / "student" / "config.json").exists()


def _pid_alive(pid: Any, start: Any = None) -> bool:
    """Whether process `pid` exists and, when its recorded start `start` is known, is the same
    process (not an unrelated one that reused the PID)."""
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    except (OSError, OverflowError):
        return False
    if start is not None:
        now = process_start(pid)
        if now is not None and now != start:
            return False
    return True


def _reason(exc: BaseException) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"not valid JSON ({exc.msg}, line {exc.lineno} column {exc.colno})"
    if isinstance(exc, UnicodeDecodeError):
        return "not UTF-8 text"
    if isinstance(exc, OSError):
        return f"cannot be read ({exc.strerror or exc})"
    if isinstance(exc, RecursionError):
        return "not valid JSON (nested too deeply)"
    return f"{type(exc).__name__}: {exc}"


def _type_name(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            type(None): "null"}.get(type(value), "a number")


def _read_object(path: Path, problems: dict[str, str]) -> dict | None:
    """A JSON object file: None if missing; None (and a problem) if unreadable or not an object."""
    try:
        value = _loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, RecursionError) as e:
        problems[path.name] = _reason(e)
        return None
    if not isinstance(value, dict):
        problems[path.name] = f"expected a JSON object, found {_type_name(value)}"
        return None
    return value


def _read_records(path: Path, problems: dict[str, str], required: dict[str, type]) -> list[dict]:
    """The good records of a JSON-lines file; a torn last line (a killed writer) is skipped
    silently, any other bad line is skipped and reported in `problems`."""
    try:
        lines = path.read_bytes().decode("utf-8", errors="replace").split("\n")
    except FileNotFoundError:
        return []
    except OSError as e:
        problems[path.name] = _reason(e)
        return []
    while lines and not lines[-1].strip():
        lines.pop()
    out, bad = [], []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            record = _loads(line)
        except (ValueError, RecursionError) as e:
            if i < len(lines) - 1:
                bad.append(f"line {i + 1} is {_reason(e)}")
            continue
        if not isinstance(record, dict):
            bad.append(f"line {i + 1} is {_type_name(record)}, not a JSON object")
            continue
        wrong = [k for k, t in required.items() if not isinstance(record.get(k), t)
                 or isinstance(record.get(k), bool)]
        if wrong:
            bad.append(f"line {i + 1} has no valid {wrong[0]!r}")
            continue
        out.append(record)
    if bad:
        more = f" (and {len(bad) - 1} more bad lines)" if len(bad) > 1 else ""
        problems[path.name] = bad[0] + more
    return out


_NUMBER = (int, float)
_SUMMARY_TYPES: dict[str, tuple[type, ...]] = {
    "status": (str,), "pid": (int,), "pid_start": (str,), "error": (str,),
    "steps_done": (int,), "started": _NUMBER, "finished": _NUMBER, "elapsed": _NUMBER,
    "first_loss": _NUMBER, "final_loss": _NUMBER, "final_kd_loss": _NUMBER,
    "final_lm_loss": _NUMBER, "final_g_head": _NUMBER, "final_g_tail": _NUMBER,
    "tokens_per_second": _NUMBER,
}


def _clean_summary(summary: dict, problems: dict[str, str]) -> dict:
    """Drop summary fields of the wrong type (reported); None stays (a missing number)."""
    out = {}
    for key, value in summary.items():
        types = _SUMMARY_TYPES.get(key)
        if value is None or types is None or (isinstance(value, types)
                                              and not isinstance(value, bool)):
            out[key] = value
        else:
            problems.setdefault("summary.json", f"{key!r} is {_type_name(value)}")
    return out


def _clean_eval(ev: dict, problems: dict[str, str]) -> dict:
    """Keep the parts of eval.json the tools read only where they have the right shape."""
    out = dict(ev)
    for who in ("student", "teacher"):
        if who in out and not isinstance(out[who], (dict, type(None))):
            problems.setdefault("eval.json", f"{who!r} is {_type_name(out[who])}")
            del out[who]
    gens = out.get("generations")
    if gens is not None:
        ok = isinstance(gens, list) and all(
            isinstance(g, dict) and isinstance(g.get("instruction"), str)
            and all(isinstance(g.get(k), (str, type(None)))
                    for k in ("context", "teacher", "student", "gold"))
            for g in gens)
        if not ok:
            problems.setdefault("eval.json", "'generations' is not a list of generations")
            del out["generations"]
    return out


def is_run_folder(path: str | os.PathLike) -> bool:
    """Whether `path` is a folder holding config.json, steps.jsonl or summary.json."""
    path = Path(path)
    try:
        return path.is_dir() and any(
            (path / f).exists() for f in ("config.json", "steps.jsonl", "summary.json"))
    except OSError:
        return False


def load_run(path: str | os.PathLike) -> RunData:
    """Load a run folder; works on a folder whose writer was killed at any point.

    Damaged files never raise: they are listed in ``RunData.problems`` (file name and reason)
    and what could be read is kept. Raises ValueError only when `path` is not a run folder.
    """
    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"no run folder at {path}")
    if not is_run_folder(path):
        raise ValueError(f"{path} is not a run folder (no config.json, steps.jsonl or "
                         "summary.json)")
    problems: dict[str, str] = {}
    config = _read_object(path / "config.json", problems) or {}
    steps = _read_records(path / "steps.jsonl", problems, {"step": int})
    probes = _read_records(path / "probes.jsonl", problems, {})
    ev = _read_object(path / "eval.json", problems)
    summary = _read_object(path / "summary.json", problems) or {}
    return RunData(
        path=path,
        config=config,
        steps=steps,
        probes=probes,
        eval=_clean_eval(ev, problems) if ev is not None else None,
        summary=_clean_summary(summary, problems),
        problems=problems,
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
    """Every run folder under ``root`` (default ./runs), oldest first by folder name.

    Damaged runs are included (``broken``, with their problems); they never hide the others.
    """
    root = Path(root) if root is not None else default_root()
    if not root.is_dir():
        return []
    try:
        folders = sorted(root.iterdir())
    except OSError as e:
        raise ValueError(f"cannot list the runs folder {root}: {e.strerror or e}") from None
    runs = []
    for p in folders:
        if not is_run_folder(p):
            continue
        try:
            runs.append(load_run(p))
        except Exception as e:  # noqa: BLE001 - last resort: listed as broken, never hidden
            runs.append(RunData(path=p, problems={"(folder)": _reason(e)}))
    return runs


def _number(value: Any) -> float | int | None:
    """A finite number as is; anything else (text, NaN, lists) as None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value if math.isfinite(value) else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) or value is None else str(value)


def compare(runs: Iterable[RunData]) -> list[dict]:
    """One row per run: name, loss, status, steps, final losses/gaps, eval scores, problem.

    Numbers are finite numbers or None; a broken run has status "broken" and `problem` says
    which file and why ("; " between files).
    """
    rows = []
    for r in runs:
        s = r.summary if r.summary.get("steps_done") is not None else summarize(r.steps)
        if len(r.steps) != s.get("steps_done"):
            s = summarize(r.steps)
        ev = (r.eval or {}).get("student") or {}
        problem = "; ".join(f"{f}: {why}" for f, why in r.problems.items()) or None
        rows.append(
            {
                "run": r.name,
                "loss": _text(r.config.get("loss")),
                "status": "broken" if problem else r.status,
                "steps": _number(s.get("steps_done")) or 0,
                "final_loss": _number(s.get("final_loss")),
                "g_head": _number(s.get("final_g_head")),
                "g_tail": _number(s.get("final_g_tail")),
                "rougeL_teacher": _number(ev.get("rougeL_teacher")),
                "rougeL_gold": _number(ev.get("rougeL_gold")),
                "distinct_2": _number(ev.get("distinct_2")),
                "problem": problem,
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


# ----------------------------------------------------------------------------------------------
# Labels and settings for the dashboard's Compare page
# ----------------------------------------------------------------------------------------------


def _started(run: RunData) -> float | None:
    started = _number(run.summary.get("started"))
    if started is None and run.steps:
        first = run.steps[0]
        t, e = _number(first.get("time")), _number(first.get("elapsed"))
        started = t - e if t is not None and e is not None else None
    return float(started) if started is not None else None


def run_duration(run: RunData) -> float | None:
    """Seconds the run trained: finished - started from summary.json, else the last step's
    'elapsed'; None when unknown."""
    started, finished = _number(run.summary.get("started")), _number(run.summary.get("finished"))
    if started is not None and finished is not None and finished >= started:
        return float(finished - started)
    if run.steps:
        elapsed = _number(run.steps[-1].get("elapsed"))
        return float(elapsed) if elapsed is not None else None
    return None


def run_label(run: RunData) -> str:
    """A short human label: "<loss> - <n> steps - HH:MM" (local start time; the folder name
    when the start time is unknown), e.g. "rkl - 5 steps - 22:28"."""
    loss = _text(run.config.get("loss")) or "?"
    steps = len(run.steps)
    started = _started(run)
    when = time.strftime("%H:%M", time.localtime(started)) if started is not None else run.name
    return f"{loss} - {steps} step{'s' if steps != 1 else ''} - {when}"


def numbered(labels: Iterable[str]) -> list[str]:
    """The labels made unique in order: a label's second and later occurrences get " (2)",
    " (3)", ..."""
    seen: dict[str, int] = {}
    out = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        out.append(label if seen[label] == 1 else f"{label} ({seen[label]})")
    return out


def run_labels(runs: Iterable[RunData]) -> list[str]:
    """run_label of each run, made unique with " (2)", " (3)", ... in order."""
    return numbered(run_label(r) for r in runs)


def race_id(run: RunData) -> str | None:
    """The race a run belongs to: config.json's meta.race.id, which
    akl_core.lab.race.run_race writes for each of its racers; None for a single run."""
    meta = run.config.get("meta")
    race = meta.get("race") if isinstance(meta, dict) else None
    value = race.get("id") if isinstance(race, dict) else None
    return str(value) if value not in (None, "") else None


def run_settings(run: RunData) -> dict:
    """The settings that tell runs apart: mu (the loss's, defaults filled, when it has one), lr,
    batch x length, seed, duration in seconds. Missing values are None."""
    params = run.config.get("loss_params")
    params = params if isinstance(params, dict) else {}
    try:  # the defaults the run used (config.json keeps the parameters as given)
        import akl_core

        params = akl_core.resolve_params(str(run.config.get("loss")), **params)
    except (ValueError, TypeError, KeyError):
        pass
    mu = _number(params.get("mu"))
    batch, length = _number(run.config.get("batch_size")), _number(run.config.get("max_length"))
    return {
        "mu": mu,
        "lr": _number(run.config.get("lr")),
        "batch x length": f"{batch} x {length}" if batch is not None and length is not None
        else None,
        "seed": _number(run.config.get("seed")),
        "duration_s": run_duration(run),
    }
