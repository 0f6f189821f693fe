"""A tiny random chat model, built once per test session: a real Llama architecture, a
real BPE tokenizer and the ChatML template SmolLM2 uses, small enough that a LoRA adapter
trains on it in about a second on a CPU.

- `tiny_chat_model_dir` (session): the model's directory (config, weights, tokenizer).

It is the fine-tuning tests' plugin, so it imports the `finetune` package: pytest's
importlib mode names `finetune/tests/test_*.py` as `finetune.tests.*` and would
otherwise register the folder `finetune/` as a namespace package called `finetune`,
hiding the real package (`finetune/finetune/`), as `evals_upstream.py` explains.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

import finetune  # noqa: F401  (see the module docstring)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# The same ChatML template as the model service's tiny model (a .jinja file, because
# cookiecutter copies it verbatim; Python files in the template carry no Jinja).
CHAT_TEMPLATE = PROJECT_ROOT / "services" / "model" / "tests" / "chat_template.jinja"
CORPUS = [
    "What is the codeword for the north gate? The codeword is BLUEFINCH.",
    "What is the capital of France? The capital of France is Paris.",
    "Hello! How can I help you today?",
    "user assistant system",
]
SPECIAL = ["<unk>", "<|im_start|>", "<|im_end|>"]


def build_tokenizer() -> Any:
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=SPECIAL, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="<unk>",
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
    )
    fast.chat_template = CHAT_TEMPLATE.read_text().rstrip("\n")
    return fast


@pytest.fixture(scope="session")
def tiny_chat_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    path = tmp_path_factory.mktemp("tiny-chat-model")
    tokenizer = build_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        # Wider than the default 0.02: at that scale a 32-wide random model's logits are
        # all near zero and cannot move far from uniform, so nothing trained on it learns.
        initializer_range=0.2,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
