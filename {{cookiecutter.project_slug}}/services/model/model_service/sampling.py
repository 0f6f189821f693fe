"""Per-request sampling inside transformers' continuous batching.

transformers' continuous batching samples with one global setting (`do_sample`) and one
global RNG. An OpenAI server needs greedy and sampled requests in the same batch, and a
`seed` that makes a request reproducible whatever else is in the batch. This logits
processor does the sampling itself, one row per request, with the request's own
temperature, top-p, top-k and `torch.Generator`; it leaves a single finite logit per
sampled row, so the manager's greedy argmax picks exactly the sampled token.
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers.generation.continuous_batching.cb_logits_processors import (
    ContinuousBatchingLogitsProcessor,
)

SLOT_KWARG = "sampling_slot"
GREEDY_BELOW_TEMPERATURE = 1e-5


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    seed: int | None = None
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False

    @property
    def greedy(self) -> bool:
        # vLLM's threshold: dividing logits by a smaller temperature overflows to inf,
        # and sampling from inf/NaN probabilities raises inside the generation loop.
        return self.temperature < GREEDY_BELOW_TEMPERATURE


@dataclass
class _Slot:
    params: SamplingParams
    generator: torch.Generator = field(default_factory=torch.Generator)


class PerRequestSampler(ContinuousBatchingLogitsProcessor):
    supported_kwargs: dict[str, type] = {SLOT_KWARG: int}
    ignored_kwargs: tuple[str, ...] = ()

    def __init__(self) -> None:
        self._slots: dict[int, _Slot] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def register(self, params: SamplingParams) -> int:
        """Reserve a slot for a request; pass the id as `sampling_slot` to `add_request`."""
        slot = _Slot(params)
        if params.seed is not None:
            slot.generator.manual_seed(params.seed)
        else:
            slot.generator.seed()
        with self._lock:
            slot_id = next(self._ids) % (2**31 - 1)
            self._slots[slot_id] = slot
        return slot_id

    def release(self, slot_id: int) -> None:
        with self._lock:
            self._slots.pop(slot_id, None)

    def fill_defaults(self, int32_tensor: torch.Tensor) -> None:
        int32_tensor.fill_(0)  # slot 0 is never registered: greedy

    def prepare_tensor_args(self, requests_with_new_token: list[Any]) -> torch.Tensor:
        slots = [r.state.logit_processor_kwargs.get(SLOT_KWARG, 0) for r in requests_with_new_token]
        return torch.tensor(slots, dtype=torch.int32, device="cpu")

    def __call__(self, scores: torch.FloatTensor, tensor_arg: torch.Tensor) -> torch.FloatTensor:
        slot_ids = tensor_arg[: scores.size(0)].tolist()
        with self._lock:
            slots = [self._slots.get(slot_id) for slot_id in slot_ids]
        for row, slot in enumerate(slots):
            if slot is None or slot.params.greedy:
                continue
            token = sample_token(scores[row], slot.params, slot.generator)
            scores[row].fill_(float("-inf"))
            scores[row, token] = 0.0
        return scores


def sample_token(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator) -> int:
    """One token from `logits` (vocab,) after temperature, top-k and top-p."""
    logits = logits.float() / params.temperature
    if 0 < params.top_k < logits.size(-1):
        kth = torch.topk(logits, params.top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if params.top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        cumulative = torch.cumsum(sorted_probs, dim=-1)
        # Keep the smallest prefix whose mass reaches top_p (always at least one token).
        drop = cumulative - sorted_probs >= params.top_p
        # A top_p below float32's smallest value (5e-324 was sent) compares as 0.0 and
        # would drop every token; the most likely one always stays.
        drop[..., 0] = False
        sorted_probs = sorted_probs.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
    return int(torch.multinomial(probs, 1, generator=generator).item())
