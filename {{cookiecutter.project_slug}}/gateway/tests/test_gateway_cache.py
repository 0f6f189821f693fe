"""Exact and semantic cache behaviour through a real gateway process."""

from __future__ import annotations

import uuid

import httpx
import openai

from tests.support.gateway import MOCK_LLM, GatewayProcess


def chat(gateway: GatewayProcess, content: str, headers: dict[str, str] | None = None, **extra):
    body = {"model": MOCK_LLM, "messages": [{"role": "user", "content": content}], **extra}
    return httpx.post(
        f"{gateway.base_url}/v1/chat/completions",
        headers={**gateway.headers, **(headers or {})},
        json=body,
    )


def test_exact_cache_miss_then_hit(mock_gateway: GatewayProcess) -> None:
    prompt = f"exact {uuid.uuid4()}"
    first = chat(mock_gateway, prompt, temperature=0)
    second = chat(mock_gateway, prompt, temperature=0)
    assert first.headers["x-cache"] == "miss"
    assert second.headers["x-cache"] == "hit"
    assert second.headers["x-cache-kind"] == "exact"
    assert second.json() == first.json()


def test_cache_key_covers_generation_parameters(mock_gateway: GatewayProcess) -> None:
    prompt = f"params {uuid.uuid4()}"
    chat(mock_gateway, prompt, temperature=0, max_tokens=3)
    other = chat(mock_gateway, prompt, temperature=0, max_tokens=4)
    assert other.headers["x-cache"] == "miss"
    # `user` is not part of the key.
    same = chat(mock_gateway, prompt, temperature=0, max_tokens=3, user="someone")
    assert same.headers["x-cache"] == "hit"


def test_bypass_headers_and_non_deterministic_requests(mock_gateway: GatewayProcess) -> None:
    prompt = f"bypass {uuid.uuid4()}"
    chat(mock_gateway, prompt, temperature=0)
    no_cache = chat(mock_gateway, prompt, {"cache-control": "no-cache"}, temperature=0)
    explicit = chat(mock_gateway, prompt, {"x-cache-bypass": "1"}, temperature=0)
    sampled = chat(mock_gateway, prompt, temperature=0.7)
    assert no_cache.headers["x-cache"] == "bypass"
    assert explicit.headers["x-cache"] == "bypass"
    assert sampled.headers["x-cache"] == "bypass"
    seeded = chat(mock_gateway, prompt, temperature=0.7, seed=7)
    seeded_again = chat(mock_gateway, prompt, temperature=0.7, seed=7)
    assert (seeded.headers["x-cache"], seeded_again.headers["x-cache"]) == ("miss", "hit")


def _stream_text(gateway: GatewayProcess, prompt: str) -> tuple[str, str, list[str]]:
    client = openai.OpenAI(base_url=f"{gateway.base_url}/v1", api_key=gateway.master_key)
    raw = client.chat.completions.with_raw_response.create(
        model=MOCK_LLM,
        messages=[{"role": "user", "content": prompt}],
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(raw.parse())
    objects = {c.object for c in chunks}
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return raw.headers["x-cache"], text, sorted(objects)


def test_streamed_response_is_cached_and_replayed_as_sse(mock_gateway: GatewayProcess) -> None:
    prompt = f"stream {uuid.uuid4()}"
    first_state, first_text, first_objects = _stream_text(mock_gateway, prompt)
    second_state, second_text, second_objects = _stream_text(mock_gateway, prompt)
    assert (first_state, second_state) == ("miss", "hit")
    assert second_text == first_text and first_text
    assert second_objects == first_objects == ["chat.completion.chunk"]
    # A non-streamed request for the same thing hits the entry the stream wrote.
    plain = chat(mock_gateway, prompt, temperature=0)
    assert plain.headers["x-cache"] == "hit"
    assert plain.json()["choices"][0]["message"]["content"] == first_text


def test_semantic_cache_hits_paraphrase_and_misses_other_question(
    mock_gateway: GatewayProcess,
) -> None:
    # The mock embedder is a bag of words: a reordered, re-cased question is "close".
    topic = uuid.uuid4().hex[:8]
    original = chat(mock_gateway, f"What is the capital city of {topic}?", temperature=0)
    paraphrase = chat(mock_gateway, f"{topic}: the capital city is what", temperature=0)
    different = chat(mock_gateway, f"How many moons orbit {topic}?", temperature=0)
    assert original.headers["x-cache"] == "miss"
    assert paraphrase.headers["x-cache"] == "hit"
    assert paraphrase.headers["x-cache-kind"] == "semantic"
    assert paraphrase.json() == original.json()
    assert different.headers["x-cache"] == "miss"


def test_semantic_cache_is_scoped_by_system_prompt_and_params(
    mock_gateway: GatewayProcess,
) -> None:
    topic = uuid.uuid4().hex[:8]
    question = f"Name the largest river of {topic}"
    chat(mock_gateway, question, temperature=0)

    def ask(**extra):
        body = {"model": MOCK_LLM, "temperature": 0, **extra}
        return httpx.post(
            f"{mock_gateway.base_url}/v1/chat/completions", headers=mock_gateway.headers, json=body
        )

    with_system = ask(
        messages=[
            {"role": "system", "content": "Answer like a pirate."},
            {"role": "user", "content": f"The largest river of {topic}, name"},
        ]
    )
    other_params = ask(
        messages=[{"role": "user", "content": f"The largest river of {topic}, name"}], max_tokens=2
    )
    same_scope = ask(messages=[{"role": "user", "content": f"The largest river of {topic}, name"}])
    assert with_system.headers["x-cache"] == "miss"
    assert other_params.headers["x-cache"] == "miss"
    assert same_scope.headers["x-cache"] == "hit"


def test_multi_turn_conversations_skip_the_semantic_cache(mock_gateway: GatewayProcess) -> None:
    topic = uuid.uuid4().hex[:8]
    chat(mock_gateway, f"tell me about {topic}", temperature=0)
    messages = [
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "hi"},
        {"role": "user", "content": f"about {topic} tell me"},
    ]
    response = httpx.post(
        f"{mock_gateway.base_url}/v1/chat/completions",
        headers=mock_gateway.headers,
        json={"model": MOCK_LLM, "messages": messages, "temperature": 0},
    )
    assert response.headers["x-cache"] == "miss"
