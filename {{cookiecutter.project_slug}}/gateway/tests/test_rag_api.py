"""`POST /v1/rag/chat` through a real gateway process (its own key auth, limits and
router) in front of the scripted upstream, with a real Redis with vector search.

The scripted upstream's embeddings are a hashed bag of words, so retrieval here is
lexical but real; its answers are fixed words, so these tests check the request path
(what reached the model, which sources came back), not answer quality. The real-model
checks are in test_rag_e2e.py.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from redis.asyncio import Redis

import gateway.rag.api
import gateway.rag.retrieval
import gateway.rag.service
from gateway.app import create_app
from gateway.rag.embeddings import OpenAICompatibleEmbeddings
from gateway.rag.ingest import Ingestor
from gateway.rag.prompts import NO_ANSWER
from gateway.rag.store import VectorStore
from gateway.settings import Settings, UpstreamConfig
from tests.support.gateway import (
    MOCK_EMBEDDER,
    MOCK_LLM,
    GatewayProcess,
    MockUpstream,
    gateway_launcher,
    upstreams_env,
)
from tests.support.redis import RedisServer

SAMPLE_DOCS = Path(__file__).resolve().parents[1] / "gateway" / "rag" / "sample_docs"
SESSION_TTL = 600


async def ingest_samples(redis_url: str, embeddings_base: str, model: str, collection: str) -> None:
    redis = Redis.from_url(redis_url)
    try:
        async with httpx.AsyncClient(base_url=f"{embeddings_base}/v1/") as client:
            ingestor = Ingestor(
                store=VectorStore(redis),
                embeddings=OpenAICompatibleEmbeddings(client, model),
                chunk_size=800,
                chunk_overlap=120,
                max_file_bytes=1_000_000,
            )
            await ingestor.ingest(SAMPLE_DOCS, collection)
    finally:
        await redis.aclose()


@pytest.fixture(scope="module")
def rag_upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MockUpstream]:
    server = MockUpstream("rag-upstream", tmp_path_factory.mktemp("rag-upstream")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def rag_gateway(
    tmp_path_factory: pytest.TempPathFactory,
    rag_upstream: MockUpstream,
    redis_search_server: RedisServer,
) -> Iterator[GatewayProcess]:
    make, started = gateway_launcher(tmp_path_factory.mktemp("rag-gateway"))
    gateway = make(
        redis_search_server.url,
        GATEWAY_UPSTREAMS=upstreams_env(("mock", rag_upstream.base_url, [MOCK_LLM, MOCK_EMBEDDER])),
        GATEWAY_EMBEDDING_MODEL=MOCK_EMBEDDER,
        GATEWAY_RAG_LLM_MODEL=MOCK_LLM,
        GATEWAY_RAG_SESSION_TTL_SECONDS=str(SESSION_TTL),
        # Every call must reach the upstream, so `/_last` shows what RAG sent.
        GATEWAY_CACHE_ENABLED="false",
    )
    yield gateway
    for process in started:
        process.stop()


@pytest.fixture(scope="module")
def collection(rag_upstream: MockUpstream, redis_search_server: RedisServer) -> str:
    name = f"ops-{uuid.uuid4().hex[:8]}"
    asyncio.run(ingest_samples(redis_search_server.url, rag_upstream.base_url, MOCK_EMBEDDER, name))
    return name


def ask(gateway: GatewayProcess, body: dict[str, Any], key: str | None = None) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"} if key else gateway.headers
    return httpx.post(f"{gateway.base_url}/v1/rag/chat", json=body, headers=headers, timeout=60)


def question(text: str, collection: str, **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}], "collection": collection, **extra}


def chat_messages(request_body: dict[str, Any]) -> list[dict[str, Any]]:
    assert "messages" in request_body, f"last upstream request was not a chat: {request_body}"
    messages: list[dict[str, Any]] = request_body["messages"]
    return messages


def test_answer_comes_with_sources_from_the_right_file(
    rag_gateway: GatewayProcess, rag_upstream: MockUpstream, collection: str
) -> None:
    response = ask(
        rag_gateway, question("Which team maintains the caching layer and its cache?", collection)
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["sources"][0]["path"] == "caching.html"
    assert body["sources"][0]["score"] > 0.5, body["sources"]
    assert body["sources"][0]["title"] == "Response caching"
    assert {"path", "title", "chunk", "score", "text"} <= set(body["sources"][0])
    assert body["grounded"] is True
    assert body["answer"] and body["choices"][0]["message"]["content"] == body["answer"]
    # What the model saw: the grounding instructions and the retrieved chunks.
    system, user = chat_messages(rag_upstream.last_request())
    assert "using only the context" in system["content"]
    assert "(caching.html)" in system["content"] and "Lyrebird" in system["content"]
    assert user["content"] == "Which team maintains the caching layer and its cache?"
    assert rag_upstream.last_request()["model"] == MOCK_LLM


def test_unsupported_question_gets_dont_know_without_a_model_call(
    rag_gateway: GatewayProcess, rag_upstream: MockUpstream, collection: str
) -> None:
    # The scripted embeddings hash words into 64 buckets, so unrelated text still
    # scores ~0.2 through collisions; real MiniLM scores are checked in test_rag_e2e.py.
    response = ask(
        rag_gateway,
        question("Explain quantum chromodynamics gluons", collection, score_threshold=0.5),
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["answer"] == NO_ANSWER
    assert body["sources"] == [] and body["grounded"] is False
    # The last upstream call was the question's embedding: no generation happened.
    assert rag_upstream.last_request()["input"] == ["Explain quantum chromodynamics gluons"]


def test_score_threshold_and_top_k_are_honoured(
    rag_gateway: GatewayProcess, collection: str
) -> None:
    text = "Which team maintains the caching layer?"
    body = ask(rag_gateway, question(text, collection, top_k=2, score_threshold=-1.0)).json()
    assert len(body["sources"]) == 2
    strict = ask(rag_gateway, question(text, collection, score_threshold=0.99)).json()
    assert strict["sources"] == [] and strict["answer"] == NO_ANSWER
    only = ask(rag_gateway, question(text, collection, sources=["api-keys.md"])).json()
    assert {s["path"] for s in only["sources"]} == {"api-keys.md"}


def test_session_follow_up_is_rewritten_with_history(
    rag_gateway: GatewayProcess,
    rag_upstream: MockUpstream,
    collection: str,
    redis_search_server: RedisServer,
) -> None:
    session = f"s-{uuid.uuid4().hex}"
    first = ask(
        rag_gateway, question("How does the semantic cache work?", collection, session_id=session)
    )
    assert first.status_code == 200, first.text
    requests_before = rag_upstream.stats()["requests"]

    follow_up = ask(rag_gateway, question("and who maintains it?", collection, session_id=session))

    assert follow_up.status_code == 200, follow_up.text
    body = follow_up.json()
    # condense (chat) + embedding + answer (chat): three upstream calls for a follow-up
    assert rag_upstream.stats()["requests"] - requests_before == 3
    assert body["standalone_question"] != "and who maintains it?"
    # The answer prompt asks the rewritten question, not the bare follow-up.
    _, user = chat_messages(rag_upstream.last_request())
    assert user["content"] == body["standalone_question"]
    # The history is in Redis with the TTL setting, both turns of both questions.
    client = redis_search_server.client()
    keys = [k for k in client.scan_iter(match="rag:session:*") if client.llen(k) == 4]
    assert len(keys) >= 1
    assert any(0 < client.ttl(k) <= SESSION_TTL for k in keys)
    stored = [json.loads(m)["data"]["content"] for m in client.lrange(keys[-1], 0, -1)]
    assert stored[0] == "How does the semantic cache work?"
    assert stored[2] == "and who maintains it?"


def test_sessions_are_private_to_their_api_key(
    rag_gateway: GatewayProcess, collection: str
) -> None:
    session = f"s-{uuid.uuid4().hex}"
    ask(rag_gateway, question("How does the semantic cache work?", collection, session_id=session))
    other_key = rag_gateway.create_key(
        f"rag-other-{secrets.token_hex(3)}", collections=[collection]
    )
    # Same session id from another key: no history, so nothing to rewrite.
    body = ask(
        rag_gateway, question("and who maintains it?", collection, session_id=session), other_key
    ).json()
    assert body["standalone_question"] == "and who maintains it?"


def test_streaming_sends_sources_first_then_chunks(
    rag_gateway: GatewayProcess, collection: str
) -> None:
    events: list[str] = []
    with httpx.stream(
        "POST",
        f"{rag_gateway.base_url}/v1/rag/chat",
        json=question("Which team maintains the caching layer?", collection, stream=True),
        headers=rag_gateway.headers,
        timeout=60,
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-accel-buffering"] == "no"
        for line in response.iter_lines():
            if line.startswith("data: "):
                events.append(line[len("data: ") :])
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["sources"][0]["path"] == "caching.html"
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert len(text.split()) >= 1
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (question("What is it?", "no-such-collection"), 404, "collection_not_found"),
        (question("   ", "COLLECTION"), 400, "empty_question"),
        (question("x", "bad name!"), 400, "invalid_value"),
        (question("x", "COLLECTION", top_k=500), 400, "invalid_value"),
        (
            {"messages": [{"role": "assistant", "content": "hi"}], "collection": "COLLECTION"},
            400,
            "invalid_value",
        ),
        ({"messages": [], "collection": "COLLECTION"}, 400, "invalid_request"),
        ({"messages": [{"role": "user", "content": "hi"}]}, 400, "invalid_request"),
    ],
)
def test_bad_requests_get_openai_shaped_errors(
    rag_gateway: GatewayProcess, collection: str, body: dict[str, Any], status: int, code: str
) -> None:
    payload = json.loads(json.dumps(body).replace("COLLECTION", collection))
    response = ask(rag_gateway, payload)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert set(error) == {"message", "type", "param", "code"}


def test_requires_an_api_key(rag_gateway: GatewayProcess, collection: str) -> None:
    response = httpx.post(
        f"{rag_gateway.base_url}/v1/rag/chat", json=question("hi", collection), timeout=30
    )
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"


def test_model_calls_count_against_the_callers_limits(
    rag_gateway: GatewayProcess, collection: str
) -> None:
    # One answered question costs two requests: the question's embedding and the answer.
    key = rag_gateway.create_key(
        f"rag-limited-{secrets.token_hex(3)}", rpm=2, collections=[collection]
    )
    text = "Which team maintains the caching layer?"
    assert ask(rag_gateway, question(text, collection), key).status_code == 200

    limited = ask(rag_gateway, question(text, collection), key)

    assert limited.status_code == 429, limited.text
    assert limited.json()["error"]["type"] == "rate_limit_error"
    assert int(limited.headers["retry-after"]) >= 1


def test_model_calls_show_in_the_gateway_metrics(
    rag_gateway: GatewayProcess, collection: str
) -> None:
    def embedding_requests() -> float:
        total = 0.0
        for line in rag_gateway.metrics_text().splitlines():
            if line.startswith("gateway_requests_total{") and f'model="{MOCK_EMBEDDER}"' in line:
                total += float(line.rsplit(" ", 1)[1])
        return total

    before = embedding_requests()
    ask(rag_gateway, question("Which team maintains the caching layer?", collection))
    assert embedding_requests() == before + 1


async def test_in_process_app_records_chat_retrieve_and_generate_spans(
    rag_upstream: MockUpstream,
    redis_search_server: RedisServer,
    collection: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    for module in (gateway.rag.api, gateway.rag.retrieval, gateway.rag.service):
        monkeypatch.setattr(module, "tracer", provider.get_tracer("test"))
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        master_key="sk-test-in-process",
        redis_url=redis_search_server.url,
        upstreams=[
            UpstreamConfig(
                name="mock", base_url=rag_upstream.base_url, models=[MOCK_LLM, MOCK_EMBEDDER]
            )
        ],
        embedding_model=MOCK_EMBEDDER,
        cache_enabled=False,
        rag_llm_model=MOCK_LLM,
    )
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://gateway"
        ) as client,
    ):
        response = await client.post(
            "/v1/rag/chat",
            json=question("Which team maintains the caching layer?", collection, top_k=3),
            headers={"authorization": "Bearer sk-test-in-process"},
        )
    assert response.status_code == 200, response.text

    spans = {span.name: dict(span.attributes or {}) for span in exporter.get_finished_spans()}
    assert set(spans) >= {"rag.chat", "rag.retrieve", "rag.generate"}
    assert spans["rag.chat"]["rag.collection"] == collection
    assert spans["rag.retrieve"]["rag.top_k"] == 3
    scores = spans["rag.retrieve"]["rag.scores"]
    assert isinstance(scores, tuple) and len(scores) == len(response.json()["sources"])
    assert spans["rag.generate"]["gen_ai.request.model"] == MOCK_LLM
    assert spans["rag.generate"]["rag.grounded"] is True


def test_collections_belong_to_keys(
    rag_gateway: GatewayProcess, collection: str, rag_upstream: MockUpstream
) -> None:
    """Tenant isolation for RAG: a key reads only the collections it was granted."""
    text = "Which team maintains the caching layer?"
    granted = rag_gateway.create_key(f"rag-a-{secrets.token_hex(3)}", collections=[collection])
    other = rag_gateway.create_key(f"rag-b-{secrets.token_hex(3)}", collections=["elsewhere"])
    everything = rag_gateway.create_key(f"rag-all-{secrets.token_hex(3)}", collections=["*"])
    assert ask(rag_gateway, question(text, collection), granted).status_code == 200
    assert ask(rag_gateway, question(text, collection), everything).status_code == 200
    requests_before = rag_upstream.stats()["requests"]
    denied = ask(rag_gateway, question(text, collection), other)
    missing = ask(rag_gateway, question(text, f"absent-{uuid.uuid4().hex[:6]}"), other)
    # Not granted reads exactly like absent: nothing tells the key the collection exists.
    assert denied.status_code == missing.status_code == 404
    assert denied.json()["error"]["code"] == missing.json()["error"]["code"]
    assert rag_upstream.stats()["requests"] == requests_before  # nothing embedded or asked
    assert ask(rag_gateway, question(text, collection)).status_code == 200  # master: all
    assert ask(rag_gateway, question(text, collection), granted).status_code == 200
