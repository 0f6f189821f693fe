"""The RAG spans and the RAG part of the gateway settings."""

from __future__ import annotations

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
from gateway.rag.retrieval import CollectionRetriever
from gateway.rag.store import VectorStore
from gateway.settings import Settings
from tests.support.gateway import MOCK_EMBEDDER, MockUpstream
from tests.support.redis import RedisServer

SAMPLE_DOCS = Path(__file__).resolve().parents[1] / "gateway" / "rag" / "sample_docs"


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
        Settings(_env_file=None)  # type: ignore[call-arg]


def test_settings_share_the_gateway_redis_and_embedding_model(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GATEWAY_REDIS_URL", "redis://example:1/2")
    monkeypatch.setenv("GATEWAY_EMBEDDING_MODEL", "my-embedder")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.redis_url == "redis://example:1/2"
    assert settings.rag_embedding == "my-embedder"


def test_rag_settings_keep_their_environment_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_RAG_REDIS_URL", "redis://legacy:1/3")
    monkeypatch.setenv("GATEWAY_RAG_EMBEDDING_MODEL", "rag-embedder")
    monkeypatch.setenv("GATEWAY_RAG_TOP_K", "7")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.redis_url == "redis://legacy:1/3"  # when GATEWAY_REDIS_URL is unset
    assert settings.rag_embedding == "rag-embedder" and settings.rag_top_k == 7
    monkeypatch.setenv("GATEWAY_REDIS_URL", "redis://primary:1/2")
    assert Settings(_env_file=None).redis_url == "redis://primary:1/2"  # type: ignore[call-arg]
