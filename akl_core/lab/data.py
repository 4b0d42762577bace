"""Instruction data: the bundled prompt set, users' JSONL, teacher responses, KD tokenisation.

Conventions
- An :class:`Example` is one instruction (optionally with a context paragraph and a gold
  response). The user turn shown to a model is ``instruction`` followed by a blank line and the
  context (when there is one), rendered with the tokenizer's chat template.
- Teacher responses are greedy generations from the teacher (p); they are the KD targets.
- :func:`tokenize_for_kd` returns ``labels`` aligned with ``input_ids`` (Hugging Face
  convention, NOT shifted): ``labels[i, t]`` is the token at position t, and -100 marks prompt
  and padding tokens. The logits that predict ``labels[:, t]`` are ``logits[:, t - 1]``.

Command: ``python -m akl_core.lab.data --regenerate`` regenerates the committed teacher responses
of the bundled set with the bundled teacher; ``--verify`` regenerates and compares.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

DATA_DIR = Path(__file__).resolve().parent / "bundled"
PROMPTS_FILE = DATA_DIR / "prompts.jsonl"
RESPONSES_FILE = DATA_DIR / "teacher_responses.jsonl"
RESPONSES_META = DATA_DIR / "teacher_responses.json"
SPLIT_SEED = 1234
# Bound of the committed teacher responses (64 new tokens: what 2 shared CPU cores could
# generate for the whole set in about an hour). Other bounds are generated and cached.
DEFAULT_MAX_NEW_TOKENS = 64
SPLITS = ("train", "validation", "test")
_SPLIT_FRACTION = 0.1  # validation and test each; the rest is train

Progress = Callable[[int, int], None]


@dataclass
class Example:
    """One instruction: ``instruction`` plus optional ``context``, gold ``response``, category."""

    id: str
    instruction: str
    context: str = ""
    response: str | None = None
    category: str = ""

    def user_message(self) -> str:
        """The user turn: the instruction, then a blank line and the context if any."""
        if self.context.strip():
            return f"{self.instruction.strip()}\n\n{self.context.strip()}"
        return self.instruction.strip()


# ----------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------


def _parse_records(lines: Iterable[str], source: str, default_prefix: str) -> list[Example]:
    examples: list[Example] = []
    errors: list[str] = []
    seen: set[str] = set()
    for lineno, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line:
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            errors.append(f"line {lineno}: not valid JSON ({exc.msg})")
            continue
        if not isinstance(record, dict):
            errors.append(f"line {lineno}: expected a JSON object, got {type(record).__name__}")
            continue
        # Alpaca-style aliases: input -> context, output -> response.
        instruction = record.get("instruction")
        context = record.get("context", record.get("input", ""))
        response = record.get("response", record.get("output"))
        category = record.get("category", "")
        ident = record.get("id", f"{default_prefix}-{lineno}")
        problems = []
        if not isinstance(instruction, str) or not instruction.strip():
            problems.append("missing or empty 'instruction' (a non-empty string)")
        if context is None:
            context = ""
        if not isinstance(context, str):
            problems.append("'context' must be a string")
        if response is not None and not isinstance(response, str):
            problems.append("'response' must be a string")
        if not isinstance(category, str):
            problems.append("'category' must be a string")
        if not isinstance(ident, (str, int)):
            problems.append("'id' must be a string")
        ident = str(ident)
        if ident in seen:
            problems.append(f"duplicate id {ident!r}")
        if problems:
            errors.append(f"line {lineno}: " + "; ".join(problems))
            continue
        seen.add(ident)
        examples.append(Example(ident, instruction, context, response, category))
    if errors:
        shown = errors[:10]
        more = f" (and {len(errors) - 10} more)" if len(errors) > 10 else ""
        raise ValueError(f"{source}: invalid records: " + " | ".join(shown) + more)
    if not examples:
        raise ValueError(f"{source}: no examples found (expected JSON lines with 'instruction')")
    return examples


def load_jsonl(path: str | Path) -> list[Example]:
    """Read a Dolly-format JSONL file: instruction, optional context, response, category, id.

    ``input`` / ``output`` (Alpaca names) are accepted for context / response. Raises
    ValueError naming the file and the offending line numbers.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise ValueError(f"data file not found: {p}")
    try:
        text = p.read_text(encoding="utf-8-sig")  # a UTF-8 byte-order mark is fine
    except UnicodeDecodeError:
        raise ValueError(f"{p}: not a UTF-8 text file") from None
    return _parse_records(text.splitlines(), str(p), p.stem)


def split_ids(
    ids: Sequence[str], categories: Sequence[str] | None = None, *, seed: int = SPLIT_SEED
) -> dict[str, list[str]]:
    """Deterministic train / validation / test split of ids (10% validation, 10% test).

    Stratified by category when ``categories`` (one per id) is given: ids are shuffled within
    each category (seeded), the categories are concatenated in sorted order, and every tenth id
    goes to test, every tenth (offset 5) to validation. Independent of the input order.
    """
    cats = list(categories) if categories is not None else [""] * len(ids)
    if len(cats) != len(ids):
        raise ValueError(f"{len(ids)} ids but {len(cats)} categories")
    rng = random.Random(seed)
    order: list[str] = []
    for cat in sorted(set(cats)):
        members = sorted(i for i, c in zip(ids, cats) if c == cat)
        rng.shuffle(members)
        order += members
    out: dict[str, list[str]] = {"train": [], "validation": [], "test": []}
    for position, ident in enumerate(order):
        slot = position % round(1 / _SPLIT_FRACTION)
        out["test" if slot == 0 else "validation" if slot == 5 else "train"].append(ident)
    return out


def load_bundled(split: str = "train") -> list[Example]:
    """The bundled instruction set (338 prompts written for this project), one split.

    ``split``: "train" | "validation" | "test" | "all". The split is fixed (seeded, stratified
    by category: 270 / 34 / 34); examples keep the file's order within a split.
    """
    if split not in (*SPLITS, "all"):
        raise ValueError(f"unknown split {split!r}: use one of {', '.join(SPLITS)} or 'all'")
    examples = _parse_records(
        PROMPTS_FILE.read_text(encoding="utf-8").splitlines(), str(PROMPTS_FILE), "bundled"
    )
    if split == "all":
        return examples
    keep = set(split_ids([e.id for e in examples], [e.category for e in examples])[split])
    return [e for e in examples if e.id in keep]


def parse_source(source: str, default_split: str = "train") -> tuple[str, str]:
    """The one parser of a data source: ``("bundled", split)`` for "bundled" or
    "bundled:<split>" (train / validation / test / all), else ``("jsonl", path)``.

    Raises ValueError for an empty source, an unknown split or a missing file."""
    if not isinstance(source, str) or not source.strip():
        raise ValueError(f"data must be 'bundled:<split>' or a JSONL path, got {source!r}")
    source = source.strip()
    head, sep, split = source.partition(":")
    if head == "bundled":
        split = split or default_split
        if split not in (*SPLITS, "all"):
            raise ValueError(f"data: bundled split must be one of {(*SPLITS, 'all')}, "
                             f"got {split!r}")
        return "bundled", split
    if not Path(source).expanduser().is_file():
        raise ValueError(f"data: no such JSONL file {source!r}")
    return "jsonl", source


def load_source(source: str, *, default_split: str = "train", limit: int | None = None
                ) -> list[Example]:
    """The examples of a data source (see :func:`parse_source`), the first `limit` of them."""
    kind, where = parse_source(source, default_split)
    examples = load_bundled(where) if kind == "bundled" else load_jsonl(where)
    if limit is not None:
        examples = examples[:limit]
    if not examples:
        raise ValueError(f"data: {source!r} holds no examples")
    return examples


# ----------------------------------------------------------------------------------------------
# Prompts and teacher responses
# ----------------------------------------------------------------------------------------------


def chat_prompt(tokenizer: Any, example: Example) -> str:
    """The example's user turn rendered with the chat template, ending with the assistant cue.

    Tokenizers without a chat template get a plain "Instruction/Response" format.
    """
    messages = [{"role": "user", "content": example.user_message()}]
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return f"Instruction: {example.user_message()}\nResponse: "


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _settings(max_new_tokens: int) -> dict[str, Any]:
    return {"max_new_tokens": int(max_new_tokens), "do_sample": False}


def _cache_file(model_name: str, max_new_tokens: int) -> Path:
    from akl_core.lab.models import cache_dir

    key = _sha(json.dumps({"model": model_name, **_settings(max_new_tokens)}, sort_keys=True))
    return cache_dir() / "responses" / f"{key[:20]}.jsonl"


def _read_cache(path: Path) -> dict[str, str]:
    """prompt sha -> response; a half-written last line (killed run) is ignored."""
    found: dict[str, str] = {}
    if not path.is_file():
        return found
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
            found[record["prompt_sha"]] = record["response"]
        except (ValueError, KeyError, TypeError):
            continue
    return found


def _committed(model_name: str, max_new_tokens: int) -> dict[str, str]:
    """The committed responses when they were made by this model with these settings."""
    if not (RESPONSES_META.is_file() and RESPONSES_FILE.is_file()):
        return {}
    try:
        meta = json.loads(RESPONSES_META.read_text())
    except ValueError:
        return {}
    if meta.get("model") != model_name or meta.get("settings") != _settings(max_new_tokens):
        return {}
    return _read_cache(RESPONSES_FILE)


def left_padded(
    sequences: Sequence[Sequence[int]], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token id lists as a left-padded batch for generation: (ids, attention mask), both
    int64 `[B, longest]`."""
    width = max(len(seq) for seq in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, width - len(seq) :] = torch.tensor(list(seq), dtype=torch.long)
        mask[row, width - len(seq) :] = 1
    return ids, mask


@torch.no_grad()
def generate(
    bundle: Any,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    batch_size: int = 8,
    progress: Progress | None = None,
) -> list[str]:
    """Greedy continuations of already-templated prompts (left padding, batched).

    Returns the decoded new text (special tokens removed, stripped), in the input order.
    Prompts are batched by length to waste little padding.
    """
    if max_new_tokens < 1 or batch_size < 1:
        raise ValueError(
            f"max_new_tokens and batch_size must be >= 1, got {max_new_tokens}, {batch_size}"
        )
    tokenizer, model = bundle.tokenizer, bundle.model
    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    eos = tokenizer.eos_token_id
    out: list[str] = [""] * len(prompts)
    was_training = model.training
    model.eval()
    done = 0
    try:
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            ids, mask = left_padded([encoded[i] for i in idx], pad_id)
            result = model.generate(
                input_ids=ids.to(bundle.device),
                attention_mask=mask.to(bundle.device),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                num_beams=1,
                pad_token_id=pad_id,
                eos_token_id=eos,
                temperature=None,
                top_p=None,
                top_k=None,
            )
            new = result[:, ids.shape[1] :].cpu()
            for row, i in enumerate(idx):
                out[i] = tokenizer.decode(new[row], skip_special_tokens=True).strip()
            done += len(idx)
            if progress is not None:
                progress(done, len(prompts))
    finally:
        model.train(was_training)
    return out


def teacher_responses(
    teacher: Any,
    examples: Sequence[Example],
    *,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    batch_size: int = 8,
    cache: bool = True,
    progress: Progress | None = None,
    use_committed: bool = True,
) -> list[str]:
    """Greedy teacher responses to ``examples`` (chat template), in order.

    Lookup order: the committed file (bundled teacher, same settings, same prompt text), then
    the disk cache under ``cache_dir()/responses`` keyed by model name + settings + prompt;
    only missing ones are generated, and they are appended to the cache batch by batch, so an
    interrupted run keeps its progress. ``progress(done, total)`` is called after each batch.
    ``cache=False`` ignores both and regenerates everything.
    """
    prompts = [chat_prompt(teacher.tokenizer, e) for e in examples]
    keys = [_sha(p) for p in prompts]
    known: dict[str, str] = {}
    path = _cache_file(teacher.name, max_new_tokens)
    if cache and use_committed:
        known.update(_committed(teacher.name, max_new_tokens))
    if cache:
        known.update(_read_cache(path))
    missing = sorted({k: i for i, k in reversed(list(enumerate(keys))) if k not in known}.values())
    if missing:
        if cache:
            path.parent.mkdir(parents=True, exist_ok=True)
        for start in range(0, len(missing), batch_size):
            chunk = missing[start : start + batch_size]
            texts = generate(
                teacher, [prompts[i] for i in chunk], max_new_tokens=max_new_tokens,
                batch_size=batch_size,
            )
            for i, text in zip(chunk, texts):
                known[keys[i]] = text
            if cache:
                with path.open("a", encoding="utf-8") as f:
                    for i, text in zip(chunk, texts):
                        f.write(json.dumps({"prompt_sha": keys[i], "response": text}) + "\n")
            if progress is not None:
                progress(min(start + batch_size, len(missing)), len(missing))
    elif progress is not None:
        progress(len(examples), len(examples))
    return [known[k] for k in keys]


# ----------------------------------------------------------------------------------------------
# Tokenisation for KD and batching
# ----------------------------------------------------------------------------------------------


def tokenize_for_kd(
    tokenizer: Any,
    examples: Sequence[Example],
    responses: Sequence[str | None],
    *,
    max_length: int,
) -> dict[str, torch.Tensor]:
    """Prompt + response (+ end-of-turn token) as training sequences, right-padded.

    Returns ``input_ids`` [N, L], ``attention_mask`` [N, L] (1 = real token) and ``labels``
    [N, L] equal to ``input_ids`` on response tokens and -100 on prompt and padding (not
    shifted; see the module doc). L is the longest sequence, at most ``max_length``.
    Over-long sequences keep the prompt and cut the response; a prompt that leaves fewer than
    ``max_length // 4`` response tokens is cut from the left.
    """
    if len(examples) != len(responses):
        raise ValueError(f"{len(examples)} examples but {len(responses)} responses")
    if not examples:
        raise ValueError("no examples to tokenize")
    if max_length < 4:
        raise ValueError(f"max_length must be >= 4, got {max_length}")
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    rows: list[tuple[list[int], int]] = []
    for ex, response in zip(examples, responses):
        if response is None:
            raise ValueError(f"example {ex.id!r} has no response to distil on")
        prompt_ids = tokenizer(chat_prompt(tokenizer, ex), add_special_tokens=False)["input_ids"]
        resp_ids = tokenizer(response, add_special_tokens=False)["input_ids"]
        if eos is not None:
            resp_ids = resp_ids + [eos]
        room = max_length - len(prompt_ids)
        if room < min(len(resp_ids), max_length // 4):
            keep = max_length - min(len(resp_ids), max_length // 4)
            prompt_ids = prompt_ids[-keep:]
            room = max_length - len(prompt_ids)
        resp_ids = resp_ids[:room]
        rows.append((prompt_ids + resp_ids, len(prompt_ids)))
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    for r, (ids, n_prompt) in enumerate(rows):
        seq = torch.tensor(ids, dtype=torch.long)
        input_ids[r, : len(ids)] = seq
        attention[r, : len(ids)] = 1
        labels[r, n_prompt : len(ids)] = seq[n_prompt:]
    return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}


def iterate_batches(
    encoded: dict[str, torch.Tensor], batch_size: int, *, seed: int, shuffle: bool = True
) -> Iterator[dict[str, torch.Tensor]]:
    """Endless, deterministic stream of batches of ``batch_size`` rows.

    Rows follow a fresh seeded permutation each epoch (or the file order without shuffle),
    wrapping across epochs so every batch is full. Trailing columns that are padding in every
    row of a batch are trimmed (sequences are right-padded).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = int(encoded["input_ids"].shape[0])
    if n == 0:
        raise ValueError("no rows to batch")
    generator = torch.Generator().manual_seed(seed)
    stream: list[int] = []
    while True:
        while len(stream) < batch_size:
            order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
            stream.extend(order.tolist())
        idx = torch.tensor(stream[:batch_size])
        stream = stream[batch_size:]
        batch = {k: v[idx] for k, v in encoded.items()}
        if "attention_mask" in batch:
            used = int(batch["attention_mask"].sum(dim=0).nonzero().max()) + 1
            batch = {k: v[:, :used] for k, v in batch.items()}
        yield batch


# ----------------------------------------------------------------------------------------------
# The command: regenerate / verify the committed responses
# ----------------------------------------------------------------------------------------------


def _print_progress(label: str) -> Progress:
    start = time.perf_counter()

    def report(done: int, total: int) -> None:
        elapsed = time.perf_counter() - start
        print(f"\r{label}: {done}/{total} ({elapsed:.0f} s)", end="", file=sys.stderr, flush=True)
        if done >= total:
            print(file=sys.stderr)

    return report


_CARRIED = ("date", "generation_seconds", "batch_size", "torch_threads", "device", "dtype")


def regenerate(
    *,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    batch_size: int = 8,
    limit: int | None = None,
    splits: Sequence[str] = ("test", "train", "validation"),
    cached_only: bool = False,
) -> Path:
    """Generate the bundled teacher's responses to the bundled set; write the data files.

    Splits are generated in the given order (each one appended to the disk cache as it goes,
    so a killed run resumes); the committed file lists the examples of these splits.
    ``cached_only`` generates nothing and commits only the examples already in the disk cache.
    """
    from akl_core.lab.models import load_teacher

    teacher = load_teacher(None, device="cpu", progress=lambda m: print(m, file=sys.stderr))
    examples: list[Example] = []
    texts: list[str] = []
    start = time.perf_counter()
    for split in splits:
        part = load_bundled(split)[:limit]
        if cached_only:
            cached = _read_cache(_cache_file(teacher.name, max_new_tokens))
            part = [e for e in part if _sha(chat_prompt(teacher.tokenizer, e)) in cached]
        # Chunks in a seeded random order: a run stopped early has cached a random subset.
        shuffled = random.Random(0).sample(part, len(part))
        report = _print_progress(f"generating {split}")
        chunk_size = 2 * batch_size
        for begin in range(0, len(shuffled), chunk_size):
            teacher_responses(
                teacher, shuffled[begin : begin + chunk_size], max_new_tokens=max_new_tokens,
                batch_size=batch_size, cache=True, use_committed=False,
            )
            report(min(begin + chunk_size, len(shuffled)), len(shuffled))
        examples += part
        texts += teacher_responses(
            teacher, part, max_new_tokens=max_new_tokens, cache=True, use_committed=False
        )
    seconds = time.perf_counter() - start
    tmp = RESPONSES_FILE.with_suffix(".jsonl.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for ex, text in zip(examples, texts):
            sha = _sha(chat_prompt(teacher.tokenizer, ex))
            f.write(json.dumps({"id": ex.id, "prompt_sha": sha, "response": text},
                               ensure_ascii=False) + "\n")
    tmp.replace(RESPONSES_FILE)
    import transformers

    previous: dict[str, Any] = {}
    if cached_only and RESPONSES_META.is_file():
        try:
            previous = json.loads(RESPONSES_META.read_text())
        except ValueError:
            previous = {}
    meta = {
        "model": teacher.name,
        "settings": _settings(max_new_tokens),
        "batch_size": batch_size,
        "dtype": str(teacher.model.dtype),
        "device": str(teacher.device),
        "examples": len(examples),
        "splits": list(splits),
        "complete": len(examples) == sum(len(load_bundled(x)) for x in splits),
        "torch_threads": torch.get_num_threads(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),  # noqa: UP017
        "generation_seconds": round(seconds, 1),
        **(
            {
                **{k: previous[k] for k in _CARRIED if k in previous},
                "rewritten_from_cache": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),  # noqa: UP017
            }
            if previous.get("model") == teacher.name
            and previous.get("settings") == _settings(max_new_tokens)
            else {}
        ),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "command": "python -m akl_core.lab.data --regenerate",
    }
    tmp = RESPONSES_META.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(meta, indent=2) + "\n")
    tmp.replace(RESPONSES_META)
    print(f"wrote {len(examples)} responses to {RESPONSES_FILE} in {seconds:.0f} s", file=sys.stderr)
    return RESPONSES_FILE


def verify(*, limit: int | None = None, batch_size: int = 8) -> tuple[int, int]:
    """Regenerate (no cache) the committed responses for up to ``limit`` examples and compare.

    Returns (identical, checked). Also checks that every committed prompt hash still matches
    the bundled prompts rendered with the bundled tokenizer.
    """
    from akl_core.lab.models import load_teacher

    if not RESPONSES_META.is_file():
        raise ValueError(f"no committed responses at {RESPONSES_FILE}; run --regenerate first")
    meta = json.loads(RESPONSES_META.read_text())
    committed = {}
    for line in RESPONSES_FILE.read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        committed[rec["id"]] = rec
    teacher = load_teacher(None, device="cpu", progress=lambda m: print(m, file=sys.stderr))
    examples = [e for e in load_bundled("all") if e.id in committed]
    stale = [e.id for e in examples
             if _sha(chat_prompt(teacher.tokenizer, e)) != committed[e.id]["prompt_sha"]]
    if stale:
        raise ValueError(f"committed responses are stale for {len(stale)} prompts, e.g. {stale[:3]}")
    examples = examples[:limit]
    texts = teacher_responses(
        teacher, examples, max_new_tokens=meta["settings"]["max_new_tokens"],
        batch_size=batch_size, cache=False, progress=_print_progress("verifying"),
    )
    same = sum(text == committed[e.id]["response"] for e, text in zip(examples, texts))
    return same, len(examples)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m akl_core.lab.data",
        description="Bundled instruction data: regenerate / verify the committed teacher responses.",
    )
    parser.add_argument("--regenerate", action="store_true",
                        help="generate the bundled teacher's responses and write the data files")
    parser.add_argument("--verify", action="store_true",
                        help="regenerate without cache and compare with the committed file")
    parser.add_argument("--max-new-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS,
                        help="generation bound (default %(default)s)")
    parser.add_argument("--batch-size", type=int, default=8, help="prompts per generation batch")
    parser.add_argument("--limit", type=int, default=None,
                        help="only the first N examples (of each split for --regenerate)")
    parser.add_argument("--splits", default="test,train,validation",
                        help="comma-separated splits to regenerate, in order")
    parser.add_argument("--cached-only", action="store_true",
                        help="with --regenerate: commit only what the disk cache already holds")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (1 is fastest on a busy shared machine)")
    parser.add_argument("--stats", action="store_true", help="print split sizes and categories")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        if args.stats or not (args.regenerate or args.verify):
            for split in (*SPLITS, "all"):
                exs = load_bundled(split)
                cats: dict[str, int] = {}
                for e in exs:
                    cats[e.category] = cats.get(e.category, 0) + 1
                print(f"{split}: {len(exs)} examples, {cats}")
        if args.regenerate:
            splits = [s.strip() for s in args.splits.split(",") if s.strip()]
            regenerate(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                       limit=args.limit, splits=splits, cached_only=args.cached_only)
        if args.verify:
            same, checked = verify(limit=args.limit, batch_size=args.batch_size)
            print(f"verify: {same}/{checked} regenerated responses identical to the committed ones")
            if same < 0.9 * checked:
                return 1
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = [
    "Example",
    "load_bundled",
    "load_jsonl",
    "split_ids",
    "chat_prompt",
    "generate",
    "teacher_responses",
    "tokenize_for_kd",
    "iterate_batches",
]
