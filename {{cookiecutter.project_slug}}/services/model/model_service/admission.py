"""Admission: what a request must satisfy before it reaches the tokenizer or the engine.

Every check here answers 400 (or 413/503 where said) in OpenAI's error shape, naming the
field, and none of them lets a request reach code that could kill the generation loop,
stall the event loop or grow the process without bound:

- token ids must be in the model's vocabulary (an out-of-range id fails the forward
  pass, and with it every request in the batch), and a prompt must not be empty;
- the chat template is the operator's: a client `chat_template` is refused, and
  `chat_template_kwargs` keeps only the variables the model's template reads, with
  scalar values (vLLM's rule, plus the scalars);
- a prompt's characters are capped before tokenising (`MODEL_MAX_PROMPT_CHARS`), and
  rendering and tokenising run on a worker thread, so the event loop keeps answering;
- `max_tokens` must fit the context left (checked in `api.sampling_params`), and the
  whole request must fit a per-request memory budget (`MODEL_REQUEST_MEMORY_MIB`):
  the KV cache its `n` sequences (prompt and output each) hold at their longest;
- tool and assistant-with-`tool_calls` messages, and the tool definitions, count toward
  the prompt cap and render through the same path; `logit_bias` ids must be in the
  vocabulary;
- stop strings and seeds are bounded (a seed outside int64 made torch raise).
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import jinja2
from jinja2 import meta

from model_service import tools
from model_service.errors import bad_request
from model_service.generation import kv_bytes_per_token

if TYPE_CHECKING:
    from model_service.embedding import EmbeddingEngine
    from model_service.generation import GenerationEngine
    from model_service.protocol import ChatCompletionRequest, CompletionRequest, SamplingFields
    from model_service.sampling import SamplingParams
    from model_service.settings import ModelSettings

MAX_STOP_STRINGS = 4  # OpenAI's and vLLM's limit
MAX_STOP_CHARS = 1024
MAX_TEMPLATE_KWARG_CHARS = 1024
SEED_RANGE = (-(2**63), 2**63 - 1)  # int64, as vLLM (torch.manual_seed raised beyond)
CHARS_PER_TOKEN = 16  # no tokenizer packs more real text into one token on average
# Names the renderer itself sets, or that change how the prompt is tokenised.
RESERVED_TEMPLATE_NAMES = frozenset(
    {
        "messages", "conversation", "tools", "documents", "add_generation_prompt",
        "continue_final_message", "chat_template", "tokenize", "padding", "truncation",
        "max_length", "return_tensors", "return_dict", "return_assistant_tokens_mask",
        "tokenizer_kwargs", "bos_token", "eos_token", "pad_token", "unk_token",
        "raise_exception", "strftime_now",
    }
)  # fmt: skip


@dataclass(frozen=True)
class Limits:
    max_prompt_chars: int
    request_memory_bytes: int
    kv_bytes_per_token: int
    vocab_size: int


def limits_for(settings: ModelSettings, engine: GenerationEngine) -> Limits:
    chars = settings.max_prompt_chars or CHARS_PER_TOKEN * engine.max_model_len
    per_token = model_kv_bytes_per_token(engine.model)
    # By default the whole cache, as the engine sized it (never less than one context).
    budget = engine.options.kv_cache_tokens * per_token
    if settings.request_memory_mib:
        budget = int(settings.request_memory_mib * 2**20)
    return Limits(chars, budget, per_token, model_vocab_size(engine.model))


@functools.cache
def model_vocab_size(model: Any) -> int:
    """Rows of the input embedding: the ids the forward pass can take."""
    return int(model.get_input_embeddings().num_embeddings)


@functools.cache
def model_kv_bytes_per_token(model: Any) -> int:
    return kv_bytes_per_token(model)


# -- prompts ----------------------------------------------------------------------------


def check_prompt_chars(chars: int, limit: int, param: str) -> None:
    if chars > limit:
        raise bad_request(
            f"The prompt has {chars} characters; at most {limit} are accepted before "
            "tokenising (MODEL_MAX_PROMPT_CHARS). Please reduce the length of the input.",
            param,
        )


def check_token_ids(ids: Sequence[int], vocab_size: int, param: str) -> None:
    """vLLM's rule: every id in [0, vocab); an id outside makes the embedding lookup fail."""
    if not ids:
        raise bad_request("The prompt is empty; send at least one token.", param)
    low, high = min(ids), max(ids)
    if low < 0 or high >= vocab_size:
        bad = low if low < 0 else high
        raise bad_request(
            f"Token id {bad} is out of vocabulary (valid ids: 0 to {vocab_size - 1}).", param
        )


async def chat_prompt_ids(
    body: ChatCompletionRequest,
    engine: GenerationEngine,
    limits: Limits,
    template_tools: list[dict[str, Any]] | None = None,
) -> list[int]:
    """Render the operator's chat template (with the request's tools) and tokenise it,
    off the event loop. Tool results and assistant tool calls count like any content."""
    if body.chat_template is not None:
        raise bad_request(
            "chat_template is not accepted from clients: the model's own template is used.",
            "chat_template",
        )
    try:
        messages = tools.template_messages(body.messages)
    except ValueError as error:
        raise bad_request(str(error), "messages") from error
    check_prompt_chars(rendered_chars(messages), limits.max_prompt_chars, "messages")
    tools_chars = len(json.dumps(template_tools)) if template_tools else 0
    check_prompt_chars(tools_chars, limits.max_prompt_chars, "tools")
    template = tools.tool_aware_template(engine.tokenizer.chat_template)
    kwargs = template_kwargs(body.chat_template_kwargs, template)
    try:
        ids = await asyncio.to_thread(engine.encode_chat, messages, tools=template_tools, **kwargs)
    except (ValueError, TypeError, jinja2.TemplateError) as error:
        message = f"The chat template rejected the messages: {error}"
        raise bad_request(message, "messages") from error
    check_token_ids(ids, limits.vocab_size, "messages")
    return ids


def rendered_chars(messages: list[dict[str, Any]]) -> int:
    """Characters the template will render: text fields as they are, tool calls as JSON."""
    chars = 0
    for message in messages:
        for value in message.values():
            chars += len(value) if isinstance(value, str) else len(json.dumps(value))
    return chars


async def completion_prompt_ids(
    body: CompletionRequest, engine: GenerationEngine, limits: Limits
) -> list[int]:
    prompt: Any = body.prompt
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if isinstance(prompt, str):
        check_prompt_chars(len(prompt), limits.max_prompt_chars, "prompt")
        ids = await asyncio.to_thread(engine.encode_text, prompt)
    elif prompt and all(isinstance(p, int) for p in prompt):
        ids = [int(p) for p in prompt]
    else:
        raise bad_request("prompt must be a string or a list of token ids", "prompt")
    check_token_ids(ids, limits.vocab_size, "prompt")
    return ids


def template_kwargs(requested: dict[str, Any] | None, template: Any) -> dict[str, Any]:
    """The allowed subset of `chat_template_kwargs`: variables the template reads, with
    scalar values. Other keys are dropped, as vLLM drops them; `chat_template` is refused."""
    if not requested:
        return {}
    if "chat_template" in requested:
        raise bad_request(
            "chat_template is not accepted from clients: the model's own template is used.",
            "chat_template_kwargs.chat_template",
        )
    allowed = template_variables(template if isinstance(template, str) else "")
    kept = {k: v for k, v in requested.items() if k in allowed}
    for key, value in kept.items():
        scalar = value is None or isinstance(value, bool | int | float | str)
        if not scalar or (isinstance(value, str) and len(value) > MAX_TEMPLATE_KWARG_CHARS):
            raise bad_request(
                f"chat_template_kwargs.{key} must be a string (at most "
                f"{MAX_TEMPLATE_KWARG_CHARS} characters), a number, a boolean or null.",
                f"chat_template_kwargs.{key}",
            )
    return kept


@functools.cache
def template_variables(template: str) -> frozenset[str]:
    if not template:
        return frozenset()
    parsed = jinja2.Environment().parse(template)
    return frozenset(meta.find_undeclared_variables(parsed)) - RESERVED_TEMPLATE_NAMES


def check_embedding_input(value: Any, settings: ModelSettings, engine: EmbeddingEngine) -> None:
    """Bounded before tokenising: the number of inputs, each one's characters, and token
    ids in the vocabulary (decoding an id outside it fails)."""
    inputs = [value] if isinstance(value, str) or (value and isinstance(value[0], int)) else value
    if len(inputs) > settings.max_embedding_inputs:
        raise bad_request(
            f"At most {settings.max_embedding_inputs} inputs are accepted per request "
            f"(MODEL_MAX_EMBEDDING_INPUTS); this one has {len(inputs)}.",
            "input",
        )
    max_chars = settings.max_prompt_chars or CHARS_PER_TOKEN * engine.max_model_len
    for item in inputs:
        if isinstance(item, str):
            check_prompt_chars(len(item), max_chars, "input")
        elif len(item) > engine.max_model_len:
            raise bad_request(
                f"This model's maximum context length is {engine.max_model_len} tokens. "
                f"However, an input has {len(item)} tokens. Please reduce its length.",
                "input",
            )
        else:
            check_token_ids(item, len(engine.tokenizer), "input")


# -- sampling and the memory budget -----------------------------------------------------


def check_request(
    body: SamplingFields, params: SamplingParams, prompt_tokens: int, limits: Limits
) -> None:
    """Checks on the sampling fields and the per-request memory budget, before admission."""
    check_stop(params.stop)
    check_logit_bias(params.logit_bias, limits.vocab_size)
    if body.seed is not None and not SEED_RANGE[0] <= body.seed <= SEED_RANGE[1]:
        raise bad_request("seed must be a 64-bit signed integer.", "seed")
    check_memory_budget(max(body.n, body.best_of or 1), prompt_tokens, params.max_tokens, limits)


def check_memory_budget(
    sequences: int, prompt_tokens: int, max_tokens: int, limits: Limits
) -> None:
    """Each of the `n` choices is its own sequence in the batch, prompt included (the
    engine shares no blocks between sequences), so the request holds n x (prompt + output)."""
    needed = sequences * (prompt_tokens + max_tokens) * limits.kv_bytes_per_token
    if needed > limits.request_memory_bytes:
        raise bad_request(
            f"This request would hold {needed / 2**20:.1f} MiB of KV cache ({sequences} x "
            f"({prompt_tokens} prompt + {max_tokens} output tokens)); the per-request "
            f"budget is {limits.request_memory_bytes / 2**20:.1f} MiB "
            "(MODEL_REQUEST_MEMORY_MIB). Lower max_tokens or n.",
            "max_tokens",
        )


def check_stop(stop: Sequence[str]) -> None:
    if len(stop) > MAX_STOP_STRINGS:
        raise bad_request(f"At most {MAX_STOP_STRINGS} stop strings are accepted.", "stop")
    if any(len(s) > MAX_STOP_CHARS for s in stop):
        raise bad_request(f"A stop string may have at most {MAX_STOP_CHARS} characters.", "stop")


def check_logit_bias(bias: Sequence[tuple[int, float]], vocab_size: int) -> None:
    for token_id, _ in bias:
        if not 0 <= token_id < vocab_size:
            raise bad_request(
                f"logit_bias names token id {token_id}, which is out of vocabulary "
                f"(valid ids: 0 to {vocab_size - 1}).",
                "logit_bias",
            )
