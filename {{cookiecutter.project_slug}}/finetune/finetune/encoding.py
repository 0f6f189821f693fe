"""Conversations to token ids with labels on the assistant answer only.

The prompt is rendered with the base model's own chat template and
`add_generation_prompt=True`; the full conversation is rendered the same way. Every
token of the prompt gets the label -100 (no loss), so the adapter learns the answer and
its end-of-turn token, never to repeat the question. Templates for which the prompt is
not a prefix of the full conversation are refused rather than trained on wrongly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from finetune.dataset import Conversation, Message

IGNORE_INDEX = -100


class EncodingError(ValueError):
    pass


@dataclass(frozen=True)
class Example:
    input_ids: list[int]
    labels: list[int]


def _token_ids(tokenizer: Any, messages: list[Message], add_generation_prompt: bool) -> list[int]:
    encoded = tokenizer.apply_chat_template(
        messages, add_generation_prompt=add_generation_prompt, tokenize=True, return_dict=True
    )
    return list(encoded["input_ids"])


def encode(tokenizer: Any, conversation: Conversation, max_length: int) -> Example:
    prompt = _token_ids(tokenizer, conversation.prompt, add_generation_prompt=True)
    full = _token_ids(tokenizer, conversation.messages, add_generation_prompt=False)
    if full[: len(prompt)] != prompt or len(full) == len(prompt):
        raise EncodingError(
            "the chat template does not render the prompt as a prefix of the conversation; "
            "cannot tell the answer's tokens apart"
        )
    if len(full) > max_length:
        raise EncodingError(
            f"a conversation has {len(full)} tokens, more than --max-length {max_length}"
        )
    labels = [IGNORE_INDEX] * len(prompt) + full[len(prompt) :]
    return Example(input_ids=full, labels=labels)


def collate(examples: list[Example], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch; padding is masked out of attention and loss."""
    width = max(len(example.input_ids) for example in examples)
    ids, labels, mask = [], [], []
    for example in examples:
        padding = width - len(example.input_ids)
        ids.append(example.input_ids + [pad_token_id] * padding)
        labels.append(example.labels + [IGNORE_INDEX] * padding)
        mask.append([1] * len(example.input_ids) + [0] * padding)
    return {
        "input_ids": torch.tensor(ids),
        "labels": torch.tensor(labels),
        "attention_mask": torch.tensor(mask),
    }
