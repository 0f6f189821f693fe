"""End to end on the real models: SmolLM2-135M-Instruct and all-MiniLM-L6-v2."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

pytestmark = pytest.mark.e2e

PARIS = [{"role": "user", "content": "What is the capital of France?"}]


def chat(server: Any, **fields: Any) -> dict[str, Any]:
    return {"model": server.model, "messages": PARIS, "temperature": 0, **fields}


async def stream_text(client: httpx.AsyncClient, body: dict[str, Any]) -> tuple[str, dict]:
    text, usage = [], {}
    body = {**body, "stream": True, "stream_options": {"include_usage": True}}
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            for choice in chunk["choices"]:
                text.append(choice["delta"].get("content") or "")
            usage = chunk.get("usage") or usage
    return "".join(text), usage


@pytest.fixture
async def llm(llm_server) -> Any:
    async with httpx.AsyncClient(base_url=llm_server.base_url, timeout=300) as client:
        yield client


async def test_answers_paris(llm, llm_server) -> None:
    response = await llm.post("/v1/chat/completions", json=chat(llm_server, max_tokens=16))
    assert response.status_code == 200
    assert "Paris" in response.json()["choices"][0]["message"]["content"]


async def test_stream_equals_non_stream_at_temperature_zero(llm, llm_server) -> None:
    body = chat(llm_server, max_tokens=24)
    whole = (await llm.post("/v1/chat/completions", json=body)).json()
    text, usage = await stream_text(llm, body)
    assert text == whole["choices"][0]["message"]["content"]
    assert usage == whole["usage"]


async def test_usage_matches_the_tokenizer(llm, llm_server, models_dir: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(models_dir / "HuggingFaceTB--SmolLM2-135M-Instruct")
    prompt_ids = tokenizer.apply_chat_template(PARIS, add_generation_prompt=True, tokenize=True)
    prompt_ids = prompt_ids["input_ids"] if hasattr(prompt_ids, "keys") else prompt_ids
    body = chat(llm_server, max_tokens=7, ignore_eos=True)
    usage = (await llm.post("/v1/chat/completions", json=body)).json()["usage"]
    assert usage == {
        "prompt_tokens": len(prompt_ids),
        "completion_tokens": 7,
        "total_tokens": len(prompt_ids) + 7,
    }
    prompt = "The capital of France is"
    completion = await llm.post(
        "/v1/completions", json={"prompt": prompt, "max_tokens": 3, "temperature": 0}
    )
    assert completion.json()["usage"]["prompt_tokens"] == len(tokenizer(prompt)["input_ids"])


async def test_concurrent_requests_all_complete(llm, llm_server) -> None:
    questions = ["capital of Italy", "capital of Spain", "color of the sky", "2 + 2", "a fruit"]
    bodies = [
        {"model": llm_server.model, "messages": [{"role": "user", "content": f"Name the {q}."}]}
        | {"max_tokens": 8, "temperature": 0.7, "seed": i}
        for i, q in enumerate(questions * 2)
    ]
    responses = await asyncio.gather(*(llm.post("/v1/chat/completions", json=b) for b in bodies))
    assert [r.status_code for r in responses] == [200] * len(bodies)
    assert all(r.json()["usage"]["completion_tokens"] >= 1 for r in responses)


async def running_requests(client: httpx.AsyncClient) -> float:
    for line in (await client.get("/metrics")).text.splitlines():
        if line.startswith("vllm:num_requests_running{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError("vllm:num_requests_running missing")


async def test_disconnect_frees_the_slot_and_full_queue_is_503(model_server_factory) -> None:
    server = model_server_factory(MODEL_MAX_NUM_SEQS="1", MODEL_MAX_QUEUE="0")
    long = chat(server, max_tokens=1500, ignore_eos=True, stream=True)
    async with httpx.AsyncClient(base_url=server.base_url, timeout=120) as client:
        async with client.stream("POST", "/v1/chat/completions", json=long) as response:
            # Keep the iterator referenced: an abandoned one is closed by the event loop's
            # async-generator finaliser, which would end the stream early.
            lines = response.aiter_lines()
            async for line in lines:
                if line.startswith("data: "):
                    break  # generating: the only slot is taken
            assert await running_requests(client) == 1
            busy = await client.post("/v1/chat/completions", json=chat(server, max_tokens=2))
            assert busy.status_code == 503 and busy.headers["retry-after"]
            assert set(busy.json()["error"]) == {"message", "type", "param", "code"}
        # The client went away mid-stream: the server must cancel and free the slot.
        for _ in range(100):
            if await running_requests(client) == 0:
                break
            await asyncio.sleep(0.2)
        assert await running_requests(client) == 0
        after = await client.post("/v1/chat/completions", json=chat(server, max_tokens=2))
        assert after.status_code == 200


def cosine(a: list[float], b: list[float]) -> float:
    va, vb = np.asarray(a), np.asarray(b)
    return float(va @ vb / (np.linalg.norm(va) * np.linalg.norm(vb)))


async def test_embeddings_rank_paraphrases_above_unrelated(embedder_server) -> None:
    texts = [
        "How do I reset my password?",
        "What are the steps to change my login password?",
        "The recipe needs two cups of flour and an egg.",
    ]
    async with httpx.AsyncClient(base_url=embedder_server.base_url, timeout=60) as client:
        response = await client.post(
            "/v1/embeddings", json={"model": embedder_server.model, "input": texts}
        )
    assert response.status_code == 200
    body = response.json()
    vectors = [d["embedding"] for d in sorted(body["data"], key=lambda d: d["index"])]
    assert len(vectors[0]) == 384
    assert body["usage"]["prompt_tokens"] > 0
    assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2]) + 0.2


async def test_openai_sdk_talks_to_both_instances(llm_server, embedder_server) -> None:
    from openai import AsyncOpenAI

    llm = AsyncOpenAI(base_url=llm_server.base_url + "/v1", api_key="unused")
    reply = await llm.chat.completions.create(
        model=llm_server.model, messages=PARIS, max_tokens=12, temperature=0
    )
    assert "Paris" in (reply.choices[0].message.content or "")
    embedder = AsyncOpenAI(base_url=embedder_server.base_url + "/v1", api_key="unused")
    result = await embedder.embeddings.create(model=embedder_server.model, input="hello")
    assert len(result.data[0].embedding) == 384  # base64 on the wire, decoded by the SDK


async def test_embedding_dimensions_and_base64_as_openai_defines_them(embedder_server) -> None:
    import base64
    import struct

    url, model = embedder_server.base_url + "/v1/embeddings", embedder_server.model
    async with httpx.AsyncClient(timeout=60) as client:
        full = (await client.post(url, json={"model": model, "input": "hello"})).json()
        short = await client.post(
            url,
            json={"model": model, "input": "hello", "dimensions": 8, "encoding_format": "base64"},
        )
        too_many = await client.post(url, json={"model": model, "input": "hi", "dimensions": 999})
    assert short.status_code == 200, short.text
    raw = base64.b64decode(short.json()["data"][0]["embedding"])
    vector = struct.unpack(f"<{len(raw) // 4}f", raw)
    head = full["data"][0]["embedding"][:8]
    norm = sum(x * x for x in head) ** 0.5
    assert len(vector) == 8
    assert vector == pytest.approx([x / norm for x in head], abs=1e-5)  # cut, then unit length
    assert too_many.status_code == 400 and too_many.json()["error"]["param"] == "dimensions"
