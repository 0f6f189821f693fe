"""Log-probabilities of generated tokens, in OpenAI's two shapes.

Values are the model's raw log-probabilities (log-softmax of the logits before
penalties, biases, grammar masks and temperature), as vLLM reports them by default
(`logprobs_mode=raw_logprobs`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class TokenLogprob:
    token_id: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()


def measure(raw_logits: torch.Tensor, token: int, top_k: int) -> TokenLogprob:
    logprobs = torch.log_softmax(raw_logits.float(), dim=-1)
    top: tuple[tuple[int, float], ...] = ()
    if top_k > 0:
        values, ids = torch.topk(logprobs, min(top_k, logprobs.size(-1)))
        top = tuple(zip(ids.tolist(), values.tolist(), strict=True))
    return TokenLogprob(token, float(logprobs[token]), top)


def safe(value: float) -> float:
    # JSON has no -inf; vLLM writes -9999.0 for a token the model gives no mass.
    return max(value, -9999.0)


def chat_content(entries: list[TokenLogprob], decode: Callable[[int], str]) -> list[dict[str, Any]]:
    """`choices[].logprobs.content` of a chat completion."""

    def item(token_id: int, logprob: float) -> dict[str, Any]:
        text = decode(token_id)
        return {"token": text, "logprob": safe(logprob), "bytes": list(text.encode())}

    return [
        {**item(e.token_id, e.logprob), "top_logprobs": [item(t, lp) for t, lp in e.top]}
        for e in entries
    ]


def completion_logprobs(
    entries: list[TokenLogprob], decode: Callable[[int], str], text_offset: int = 0
) -> dict[str, Any]:
    """`choices[].logprobs` of a text completion (the legacy shape)."""
    tokens, offsets, offset = [], [], text_offset
    for entry in entries:
        text = decode(entry.token_id)
        tokens.append(text)
        offsets.append(offset)
        offset += len(text)
    return {
        "tokens": tokens,
        "token_logprobs": [safe(e.logprob) for e in entries],
        "top_logprobs": [{decode(t): safe(lp) for t, lp in e.top} for e in entries],
        "text_offset": offsets,
    }
