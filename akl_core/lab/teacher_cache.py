"""Offline teachers: the teacher's top-k next-token log-probs per response token, stored once in
safetensors shards, so that training reads them (as an ``akl_core.SparseTeacher`` with an exact
tail bucket) instead of running the teacher.

    akl teacher-cache --data bundled:train --k 64 --out DIR      # build (runs the teacher once)
    akl distill --teacher-cache DIR ...                          # train from it

A cache folder holds
    manifest.json        format, teacher name, tokenizer hash, k, quantization, data settings
                         and hash, counts, bytes per token, shards
    rows.safetensors     the tokenised training rows (prompt + response, int32) with their
                         prompt lengths, so a run needs neither the teacher nor its responses
    topk-NNNNN.safetensors   per response token, in row order: ``ids`` [n, k] (uint16 when the
                         vocabulary has at most 65536 tokens, else int32), the quantised
                         log-probs, and ``log_tail`` [n] float16 = log of the mass outside the
                         top-k (exact up to float16 rounding)
    tokenizer files, config.json   the teacher's tokenizer and model config

Quantization ("u8", the default): per token the top-k log-probs (sorted, descending) become
gaps d_i = lp_1 - lp_i in [0, D], stored as uint8 codes c_i = round(255 sqrt(d_i / D)) (fine
steps near the top of the distribution, where the mass is) with D in float16; reading
inverts the map and rescales the k probabilities to sum to 1 - exp(log_tail). 3 bytes per
entry + 4 per token (196 bytes/token at k = 64). "f16": log-probs in float16 (4 bytes per
entry + 2). "f32": exact (6 bytes per entry + 2), for reference.

p = the teacher's softmax(logits) at temperature 1 (the student's temperature applies to the
student only when training from a cache: a run with temperature != 1 is refused).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

FORMAT = 1
QUANTIZATIONS = ("u8", "f16", "f32")
MANIFEST = "manifest.json"
ROWS_FILE = "rows.safetensors"
SHARD_POSITIONS = 1 << 16  # response tokens per shard

Progress = Callable[[str, int, int], None]


# ----------------------------------------------------------------------------------------------
# Hashes: what a cache was made for
# ----------------------------------------------------------------------------------------------


def tokenizer_hash(tokenizer: Any) -> str:
    """sha256 of a tokenizer's vocabulary (token -> id), special ids and chat template.

    Remembered per tokenizer object and vocabulary size (hashing a 49k vocabulary takes ~0.3 s
    and a race asks once per racer)."""
    key = (len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id,
           tokenizer.pad_token_id, getattr(tokenizer, "chat_template", None))
    memo = getattr(tokenizer, "_akl_hash", None)
    if memo is not None and memo[0] == key:
        return memo[1]
    digest = _tokenizer_hash(tokenizer)
    try:
        tokenizer._akl_hash = (key, digest)
    except AttributeError:  # a tokenizer that takes no attributes: hash every time
        pass
    return digest


def _tokenizer_hash(tokenizer: Any) -> str:
    h = hashlib.sha256()
    h.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    specials = [tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id,
                getattr(tokenizer, "chat_template", None)]
    h.update(json.dumps(specials, default=str).encode())
    return h.hexdigest()


def data_settings(config: Any) -> dict[str, Any]:
    """The config fields that decide the training rows."""
    return {"data": config.data, "targets": config.targets, "max_length": config.max_length,
            "response_tokens": config.response_tokens, "max_examples": config.max_examples}


def data_hash(examples: Sequence[Any], config: Any) -> str:
    """sha256 of the examples' ids and text (gold responses only for targets='gold') and the
    settings that shape the rows (targets, max_length, response_tokens); not the file name."""
    h = hashlib.sha256()
    settings = data_settings(config)
    h.update(json.dumps({k: settings[k] for k in ("targets", "max_length",
                                                  "response_tokens")}).encode())
    for ex in examples:
        fields = [ex.id, ex.instruction, ex.context]
        if config.targets == "gold":
            fields.append(ex.response)
        h.update(json.dumps(fields).encode())
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------
# Quantization
# ----------------------------------------------------------------------------------------------


def quantize(logprobs: torch.Tensor, scheme: str) -> dict[str, torch.Tensor]:
    """Stored tensors of top-k log-probs [n, k] (sorted descending) for one scheme."""
    if scheme == "f32":
        return {"logprobs": logprobs.float().contiguous()}
    if scheme == "f16":
        return {"logprobs": logprobs.clamp_min(-60000.0).half().contiguous()}
    gaps = (logprobs[:, :1] - logprobs).clamp_min(0.0)  # [n, k], 0 first
    span = gaps[:, -1:].clamp_min(1e-6)
    span16 = span.half().float()
    span16 = torch.where(span16 < span, span16 * (1 + 2.0 ** -10), span16)  # round up
    codes = torch.round(255.0 * torch.sqrt((gaps / span16).clamp(0.0, 1.0)))
    return {"codes": codes.to(torch.uint8).contiguous(),
            "span": span16.squeeze(-1).half().contiguous()}


def dequantize(stored: dict[str, torch.Tensor], log_tail: torch.Tensor,
               scheme: str) -> torch.Tensor:
    """[n, k] float64 log-probs whose probabilities sum to 1 - exp(log_tail) per row.

    float64 so that the tail a reader derives as 1 - sum(exp(logprobs)) keeps its precision
    when it is tiny (float32 log-probs leave ~1e-7 of noise in that sum, which decides the
    RKL-side bucket term of a student that puts mass outside the teacher's top-k)."""
    if scheme in ("f32", "f16"):
        lp = stored["logprobs"].double()
    else:
        c = stored["codes"].double() / 255.0
        lp = -(c * c) * stored["span"].double().unsqueeze(-1)  # relative to the top-1
    head = torch.log1p(-torch.exp(log_tail.double()).clamp(max=1.0 - 1e-15))
    return lp - torch.logsumexp(lp, dim=-1, keepdim=True) + head.unsqueeze(-1)


# ----------------------------------------------------------------------------------------------
# Building
# ----------------------------------------------------------------------------------------------


def _id_dtype(vocab: int) -> torch.dtype:
    return torch.uint16 if vocab <= 65536 else torch.int32


@torch.no_grad()
def build(
    teacher: Any,
    config: Any,
    out: str | os.PathLike,
    *,
    k: int = 64,
    quantization: str = "u8",
    examples: Sequence[Any] | None = None,
    responses: Sequence[str] | None = None,
    batch_size: int = 8,
    progress: Progress | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Run `teacher` (a ModelBundle) once over the training rows of `config` (a DistillConfig:
    data, targets, max_length, response_tokens, max_examples) and write a cache folder `out`.

    The folder is written under a temporary name and renamed when complete. Returns the
    manifest. Raises ValueError for a bad k / quantization or an existing `out` (unless
    overwrite)."""
    from safetensors.torch import save_file

    from akl_core.lab import data, engine

    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization must be one of {QUANTIZATIONS}, got {quantization!r}")
    out = Path(out)
    if out.exists() and not overwrite:
        raise ValueError(f"{out} exists: choose another --out (or remove it)")
    config.validate()
    tokenizer = teacher.tokenizer
    vocab = len(tokenizer)
    if k > vocab:
        raise ValueError(f"k = {k} exceeds the vocabulary ({vocab} tokens)")
    if examples is None:
        examples = engine.load_examples(config)
    if responses is None:
        responses = engine.training_responses(config, teacher, examples, progress)
    encoded = data.tokenize_for_kd(tokenizer, examples, responses, max_length=config.max_length)
    rows = engine.rows_from_encoded(encoded)
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    model = teacher.model
    model.eval()
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    from akl_core.lab.trainer import KDCollator

    collate = KDCollator(pad or 0)
    buffers: dict[str, list[torch.Tensor]] = {"ids": [], "log_tail": [], "logprobs": []}
    shards: list[dict[str, Any]] = []
    offsets = [0]
    positions = 0
    start_time = time.perf_counter()

    def flush(final: bool = False) -> None:
        nonlocal buffers
        n = sum(x.shape[0] for x in buffers["ids"])
        if n == 0 or (not final and n < SHARD_POSITIONS):
            return
        ids = torch.cat(buffers["ids"])
        lp = torch.cat(buffers["logprobs"])
        tail = torch.cat(buffers["log_tail"])
        tail = tail.float() if quantization == "f32" else tail.half()
        stored = {"ids": ids.to(_id_dtype(vocab)).contiguous(),
                  "log_tail": tail.contiguous(), **quantize(lp, quantization)}
        name = f"topk-{len(shards):05d}.safetensors"
        save_file(stored, str(tmp / name))
        start = shards[-1]["end"] if shards else 0
        shards.append({"file": name, "start": start, "end": start + n})
        buffers = {"ids": [], "log_tail": [], "logprobs": []}

    for first in range(0, len(rows), batch_size):
        chunk = rows[first : first + batch_size]
        batch = collate(chunk)
        logits = model(input_ids=batch["input_ids"].to(device),
                       attention_mask=batch["attention_mask"].to(device)).logits
        valid = (batch["labels"][:, 1:] != -100).to(device)
        rows_logits = logits[:, :-1][valid][:, :vocab].float()
        logprobs = torch.log_softmax(rows_logits, dim=-1)
        top_lp, top_ids = logprobs.topk(k, dim=-1)  # sorted, descending
        # log of the mass outside the top-k, summed directly (1 - sum(top) loses it)
        log_tail = torch.logsumexp(logprobs.scatter(1, top_ids, float("-inf")), dim=-1)
        buffers["ids"].append(top_ids.cpu())
        buffers["logprobs"].append(top_lp.cpu())
        buffers["log_tail"].append(log_tail.cpu())
        counts = valid.sum(dim=1).tolist()
        for c in counts:
            offsets.append(offsets[-1] + int(c))
        positions += int(valid.sum())
        flush()
        if progress is not None:
            progress("teacher cache", min(first + batch_size, len(rows)), len(rows))
    flush(final=True)
    lengths = torch.tensor([len(r["input_ids"]) for r in rows], dtype=torch.int64)
    prompt = torch.tensor([int((r["labels"] == -100).sum()) for r in rows], dtype=torch.int64)
    save_file({"input_ids": torch.cat([r["input_ids"] for r in rows]).to(torch.int32),
               "lengths": lengths, "prompt_lengths": prompt,
               "offsets": torch.tensor(offsets, dtype=torch.int64)}, str(tmp / ROWS_FILE))
    tokenizer.save_pretrained(tmp)
    model.config.to_json_file(str(tmp / "config.json"))
    topk_bytes = sum((tmp / s["file"]).stat().st_size for s in shards)
    manifest = {
        "format": FORMAT,
        "teacher": teacher.name,
        "tokenizer_hash": tokenizer_hash(tokenizer),
        "vocab_size": vocab,
        "k": k,
        "quantization": quantization,
        "id_dtype": str(_id_dtype(vocab)).replace("torch.", ""),
        "temperature": 1.0,
        "data": {**data_settings(config), "hash": data_hash(examples, config)},
        "examples": len(rows),
        "positions": positions,
        "topk_bytes": topk_bytes,
        "bytes_per_token": topk_bytes / max(positions, 1),
        "seconds": time.perf_counter() - start_time,
        "shards": shards,
    }
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return manifest


# ----------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------


@dataclass
class _StandIn:
    """What load_student needs of a teacher when the teacher is not loaded: the tokenizer, the
    model config (for `tiny` students) and the vocabulary size."""

    model: Any
    tokenizer: Any
    name: str
    device: torch.device

    @property
    def vocab_size(self) -> int:
        return int(self.model.config.vocab_size)

    @property
    def num_layers(self) -> int:
        return int(self.model.config.num_hidden_layers)


class _ConfigOnly:
    def __init__(self, config: Any) -> None:
        self.config = config


class TeacherCache:
    """A cache folder opened for reading (see the module)."""

    def __init__(self, path: Path, manifest: dict[str, Any]) -> None:
        self.path = path
        self.manifest = manifest

    @classmethod
    def open(cls, path: str | os.PathLike) -> TeacherCache:
        """Open a cache folder; ValueError if it is missing, incomplete or of another format."""
        p = Path(path)
        if not (p / MANIFEST).is_file():
            raise ValueError(f"no teacher cache at {p} (no {MANIFEST}; make one with "
                             "`akl teacher-cache`)")
        manifest = json.loads((p / MANIFEST).read_text(encoding="utf-8"))
        if manifest.get("format") != FORMAT:
            raise ValueError(f"teacher cache {p} has format {manifest.get('format')!r}, this "
                             f"version reads format {FORMAT}: rebuild it")
        missing = [s["file"] for s in manifest["shards"] if not (p / s["file"]).is_file()]
        if missing or not (p / ROWS_FILE).is_file():
            raise ValueError(f"teacher cache {p} is incomplete (missing "
                             f"{(missing or [ROWS_FILE])[0]})")
        return cls(p, manifest)

    @property
    def k(self) -> int:
        return int(self.manifest["k"])

    def tokenizer(self) -> Any:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(self.path)

    def stand_in(self, device: Any = None) -> _StandIn:
        """A teacher stand-in for akl_core.lab.models.load_student (tokenizer + config)."""
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(self.path)
        tok = self.tokenizer()
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        return _StandIn(_ConfigOnly(config), tok, f"cache of {self.manifest['teacher']}",
                        torch.device(device) if device is not None else torch.device("cpu"))

    def check(self, config: Any, examples: Sequence[Any], tokenizer: Any) -> None:
        """ValueError unless the cache was made for this tokenizer, these examples and these
        row settings (and temperature 1)."""
        m = self.manifest
        if tokenizer_hash(tokenizer) != m["tokenizer_hash"]:
            raise ValueError(f"teacher cache {self.path} was made for another tokenizer (of "
                             f"{m['teacher']}): the student's tokenizer differs")
        want = {**data_settings(config), "hash": data_hash(examples, config)}
        have = m["data"]
        if want["hash"] != have["hash"]:
            diff = [f"{key}: cache {have.get(key)!r}, run {want[key]!r}"
                    for key in ("data", "targets", "max_length", "response_tokens",
                                "max_examples") if have.get(key) != want[key]]
            detail = "; ".join(diff) if diff else "the examples' text differs"
            raise ValueError(f"teacher cache {self.path} was made for other data ({detail})")
        if float(config.temperature) != float(m.get("temperature", 1.0)):
            raise ValueError(f"teacher cache {self.path} holds temperature-1 log-probs; a run "
                             f"from it needs temperature 1, got {config.temperature}")

    def load(self) -> tuple[list[dict[str, torch.Tensor]], torch.Tensor, torch.Tensor]:
        """(rows, ids [P, k] long, logprobs [P, k] float64) for all P response tokens."""
        from safetensors.torch import load_file

        r = load_file(str(self.path / ROWS_FILE))
        ids, lps = [], []
        for shard in self.manifest["shards"]:
            t = load_file(str(self.path / shard["file"]))
            ids.append(t["ids"].long())
            lps.append(dequantize(t, t["log_tail"], self.manifest["quantization"]))
        all_ids = torch.cat(ids) if ids else torch.zeros(0, self.k, dtype=torch.long)
        all_lp = torch.cat(lps) if lps else torch.zeros(0, self.k, dtype=torch.float64)
        rows = []
        start = 0
        for n, n_prompt in zip(r["lengths"].tolist(), r["prompt_lengths"].tolist()):
            seq = r["input_ids"][start : start + n].long()
            labels = seq.clone()
            labels[:n_prompt] = -100
            rows.append({"input_ids": seq, "labels": labels})
            start += n
        return rows, all_ids, all_lp

    def rows_for(self, config: Any, examples: Sequence[Any], tokenizer: Any,
                 responses: Sequence[str] | None = None) -> list[dict[str, torch.Tensor]]:
        """Training rows carrying their sparse teacher (teacher_topk_ids / _logprobs [n_i, k]),
        after :meth:`check`."""
        self.check(config, examples, tokenizer)
        rows, ids, lps = self.load()
        offsets = self._offsets()
        if len(rows) != len(examples) or offsets[-1] != ids.shape[0]:
            raise ValueError(f"teacher cache {self.path} is inconsistent ({len(rows)} rows for "
                             f"{len(examples)} examples): rebuild it")
        for i, row in enumerate(rows):
            a, b = offsets[i], offsets[i + 1]
            if int((row["labels"][1:] != -100).sum()) != b - a:
                raise ValueError(f"teacher cache {self.path}: row {i} does not match its "
                                 "positions: rebuild it")
            row["teacher_topk_ids"] = ids[a:b]
            row["teacher_topk_logprobs"] = lps[a:b]
        return rows

    def _offsets(self) -> list[int]:
        from safetensors import safe_open

        with safe_open(str(self.path / ROWS_FILE), framework="pt") as f:
            return f.get_tensor("offsets").tolist()

    def dense_rows(self, row: dict[str, torch.Tensor], vocab_size: int) -> torch.Tensor:
        """[n, V] log-probs of one row's sparse teacher for diagnostics (the probe): the top-k
        as stored, the tail mass spread evenly over the other tokens (approximate there)."""
        ids, lp = row["teacher_topk_ids"], row["teacher_topk_logprobs"]
        n, k = ids.shape
        tail = (1.0 - lp.double().exp().sum(-1)).clamp_min(0.0)
        rest = torch.log(tail / max(vocab_size - k, 1)).float()
        out = rest.unsqueeze(-1).expand(n, vocab_size).clone()
        out.scatter_(1, ids, lp.float())
        return out


_ENSURE_LOCK = threading.Lock()


def cache_key(teacher: Any, config: Any, k: int, quantization: str) -> str:
    """The folder name of an automatic cache: a hash of what it was made for."""
    settings = {key: value for key, value in data_settings(config).items()}
    text = json.dumps([teacher.name, tokenizer_hash(teacher.tokenizer), settings, k,
                       quantization, FORMAT])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def ensure(teacher: Any, config: Any, *, k: int = 64, quantization: str = "u8",
           root: str | os.PathLike | None = None, progress: Progress | None = None) -> Path:
    """A cache of `teacher` for `config`'s rows under ``root`` (default
    ``<akl cache dir>/teacher_caches``), built on first use (progress "teacher cache", done,
    total), reused afterwards. Safe against concurrent callers in one process (a lock) and
    across processes (each builds under a temporary name; the first complete one wins)."""
    from akl_core.lab import models

    base = Path(root) if root is not None else models.cache_dir() / "teacher_caches"
    out = base / cache_key(teacher, config, k, quantization)
    with _ENSURE_LOCK:
        if (out / MANIFEST).is_file():
            return out
        base.mkdir(parents=True, exist_ok=True)
        tmp = base / f".build-{os.getpid()}-{out.name}"
        build(teacher, config, tmp, k=k, quantization=quantization, progress=progress,
              overwrite=True)
        try:
            os.replace(tmp, out)
        except OSError:  # another process finished first
            shutil.rmtree(tmp, ignore_errors=True)
        return out


def sparse_kd_reference(student_logits: torch.Tensor, ids: torch.Tensor,
                        logprobs: torch.Tensor, loss: str = "fkl") -> torch.Tensor:
    """Per-position FKL or RKL between the teacher's top-k + tail bucket and the student's
    distribution collapsed the same way (its mass on the k tokens, the rest in one bucket), in
    float64: the quantity a SparseTeacher with tail="bucket" stands for. For measuring the
    quantisation error of a cache (benchmarks, tests); not used in training."""
    logq = torch.log_softmax(student_logits.double(), dim=-1)
    q_top = logq.gather(-1, ids).exp()
    q_tail = (1.0 - q_top.sum(-1)).clamp_min(1e-300)
    p_top = logprobs.double().exp()
    p_tail = (1.0 - p_top.sum(-1)).clamp_min(0.0)
    p = torch.cat([p_top, p_tail.unsqueeze(-1)], -1)
    q = torch.cat([q_top, q_tail.unsqueeze(-1)], -1)
    if loss == "fkl":
        a, b = p, q
    elif loss == "rkl":
        a, b = q, p
    else:
        raise ValueError(f"loss must be fkl or rkl, got {loss!r}")
    terms = torch.where(a > 0, a * (torch.log(a.clamp_min(1e-300)) -
                                    torch.log(b.clamp_min(1e-300))), torch.zeros_like(a))
    return terms.sum(-1)


def describe(manifest: dict[str, Any]) -> str:
    """One line about a cache."""
    return (f"{manifest['examples']} examples, {manifest['positions']} response tokens, "
            f"k = {manifest['k']}, {manifest['quantization']}: "
            f"{manifest['bytes_per_token']:.1f} bytes/token "
            f"({manifest['topk_bytes'] / 2**20:.1f} MiB), teacher {manifest['teacher']}, "
            f"{manifest['seconds']:.0f} s")


__all__ = ["QUANTIZATIONS", "TeacherCache", "build", "cache_key", "data_hash", "dequantize",
           "describe", "ensure", "quantize", "sparse_kd_reference", "tokenizer_hash"]
