"""Instruction data: bundled set and splits, JSONL validation, chat prompts, teacher responses,
KD tokenisation and batching."""

from __future__ import annotations

import json

import pytest
import torch

from akl_core.lab import data
from akl_core.lab.data import (
    Example,
    chat_prompt,
    iterate_batches,
    load_bundled,
    load_jsonl,
    teacher_responses,
    tokenize_for_kd,
)
from akl_core.lab.models import BUNDLED_NAME, ModelBundle

# ----------------------------------------------------------------------------------------------
# Bundled set and splits
# ----------------------------------------------------------------------------------------------


def test_bundled_set_size_and_variety():
    everything = load_bundled("all")
    assert len(everything) >= 300
    cats = {e.category for e in everything}
    for needed in ("open_qa", "closed_qa", "summarization", "brainstorming", "classification",
                   "rewriting", "coding", "creative_writing"):
        assert needed in cats
    assert sum(e.response is not None for e in everything) >= 150  # gold where natural
    assert sum(bool(e.context) for e in everything) >= 100  # summarise-this and friends
    assert len({e.id for e in everything}) == len(everything)


def test_splits_fixed_disjoint_and_complete():
    splits = {s: load_bundled(s) for s in data.SPLITS}
    ids = {s: {e.id for e in exs} for s, exs in splits.items()}
    assert len(ids["validation"]) == len(ids["test"]) == 34
    assert len(ids["train"]) == len(load_bundled("all")) - 68
    assert not ids["train"] & ids["test"] and not ids["train"] & ids["validation"]
    assert not ids["test"] & ids["validation"]
    assert [e.id for e in load_bundled("test")] == [e.id for e in splits["test"]]
    # The split does not depend on file order.
    everything = load_bundled("all")
    pairs = sorted(((e.id, e.category) for e in everything), reverse=True)
    again = data.split_ids([i for i, _ in pairs], [c for _, c in pairs])
    assert set(again["test"]) == ids["test"] and set(again["validation"]) == ids["validation"]
    # Stratified: every category with at least 10 prompts appears in test and in train.
    cats = {e.category for e in everything}
    for cat in cats:
        n = sum(e.category == cat for e in everything)
        n_test = sum(e.category == cat for e in splits["test"])
        assert abs(n_test - n / 10) <= 1, cat


def test_unknown_split():
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        load_bundled("dev")


# ----------------------------------------------------------------------------------------------
# User JSONL
# ----------------------------------------------------------------------------------------------


def test_load_jsonl_dolly_and_alpaca(tmp_path):
    path = tmp_path / "mine.jsonl"
    rows = [
        {"instruction": "Say hi", "response": "Hi!", "category": "open_qa"},
        {},
        {"instruction": "Summarise", "context": "Some text.", "id": "x7"},
        {"instruction": "Translate", "input": "Bonjour", "output": "Hello"},
    ]
    path.write_text("\n".join("" if not r else json.dumps(r) for r in rows) + "\n")
    exs = load_jsonl(path)
    assert [e.id for e in exs] == ["mine-1", "x7", "mine-4"]
    assert exs[0].response == "Hi!" and exs[0].category == "open_qa" and exs[0].context == ""
    assert exs[1].context == "Some text." and exs[1].response is None
    assert exs[2].context == "Bonjour" and exs[2].response == "Hello"
    assert exs[1].user_message() == "Summarise\n\nSome text."


def test_load_jsonl_errors_name_lines(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(
        '{"instruction": "ok"}\n'
        "{not json}\n"
        '{"context": "no instruction"}\n'
        '["a list"]\n'
        '{"instruction": "fine", "response": 3}\n'
    )
    with pytest.raises(ValueError) as info:
        load_jsonl(path)
    msg = str(info.value)
    assert "bad.jsonl" in msg
    assert "line 2: not valid JSON" in msg
    assert "line 3: missing or empty 'instruction'" in msg
    assert "line 4: expected a JSON object" in msg
    assert "line 5: 'response' must be a string" in msg
    assert "line 1" not in msg


def test_load_jsonl_missing_empty_duplicate(tmp_path):
    with pytest.raises(ValueError, match="data file not found"):
        load_jsonl(tmp_path / "nope.jsonl")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(ValueError, match="no examples found"):
        load_jsonl(empty)
    dup = tmp_path / "dup.jsonl"
    dup.write_text('{"id": "a", "instruction": "x"}\n{"id": "a", "instruction": "y"}\n')
    with pytest.raises(ValueError, match="line 2: duplicate id 'a'"):
        load_jsonl(dup)


# ----------------------------------------------------------------------------------------------
# Chat prompts and KD tokenisation (real SmolLM2 tokenizer)
# ----------------------------------------------------------------------------------------------


def test_chat_prompt_chatml(teacher_tokenizer):
    ex = Example("e1", "Summarise this.", "The cat sat.")
    text = chat_prompt(teacher_tokenizer, ex)
    assert text.startswith("<|im_start|>system\n")
    assert "<|im_start|>user\nSummarise this.\n\nThe cat sat.<|im_end|>\n" in text
    assert text.endswith("<|im_start|>assistant\n")


def test_chat_prompt_without_template():
    class Plain:
        chat_template = None

    assert chat_prompt(Plain(), Example("a", "Hi")) == "Instruction: Hi\nResponse: "


def test_tokenize_for_kd_masks_prompt_and_padding(teacher_tokenizer):
    tok = teacher_tokenizer
    exs = [Example("a", "What is 2+2?"), Example("b", "Name a colour.", "Pick one.")]
    resps = ["4.", "Blue is a colour that many people like."]
    enc = tokenize_for_kd(tok, exs, resps, max_length=256)
    ids, mask, labels = enc["input_ids"], enc["attention_mask"], enc["labels"]
    assert set(enc) == {"input_ids", "attention_mask", "labels"}
    assert ids.shape == mask.shape == labels.shape and ids.dtype == torch.long
    for row, (ex, resp) in enumerate(zip(exs, resps)):
        n_prompt = len(tok(chat_prompt(tok, ex), add_special_tokens=False)["input_ids"])
        n_resp = len(tok(resp, add_special_tokens=False)["input_ids"]) + 1  # + <|im_end|>
        n = int(mask[row].sum())
        assert n == n_prompt + n_resp
        assert mask[row, :n].all() and not mask[row, n:].any()  # right padding
        assert (labels[row, :n_prompt] == -100).all()
        assert (labels[row, n:] == -100).all()
        assert torch.equal(labels[row, n_prompt:n], ids[row, n_prompt:n])
        assert tok.decode(labels[row, n_prompt : n - 1]) == resp
        assert int(labels[row, n - 1]) == tok.eos_token_id
        assert tok.decode(ids[row, :n_prompt]) == chat_prompt(tok, ex)
    assert ids.shape[1] == int(mask.sum(1).max())


def test_tokenize_for_kd_truncation(teacher_tokenizer):
    tok = teacher_tokenizer
    ex = Example("a", "Tell me a long story.")
    prompt_ids = tok(chat_prompt(tok, ex), add_special_tokens=False)["input_ids"]
    n_prompt = len(prompt_ids)
    long_resp = "word " * 300
    enc = tokenize_for_kd(tok, [ex], [long_resp], max_length=n_prompt + 40)
    assert enc["input_ids"].shape == (1, n_prompt + 40)
    assert int((enc["labels"] != -100).sum()) == 40
    assert enc["input_ids"][0, :n_prompt].tolist() == prompt_ids  # the whole prompt kept
    # A prompt longer than max_length is cut from the left, keeping room for the response.
    enc = tokenize_for_kd(tok, [ex], [long_resp], max_length=16)
    assert enc["input_ids"].shape == (1, 16)
    assert int((enc["labels"] != -100).sum()) == 4
    assert enc["input_ids"][0, :12].tolist() == prompt_ids[-12:]  # the end of the prompt kept


def test_tokenize_for_kd_errors(teacher_tokenizer):
    ex = Example("a", "Hi")
    with pytest.raises(ValueError, match="has no response"):
        tokenize_for_kd(teacher_tokenizer, [ex], [None], max_length=64)
    with pytest.raises(ValueError, match="1 examples but 2 responses"):
        tokenize_for_kd(teacher_tokenizer, [ex], ["a", "b"], max_length=64)
    with pytest.raises(ValueError, match="max_length"):
        tokenize_for_kd(teacher_tokenizer, [ex], ["a"], max_length=2)


def _fake_encoded(n: int = 10, width: int = 12) -> dict[str, torch.Tensor]:
    lengths = torch.arange(n) % 5 + 3
    mask = (torch.arange(width)[None, :] < lengths[:, None]).long()
    ids = torch.arange(n)[:, None].repeat(1, width) * mask
    return {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)}


def test_iterate_batches_deterministic_endless_trimmed():
    enc = _fake_encoded()
    a = iterate_batches(enc, 4, seed=1)
    b = iterate_batches(enc, 4, seed=1)
    first = [next(a) for _ in range(10)]  # 40 rows = 4 epochs: endless
    second = [next(b) for _ in range(10)]
    for x, y in zip(first, second):
        for key in x:
            assert torch.equal(x[key], y[key])
    # The first 10 rows drawn (2.5 batches) cover 10 distinct rows: a permutation.
    rows = torch.cat([batch["input_ids"][:, 0] for batch in first[:3]])[:10]
    assert sorted(rows.tolist()) == list(range(10))
    for batch in first:
        assert batch["input_ids"].shape[0] == 4
        assert batch["input_ids"].shape[1] == int(batch["attention_mask"].sum(1).max())
    other = next(iterate_batches(enc, 4, seed=2))
    assert not torch.equal(other["input_ids"][:, 0], first[0]["input_ids"][:, 0])
    ordered = next(iterate_batches(enc, 3, seed=0, shuffle=False))
    assert ordered["input_ids"][:, 0].tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="batch_size"):
        next(iterate_batches(enc, 0, seed=0))


# ----------------------------------------------------------------------------------------------
# Teacher responses: generation, cache, committed file
# ----------------------------------------------------------------------------------------------


def test_generate_left_padding_matches_single(tiny_teacher):
    short = chat_prompt(tiny_teacher.tokenizer, Example("s", "Hi"))
    long = chat_prompt(tiny_teacher.tokenizer, Example("l", "Please write a long answer " * 5))
    alone = data.generate(tiny_teacher, [short], max_new_tokens=6)
    batched = data.generate(tiny_teacher, [long, short], max_new_tokens=6, batch_size=2)
    assert batched[1] == alone[0] and alone[0] != ""


def test_teacher_responses_cached_and_progress(tiny_teacher, monkeypatch, tmp_path):
    monkeypatch.setenv("AKL_CACHE_DIR", str(tmp_path))
    exs = load_bundled("test")[:3]
    calls: list[tuple[int, int]] = []
    first = teacher_responses(tiny_teacher, exs, max_new_tokens=5, batch_size=2,
                              progress=lambda d, t: calls.append((d, t)))
    assert len(first) == 3 and calls[-1] == (3, 3)
    cache_files = list((tmp_path / "responses").glob("*.jsonl"))
    assert len(cache_files) == 1 and len(cache_files[0].read_text().splitlines()) == 3

    def boom(*args, **kwargs):
        raise AssertionError("should come from the cache")

    monkeypatch.setattr(data, "generate", boom)
    assert teacher_responses(tiny_teacher, exs, max_new_tokens=5) == first
    # A half-written last line (run killed mid-write) is ignored, not fatal.
    with cache_files[0].open("a") as f:
        f.write('{"prompt_sha": "abc", "respo')
    assert teacher_responses(tiny_teacher, exs, max_new_tokens=5) == first
    # Other settings are other keys: they need generation.
    with pytest.raises(AssertionError, match="from the cache"):
        teacher_responses(tiny_teacher, exs, max_new_tokens=6)
    with pytest.raises(AssertionError, match="from the cache"):
        teacher_responses(tiny_teacher, exs, max_new_tokens=5, cache=False)


def test_committed_responses_match_bundled_prompts(teacher_tokenizer):
    meta = json.loads(data.RESPONSES_META.read_text())
    assert meta["model"] == BUNDLED_NAME
    assert meta["settings"] == {"max_new_tokens": data.DEFAULT_MAX_NEW_TOKENS, "do_sample": False}
    assert meta["date"] and meta["command"].startswith("python -m akl_core.lab.data")
    records = [json.loads(line) for line in data.RESPONSES_FILE.read_text().splitlines()]
    assert len(records) == meta["examples"]
    by_id = {e.id: e for e in load_bundled("all")}
    test_ids = {e.id for e in load_bundled("test")}
    assert test_ids <= {r["id"] for r in records}  # at least the test split is committed
    for rec in records:
        prompt = chat_prompt(teacher_tokenizer, by_id[rec["id"]])
        assert rec["prompt_sha"] == data._sha(prompt), rec["id"]
        assert isinstance(rec["response"], str) and rec["response"].strip()


def test_committed_responses_used_for_bundled_teacher(teacher_tokenizer, tiny_teacher, monkeypatch,
                                                      tmp_path):
    monkeypatch.setenv("AKL_CACHE_DIR", str(tmp_path))
    fake = ModelBundle(tiny_teacher.model, teacher_tokenizer, BUNDLED_NAME, torch.device("cpu"))
    monkeypatch.setattr(data, "generate", lambda *a, **k: pytest.fail("generated"))
    exs = load_bundled("test")[:5]
    committed = {json.loads(line)["id"]: json.loads(line)["response"]
                 for line in data.RESPONSES_FILE.read_text().splitlines()}
    assert teacher_responses(fake, exs) == [committed[e.id] for e in exs]


def test_data_command_stats(capsys):
    assert data.main(["--stats"]) == 0
    out = capsys.readouterr().out
    assert "test: 34 examples" in out and "all: " in out


# ----------------------------------------------------------------------------------------------
# Integration: the real teacher
# ----------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_real_teacher_generation_matches_committed(bundled_teacher, monkeypatch, tmp_path):
    """Greedy generation is deterministic: 8 fresh tokens are a prefix of the committed text."""
    monkeypatch.setenv("AKL_CACHE_DIR", str(tmp_path))
    exs = [e for e in load_bundled("test") if e.category in ("open_qa", "math")][:2]
    fresh = teacher_responses(bundled_teacher, exs, max_new_tokens=8, cache=False)
    committed = teacher_responses(bundled_teacher, exs)
    for ex, short, full in zip(exs, fresh, committed):
        assert short, ex.id
        assert full.startswith(short), (ex.id, short, full)


@pytest.mark.slow
def test_real_teacher_labels_cover_response(bundled_teacher):
    exs = load_bundled("test")[:2]
    resps = teacher_responses(bundled_teacher, exs)
    enc = tokenize_for_kd(bundled_teacher.tokenizer, exs, resps, max_length=256)
    with torch.no_grad():
        logits = bundled_teacher.model(input_ids=enc["input_ids"],
                                       attention_mask=enc["attention_mask"]).logits
    # Teacher-forced on its own greedy response, the teacher's argmax reproduces the labels.
    pred = logits[:, :-1].argmax(-1)
    target = enc["labels"][:, 1:]
    valid = target != -100
    agreement = (pred[valid] == target[valid]).float().mean().item()
    assert agreement > 0.95

