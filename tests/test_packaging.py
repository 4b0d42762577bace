"""The loss library installs and imports with torch alone; the explorer is an extra."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata

HEAVY = ("transformers", "streamlit", "plotly", "pandas", "gguf", "rouge_score", "accelerate")


def test_import_akl_core_loads_no_explorer_dependency():
    code = (
        "import sys, torch, akl_core\n"
        "s = torch.randn(3, 7, 11, requires_grad=True); t = torch.randn(3, 7, 11)\n"
        "akl_core.distillation_loss(s, t, loss='akl').backward()\n"
        "akl_core.head_tail(s, t)\n"
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "lab = [m for m in sys.modules if m.startswith('akl_core.lab')]\n"
        "print(heavy, lab)\n"
        "assert not heavy and not lab, (heavy, lab)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr + done.stdout


def test_base_requirements_are_torch_alone_without_exact_pin():
    requires = metadata.requires("akl-explorer") or []
    base = [r for r in requires if "extra ==" not in r]
    assert len(base) == 1 and base[0].replace(" ", "").startswith("torch>="), base
    assert "==" not in base[0], base
    extras = metadata.metadata("akl-explorer").get_all("Provides-Extra") or []
    assert {"lab", "app", "notebooks", "dev", "all"} <= set(extras), extras
