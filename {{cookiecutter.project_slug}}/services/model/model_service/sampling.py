"""Per-request sampling inside transformers' continuous batching.

transformers' continuous batching samples with one global setting (`do_sample`) and one
global RNG. An OpenAI server needs greedy and sampled requests in the same batch, and a
`seed` that makes a request reproducible whatever else is in the batch. This logits
processor does the choosing itself, one row per request, with the request's own logit
bias, penalties, grammar mask (`grammar.py`), temperature, top-p, top-k and
`torch.Generator`, and records the chosen token's log-probability when asked; it leaves
a single finite logit per row it chose for, so the manager's greedy argmax picks exactly
that token. Plain greedy rows are left to the manager's argmax untouched.
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

from model_service import logprobs
from model_service.grammar import allowed_tokens

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
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    logit_bias: tuple[tuple[int, float], ...] = ()
    logprobs: int | None = None  # None: none recorded; k: the chosen token and top k
    # A compiled llguidance matcher (grammar.GrammarCompiler.compile); each request
    # gets its own copy, so one compiled grammar serves all `n` choices.
    grammar: Any = field(default=None, compare=False)

    @property
    def greedy(self) -> bool:
        # vLLM's threshold: dividing logits by a smaller temperature overflows to inf,
        # and sampling from inf/NaN probabilities raises inside the generation loop.
        return self.temperature < GREEDY_BELOW_TEMPERATURE

    @property
    def penalized(self) -> bool:
        return bool(self.presence_penalty or self.frequency_penalty) or (
            self.repetition_penalty != 1.0
        )

    @property
    def chosen_here(self) -> bool:
        """Whether the sampler picks this request's tokens (else the manager's argmax)."""
        return (
            not self.greedy
            or self.penalized
            or bool(self.logit_bias)
            or (self.logprobs is not None or self.grammar is not None)
        )


@dataclass
class _Slot:
    params: SamplingParams
    prompt_ids: list[int] = field(default_factory=list)
    generator: torch.Generator = field(default_factory=torch.Generator)
    matcher: Any = None
    output_ids: list[int] = field(default_factory=list)
    logprobs: list[logprobs.TokenLogprob] = field(default_factory=list)


class PerRequestSampler(ContinuousBatchingLogitsProcessor):
    supported_kwargs: dict[str, type] = {SLOT_KWARG: int}
    ignored_kwargs: tuple[str, ...] = ()

    def __init__(self) -> None:
        self._slots: dict[int, _Slot] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def register(self, params: SamplingParams, prompt_ids: list[int] | None = None) -> int:
        """Reserve a slot for a request; pass the id as `sampling_slot` to `add_request`."""
        slot = _Slot(params, list(prompt_ids or []) if params.repetition_penalty != 1.0 else [])
        if params.grammar is not None:
            slot.matcher = params.grammar.deep_copy()
        if params.seed is not None:
            slot.generator.manual_seed(params.seed)
        else:
            slot.generator.seed()
        with self._lock:
            slot_id = next(self._ids) % (2**31 - 1)
            self._slots[slot_id] = slot
        return slot_id

    def token_logprobs(self, slot_id: int) -> list[logprobs.TokenLogprob]:
        """The recorded log-probabilities, one per generated token so far (the list
        grows before the manager hands the token on, so it is never behind)."""
        with self._lock:
            slot = self._slots.get(slot_id)
        return slot.logprobs if slot else []

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
            if slot is None or not slot.params.chosen_here:
                continue
            token = choose_token(scores[row], slot)
            scores[row].fill_(float("-inf"))
            scores[row, token] = 0.0
        return scores


def choose_token(raw: torch.Tensor, slot: _Slot) -> int:
    params = slot.params
    logits = raw.float().clone()
    for token_id, bias in params.logit_bias:
        if 0 <= token_id < logits.size(-1):
            logits[token_id] += bias
    if params.penalized:
        apply_penalties(logits, slot)
    if slot.matcher is not None:
        allowed = allowed_tokens(slot.matcher, logits.size(-1))
        if bool(allowed.any()):  # a matcher in an error state allows nothing: let it end
            logits.masked_fill_(~allowed, float("-inf"))
    if params.greedy:
        token = int(torch.argmax(logits).item())
    else:
        token = sample_token(logits, params, slot.generator)
    if params.logprobs is not None:
        slot.logprobs.append(logprobs.measure(raw, token, params.logprobs))
    if slot.matcher is not None:
        slot.matcher.consume_token(token)
    slot.output_ids.append(token)
    return token


def apply_penalties(logits: torch.Tensor, slot: _Slot) -> None:
    """vLLM's semantics: repetition over prompt and output (divide positive logits,
    multiply negative ones); frequency and presence over the output only."""
    params = slot.params
    if params.repetition_penalty != 1.0:
        seen = torch.tensor(sorted(set(slot.prompt_ids) | set(slot.output_ids)), dtype=torch.long)
        if seen.numel():
            values = logits[seen]
            logits[seen] = torch.where(
                values > 0, values / params.repetition_penalty, values * params.repetition_penalty
            )
    if slot.output_ids and (params.frequency_penalty or params.presence_penalty):
        counts = torch.bincount(torch.tensor(slot.output_ids), minlength=logits.size(-1))
        counts = counts[: logits.size(-1)].float()
        logits -= params.frequency_penalty * counts + params.presence_penalty * (counts > 0)


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
