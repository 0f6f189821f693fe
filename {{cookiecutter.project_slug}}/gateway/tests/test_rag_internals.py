"""The in-process streaming transport, the RAG spans and the settings' validation."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic import ValidationError
from redis.asyncio import Redis

import gateway.rag.ingest
import gateway.rag.retrieval
from gateway.rag.embeddings import OpenAICompatibleEmbeddings
from gateway.rag.ingest import Ingestor
from gateway.rag.inprocess import StreamingASGITransport
from gateway.rag.retrieval import CollectionRetriever
from gateway.rag.settings import RagSettings
from gateway.rag.store import VectorStore
from tests.support.gateway import MOCK_EMBEDDER, MockUpstream
from tests.support.redis import RedisServer

SAMPLE_DOCS = Path(__file__).resolve().parents[1] / "gateway" / "rag" / "sample_docs"


class GatedApp:
    """Sends one body chunk, then waits until the test says go before sending more."""

    def __init__(self) -> None:
        self.go = asyncio.Event()
        self.disconnected = asyncio.Event()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await receive()  # the request body
        await send({"type": "http.response.start", "status": 200, "headers": [(b"x-a", b"1")]})
        await send({"type": "http.response.body", "body": b"first", "more_body": True})
        waiter = asyncio.ensure_future(self.go.wait())
        disconnect = asyncio.ensure_future(receive())
        done, pending = await asyncio.wait({waiter, disconnect}, return_when="FIRST_COMPLETED")
        for task in pending:
            task.cancel()
        if disconnect in done:
            self.disconnected.set()
            return
        await send({"type": "http.response.body", "body": b"second", "more_body": False})


async def test_transport_streams_chunks_before_the_app_finishes() -> None:
    app = GatedApp()
    client = httpx.AsyncClient(transport=StreamingASGITransport(app), base_url="http://t")
    async with client, client.stream("POST", "/x", content=b"hello") as response:
        assert response.status_code == 200 and response.headers["x-a"] == "1"
        chunks = response.aiter_bytes()
        # A buffering transport would wait here forever: the app is blocked on `go`.
        assert await asyncio.wait_for(anext(chunks), timeout=30) == b"first"
        app.go.set()
        assert [chunk async for chunk in chunks] == [b"second"]


async def test_transport_tells_the_app_when_the_client_leaves() -> None:
    app = GatedApp()
    client = httpx.AsyncClient(transport=StreamingASGITransport(app), base_url="http://t")
    async with client, client.stream("GET", "/x") as response:
        assert await anext(response.aiter_bytes()) == b"first"
    await asyncio.wait_for(app.disconnected.wait(), timeout=30)
    assert not app.go.is_set()


async def test_transport_reports_an_app_that_fails_before_responding() -> None:
    async def broken(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("boom")

    async with httpx.AsyncClient(
        transport=StreamingASGITransport(broken), base_url="http://t"
    ) as c:
        with pytest.raises(httpx.RemoteProtocolError, match="boom"):
            await c.get("/x")


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    monkeypatch.setattr(gateway.rag.ingest, "tracer", tracer)
    monkeypatch.setattr(gateway.rag.retrieval, "tracer", tracer)
    return exporter


@pytest.fixture(scope="module")
def embed_upstream(tmp_path_factory: pytest.TempPathFactory) -> Any:
    server = MockUpstream("rag-spans-embed", tmp_path_factory.mktemp("rag-spans")).start()
    yield server
    server.stop()


@pytest.fixture
async def embeddings(embed_upstream: MockUpstream) -> AsyncIterator[OpenAICompatibleEmbeddings]:
    async with httpx.AsyncClient(base_url=f"{embed_upstream.base_url}/v1/") as client:
        yield OpenAICompatibleEmbeddings(client, MOCK_EMBEDDER)


def only(exporter: InMemorySpanExporter, name: str) -> ReadableSpan:
    matching = [s for s in exporter.get_finished_spans() if s.name == name]
    assert len(matching) == 1, [s.name for s in exporter.get_finished_spans()]
    return matching[0]


async def test_ingestion_and_retrieval_record_spans(
    spans: InMemorySpanExporter,
    embeddings: OpenAICompatibleEmbeddings,
    redis_search_server: RedisServer,
) -> None:
    redis = Redis.from_url(redis_search_server.url)
    store = VectorStore(redis)
    collection = f"spans-{uuid.uuid4().hex[:8]}"
    try:
        report = await Ingestor(store, embeddings, 500, 80, 1_000_000).ingest(
            SAMPLE_DOCS, collection
        )
        retriever = CollectionRetriever(
            store=store, embeddings=embeddings, collection=collection, k=3, score_threshold=0.1
        )
        documents = await retriever.ainvoke("Who maintains the caching layer?")
    finally:
        await redis.aclose()

    ingest = only(spans, "rag.ingest").attributes or {}
    assert ingest["rag.collection"] == collection
    assert ingest["rag.files"] == len(report.files)
    assert ingest["rag.chunks_written"] == report.chunks_written
    retrieve = only(spans, "rag.retrieve").attributes or {}
    assert retrieve["rag.top_k"] == 3
    assert retrieve["rag.score_threshold"] == 0.1
    assert retrieve["rag.results"] == len(documents)
    scores = retrieve["rag.scores"]
    assert isinstance(scores, tuple | list)
    assert list(scores) == [round(d.metadata["score"], 4) for d in documents]


def test_settings_reject_inconsistent_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_RAG_CHUNK_SIZE", "100")
    monkeypatch.setenv("GATEWAY_RAG_CHUNK_OVERLAP", "100")
    with pytest.raises(ValidationError, match="GATEWAY_RAG_CHUNK_OVERLAP"):
        RagSettings(_env_file=None)  # type: ignore[call-arg]


def test_settings_share_the_gateway_redis_and_embedding_model(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GATEWAY_REDIS_URL", "redis://example:1/2")
    monkeypatch.setenv("GATEWAY_EMBEDDING_MODEL", "my-embedder")
    settings = RagSettings(_env_file=None)  # type: ignore[call-arg]
    assert settings.redis_url == "redis://example:1/2"
    assert settings.embedding_model == "my-embedder"
