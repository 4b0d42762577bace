"""Shared fixtures (session scope). Owned by the models/data part; others append fixtures.

- The bundled teacher is converted once into ``<repo>/.cache/akl`` (gitignored) unless the
  user set ``AKL_CACHE_DIR``; later sessions load it in seconds.
- ``tiny_teacher`` / ``tiny_student``: tiny random Llama models over the REAL SmolLM2
  tokenizer (49152 tokens), so tokenisation and vocab checks are real but forwards are fast.
- Session fixtures are shared: do not train them in place (copy.deepcopy the model first).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("AKL_CACHE_DIR", str(REPO_ROOT / ".cache" / "akl"))
# One torch thread by default: on a small shared CPU, oversubscribed threads made model
# forwards up to 10x slower. Override with AKL_TEST_THREADS=N.
torch.set_num_threads(int(os.environ.get("AKL_TEST_THREADS", "1")))


@pytest.fixture(scope="session")
def bundled_teacher():
    """The real bundled SmolLM2-135M-Instruct teacher on CPU (converted once, then cached)."""
    from akl_core.lab.models import load_teacher

    return load_teacher(None, device="cpu")


@pytest.fixture(scope="session")
def teacher_tokenizer():
    """The bundled teacher's tokenizer (ChatML template), loaded from the converted cache."""
    from transformers import AutoTokenizer

    from akl_core.lab.models import convert_bundled

    return AutoTokenizer.from_pretrained(convert_bundled())


@pytest.fixture(scope="session")
def tiny_teacher(teacher_tokenizer):
    """ModelBundle: a 2-layer, width-64 random Llama over the real tokenizer (seed 0)."""
    from akl_core.lab.models import ModelBundle, make_tiny_model

    model = make_tiny_model(len(teacher_tokenizer), layers=2, hidden=64, heads=4, seed=0)
    return ModelBundle(model, teacher_tokenizer, "tiny-teacher", torch.device("cpu"))


@pytest.fixture(scope="session")
def tiny_student(teacher_tokenizer):
    """ModelBundle: a 1-layer, width-64 random Llama over the real tokenizer (seed 1)."""
    from akl_core.lab.models import ModelBundle, make_tiny_model

    model = make_tiny_model(len(teacher_tokenizer), layers=1, hidden=64, heads=4, seed=1)
    return ModelBundle(model, teacher_tokenizer, "tiny-student", torch.device("cpu"))


@pytest.fixture(scope="session")
def small_pair():
    """(teacher, student) ModelBundles over a 1000-token BPE tokenizer (tests/small_lm): a
    peaked 2-layer teacher and a 1-layer student; engine tests train copies of the student."""
    from tests import small_lm

    teacher = small_lm.small_teacher()
    return teacher, small_lm.small_student(teacher)


@pytest.fixture(scope="session")
def kd_folders(tmp_path_factory, small_pair):
    """Folders for engine runs in subprocesses: ``teacher`` / ``student`` (small_pair, saved
    with its tokenizer) and ``data.jsonl`` (8 bundled prompts with short gold responses)."""
    from tests import small_lm

    base = tmp_path_factory.mktemp("kd")
    small_lm.save_bundle(small_pair[0], base / "teacher")
    small_lm.save_bundle(small_pair[1], base / "student")
    small_lm.write_jsonl(base / "data.jsonl", small_lm.examples(8))
    return base
