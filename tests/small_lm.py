"""Tiny causal LMs with a small BPE tokenizer, for fast engine / CLI tests (not a test file).

The tokenizer (ChatML template, byte-level BPE, ~1000 tokens) is trained on the bundled
prompts in a fraction of a second, so the whole vocabulary is small and every loss, head/tail
split and generation runs in milliseconds. The teacher's head is scaled up so that its
next-token distributions are peaked like a real LLM's (a small head, a long tail) instead of
near-uniform.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@functools.lru_cache(maxsize=1)
def small_tokenizer(vocab_size: int = 1000):
    """A byte-level BPE tokenizer with the ChatML template, trained on the bundled prompts."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from akl_core.lab.data import load_bundled

    texts = [f"{e.instruction} {e.context}" for e in load_bundled("all")]
    tk = Tokenizer(models.BPE(unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<unk>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tk.train_from_iterator(texts, trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk, eos_token="<|im_end|>", pad_token="<|im_end|>",
        unk_token="<unk>", bos_token="<|im_start|>",
    )
    tok.chat_template = CHATML
    return tok


def small_model(vocab_size: int, *, layers: int = 2, hidden: int = 32, seed: int = 0,
                head_scale: float = 1.0):
    """A random Llama (untied head); `head_scale` sharpens its output distributions."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden,
        num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=4,
        max_position_embeddings=1024, tie_word_embeddings=False,
        bos_token_id=1, eos_token_id=2, pad_token_id=2,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
        with torch.no_grad():
            model.lm_head.weight.mul_(head_scale)
    return model.eval()


def small_teacher(seed: int = 123):
    """ModelBundle: a peaked 2-layer teacher over the small tokenizer."""
    from akl_core.lab.models import ModelBundle

    tok = small_tokenizer()
    model = small_model(len(tok), layers=2, hidden=32, seed=seed, head_scale=60.0)
    return ModelBundle(model, tok, "small-teacher", torch.device("cpu"))


def small_student(teacher, seed: int = 0):
    """ModelBundle: a fresh 1-layer student sharing the teacher's tokenizer."""
    from akl_core.lab.models import ModelBundle

    model = small_model(len(teacher.tokenizer), layers=1, hidden=32, seed=seed)
    return ModelBundle(model, teacher.tokenizer, "small-student", torch.device("cpu"))


def save_bundle(bundle, folder: Path) -> Path:
    """save_pretrained model + tokenizer into `folder` (loadable as a local model folder)."""
    folder = Path(folder)
    bundle.model.save_pretrained(folder, safe_serialization=True)
    bundle.tokenizer.save_pretrained(folder)
    return folder


def examples(n: int = 6, split: str = "train"):
    """The first n bundled examples of a split, with short gold responses attached."""
    from akl_core.lab.data import Example, load_bundled

    out = []
    for i, e in enumerate(load_bundled(split)[:n]):
        out.append(Example(e.id, e.instruction, e.context,
                           f"Here is a short answer number {i} about it.", e.category))
    return out


def write_jsonl(path: Path, exs) -> Path:
    import json

    with open(path, "w", encoding="utf-8") as f:
        for e in exs:
            f.write(json.dumps({"id": e.id, "instruction": e.instruction, "context": e.context,
                                "response": e.response}) + "\n")
    return path
