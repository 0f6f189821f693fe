"""Which request fields the gateway forwards to an upstream (docs/gateway.md, Fields).

Each route forwards the fields of OpenAI's API for it and vLLM's documented sampling
and structured-output extras (the sets below, named by the route adapters); a field
that controls the serving engine itself, or a client's own chat template, is refused
with 400 naming it; any other field is dropped unless the operator lists it in
`GATEWAY_FORWARD_FIELDS`. `cache_salt` is set by the gateway, never by a client.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping
from typing import Any

from gateway.errors import GatewayError

# Engine controls and the template: a client could run its own Jinja on the model server,
# jump the queue, pick another tenant's prefix-cache salt or steer KV transfers.
REFUSED = frozenset(
    {
        "chat_template",
        "kv_transfer_params",
        "ec_transfer_params",
        "vllm_xargs",
        "priority",
        "request_id",
        "cache_salt",
    }
)

COMMON = frozenset({"model", "user"})
GENERATION = COMMON | frozenset(
    {
        # OpenAI
        "stream", "stream_options", "max_tokens", "temperature", "top_p", "n", "seed",
        "stop", "presence_penalty", "frequency_penalty", "logit_bias", "logprobs",
        "response_format",
        # vLLM sampling and structured outputs
        "top_k", "min_p", "repetition_penalty", "length_penalty", "min_tokens",
        "ignore_eos", "stop_token_ids", "include_stop_str_in_output", "bad_words",
        "allowed_token_ids", "skip_special_tokens", "spaces_between_special_tokens",
        "prompt_logprobs", "structured_outputs", "use_beam_search",
        "truncate_prompt_tokens", "add_special_tokens", "return_tokens_as_token_ids",
    }
)  # fmt: skip
CHAT = GENERATION | frozenset(
    {
        # OpenAI
        "messages", "max_completion_tokens", "top_logprobs", "tools", "tool_choice",
        "parallel_tool_calls", "functions", "function_call", "metadata", "store",
        "modalities", "audio", "prediction", "reasoning_effort", "service_tier",
        "verbosity", "web_search_options", "prompt_cache_key", "safety_identifier",
        # vLLM chat extras
        "echo", "chat_template_kwargs", "add_generation_prompt", "continue_final_message",
        "documents", "include_reasoning",
    }
)  # fmt: skip
COMPLETION = GENERATION | frozenset({"prompt", "best_of", "echo", "suffix"})
EMBEDDING = COMMON | frozenset(
    {"input", "dimensions", "encoding_format", "truncate_prompt_tokens", "add_special_tokens"}
)


def forwarded(
    payload: Mapping[str, Any], known: frozenset[str], extra: Collection[str]
) -> dict[str, Any]:
    """The payload with only the fields to forward; raises GatewayError (400) naming a
    refused field (unless the operator's `extra` lists it)."""
    for name in payload:
        if name in REFUSED and name not in extra:
            raise _refused(name)
    kwargs = payload.get("chat_template_kwargs")
    if isinstance(kwargs, dict) and "chat_template" in kwargs:
        raise _refused("chat_template_kwargs.chat_template")
    return {k: v for k, v in payload.items() if k in known or k in extra}


def _refused(name: str) -> GatewayError:
    return GatewayError(
        400,
        f"`{name}` is not accepted by this gateway: it controls the model server itself.",
        param=name,
        code="field_not_allowed",
    )


def cache_salt(key_id: str) -> str:
    """vLLM's prefix-cache salt for a tenant: requests of other keys never share cached
    prefixes with this key's, so time-to-first-token tells no key what another sent.
    From the key id (never the secret); clients cannot send their own."""
    return hashlib.sha256(f"gateway-cache-salt:{key_id}".encode()).hexdigest()[:32]
