"""OpenMP's spin default (akl_core._openmp): set before torch loads, never over a user's choice."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from akl_core import _openmp

ROOT = Path(__file__).resolve().parents[1]


def test_the_default_is_set_when_torch_is_not_loaded():
    env: dict[str, str] = {}
    assert _openmp.set_spin_default(env, modules={})
    assert env == {"GOMP_SPINCOUNT": _openmp.SPIN_COUNT}


@pytest.mark.parametrize("choice", [{"GOMP_SPINCOUNT": "300000"}, {"OMP_WAIT_POLICY": "ACTIVE"}])
def test_a_users_choice_is_kept(choice):
    env = dict(choice)
    assert not _openmp.set_spin_default(env, modules={})
    assert env == choice


def test_nothing_is_set_once_torch_is_loaded():
    env: dict[str, str] = {}
    assert not _openmp.set_spin_default(env, modules={"torch": object()})
    assert env == {}


def _environment_after(code: str, **extra: str) -> str:
    env = {k: v for k, v in os.environ.items() if k not in _openmp.USER_CHOICES}
    env.update(PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "app")]), **extra)
    done = subprocess.run([sys.executable, "-c", code + "; import os; "
                           "print(os.environ.get('GOMP_SPINCOUNT'))"],
                          capture_output=True, text=True, env=env, timeout=120, check=True)
    return done.stdout.strip().splitlines()[-1]


def test_importing_akl_core_first_sets_it_in_the_process():
    assert _environment_after("import akl_core; import torch") == _openmp.SPIN_COUNT
    assert _environment_after("import torch; import akl_core") == "None"
    assert _environment_after("import akl_core", GOMP_SPINCOUNT="7") == "7"


def test_every_app_page_imports_akl_core_before_torch():
    """ui_common is each page's first import of ours; it imports akl_core before any torch."""
    pages = [ROOT / "app" / "Home.py", *sorted((ROOT / "app" / "pages").glob("*.py"))]
    for page in pages:
        lines = page.read_text().splitlines()
        ours = [i for i, line in enumerate(lines)
                if line.startswith(("import ", "from ")) and "__future__" not in line
                and any(name in line for name in ("torch", "akl_core", "ui_common",
                                                   "live_runner"))]
        assert ours and "torch" not in lines[ours[0]], page.name
    assert _environment_after("import ui_common; import torch") == _openmp.SPIN_COUNT
