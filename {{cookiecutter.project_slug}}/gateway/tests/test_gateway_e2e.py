"""End to end: the gateway in front of the real model services (SmolLM2 + MiniLM),
through the official `openai` SDK and LangChain."""

from __future__ import annotations

import uuid

import httpx
import openai
import pytest

from tests.support.gateway import GatewayProcess

pytestmark = pytest.mark.e2e

QUESTION = "What is the capital of France?"


def _models(gateway: GatewayProcess) -> tuple[str, str]:
    ids = [
        m["id"]
        for m in httpx.get(f"{gateway.base_url}/v1/models", headers=gateway.headers).json()["data"]
    ]
    llm = next(m for m in ids if "SmolLM2" in m or "MiniLM" not in m)
    embedder = next(m for m in ids if m != llm)
    return llm, embedder


def test_sdk_sync_chat_answers(gateway_server: GatewayProcess) -> None:
    llm, _ = _models(gateway_server)
    client = openai.OpenAI(
        base_url=f"{gateway_server.base_url}/v1", api_key=gateway_server.master_key
    )
    reply = client.chat.completions.create(
        model=llm,
        messages=[{"role": "user", "content": QUESTION}],
        temperature=0,
        max_tokens=16,
        extra_headers={"x-cache-bypass": "1"},
    )
    assert "Paris" in (reply.choices[0].message.content or "")
    assert reply.usage is not None and reply.usage.prompt_tokens > 0


async def test_sdk_async_stream_with_usage(gateway_server: GatewayProcess) -> None:
    llm, _ = _models(gateway_server)
    client = openai.AsyncOpenAI(
        base_url=f"{gateway_server.base_url}/v1", api_key=gateway_server.master_key
    )
    stream = await client.chat.completions.create(
        model=llm,
        messages=[{"role": "user", "content": QUESTION}],
        temperature=0,
        max_tokens=16,
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={"x-cache-bypass": "1"},
    )
    chunks = [chunk async for chunk in stream]
    await client.close()
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "Paris" in text
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 1
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_embeddings_through_the_gateway(gateway_server: GatewayProcess) -> None:
    _, embedder = _models(gateway_server)
    client = openai.OpenAI(
        base_url=f"{gateway_server.base_url}/v1", api_key=gateway_server.master_key
    )
    result = client.embeddings.create(model=embedder, input=["hello", "world"])
    assert [len(d.embedding) for d in result.data] == [384, 384]


def test_langchain_chat_openai(gateway_server: GatewayProcess) -> None:
    from langchain_openai import ChatOpenAI

    llm_name, _ = _models(gateway_server)
    llm = ChatOpenAI(
        model=llm_name,
        base_url=f"{gateway_server.base_url}/v1",
        api_key=gateway_server.master_key,
        temperature=0,
        max_tokens=16,
    )
    assert "Paris" in str(llm.invoke(QUESTION).content)
    streamed = "".join(str(chunk.content) for chunk in llm.stream(QUESTION))
    assert "Paris" in streamed


def test_streamed_replay_equals_the_original_stream(gateway_server: GatewayProcess) -> None:
    llm, _ = _models(gateway_server)
    client = openai.OpenAI(
        base_url=f"{gateway_server.base_url}/v1", api_key=gateway_server.master_key
    )
    prompt = f"Repeat the word {uuid.uuid4().hex[:6]} once."

    def run() -> tuple[str, str]:
        raw = client.chat.completions.with_raw_response.create(
            model=llm,
            messages=[{"role": "user", "content": prompt}],
            temperature=0,
            max_tokens=12,
            stream=True,
        )
        text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
        return raw.headers["x-cache"], text

    first, second = run(), run()
    assert (first[0], second[0]) == ("miss", "hit")
    assert second[1] == first[1] and first[1]


def test_semantic_cache_with_real_embeddings(gateway_server: GatewayProcess) -> None:
    llm, _ = _models(gateway_server)
    topic = uuid.uuid4().hex[:6]
    system = {"role": "system", "content": f"You answer questions about project {topic}."}

    def ask(question: str) -> httpx.Response:
        return httpx.post(
            f"{gateway_server.base_url}/v1/chat/completions",
            headers=gateway_server.headers,
            json={
                "model": llm,
                "messages": [system, {"role": "user", "content": question}],
                "temperature": 0,
                "max_tokens": 12,
            },
            timeout=120,
        )

    original = ask("What is the capital of France?")
    paraphrase = ask("What's the capital city of France?")
    different = ask("How do I bake sourdough bread at home?")
    near_but_different = ask("What is the capital of Germany?")
    assert original.headers["x-cache"] == "miss"
    assert paraphrase.headers["x-cache"] == "hit"
    assert paraphrase.headers["x-cache-kind"] == "semantic"
    assert paraphrase.json()["choices"] == original.json()["choices"]
    assert different.headers["x-cache"] == "miss"
    assert near_but_different.headers["x-cache"] == "miss"
