"""RAG against the real models: MiniLM embeddings, SmolLM2-135M answers, through the
real gateway (`gateway_server`), the corpus ingested with the real CLI.

SmolLM2-135M is tiny: these tests assert on retrieval, sources and the prompt path,
which the embedding model decides, not on the wording of answers.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.rag.prompts import NO_ANSWER
from tests.support.gateway import GatewayProcess
from tests.support.processes import source_path
from tests.support.redis import RedisServer

pytestmark = pytest.mark.e2e

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SAMPLE_DOCS = PROJECT_ROOT / "gateway" / "gateway" / "rag" / "sample_docs"
ANSWER_TOKENS = 16  # enough to see an answer, cheap on CPU


@pytest.fixture(scope="module")
def ops_collection(
    embedder_server: Any, redis_search_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> str:
    name = f"ops-e2e-{uuid.uuid4().hex[:8]}"
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "rag", "ingest", str(SAMPLE_DOCS), "--collection", name],
        env={
            "PATH": "/usr/bin:/bin",
            "PYTHONPATH": source_path("gateway"),
            "GATEWAY_REDIS_URL": redis_search_server.url,
            "GATEWAY_RAG_EMBEDDINGS_BASE_URL": f"{embedder_server.base_url}/v1",
            "GATEWAY_RAG_EMBEDDING_MODEL": embedder_server.model,
            "COLUMNS": "200",
        },
        cwd=tmp_path_factory.mktemp("rag-cli"),  # no project .env
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "skipped files" not in result.stdout, result.stdout
    return name


def ask(gateway: GatewayProcess, text: str, collection: str, **extra: Any) -> dict[str, Any]:
    response = httpx.post(
        f"{gateway.base_url}/v1/rag/chat",
        json={
            "messages": [{"role": "user", "content": text}],
            "collection": collection,
            "max_tokens": ANSWER_TOKENS,
            **extra,
        },
        headers=gateway.headers,
        timeout=300,
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.mark.parametrize(
    ("text", "expected_file"),
    [
        ("Which port does the embedder service listen on?", "services-and-ports.md"),
        ("How often should application API keys be rotated?", "api-keys.md"),
    ],
)
def test_question_retrieves_the_file_that_answers_it_first(
    gateway_server: GatewayProcess, ops_collection: str, text: str, expected_file: str
) -> None:
    body = ask(gateway_server, text, ops_collection, top_k=2)
    assert body["sources"][0]["path"] == expected_file, body["sources"]
    assert body["grounded"] is True
    assert body["answer"].strip() and body["answer"] != NO_ANSWER


def test_question_outside_the_corpus_gets_dont_know(
    gateway_server: GatewayProcess, ops_collection: str
) -> None:
    body = ask(gateway_server, "What is the capital of France?", ops_collection)
    assert body["sources"] == []
    assert body["grounded"] is False
    assert body["answer"] == NO_ANSWER


def test_follow_up_is_rewritten_and_answered_from_the_right_document(
    gateway_server: GatewayProcess, ops_collection: str
) -> None:
    session = f"e2e-{uuid.uuid4().hex}"
    first = ask(
        gateway_server,
        "What does the semantic cache do?",
        ops_collection,
        top_k=2,
        session_id=session,
    )
    assert first["sources"][0]["path"] == "caching.html"

    follow_up = ask(
        gateway_server, "and who maintains it?", ops_collection, top_k=2, session_id=session
    )

    assert follow_up["standalone_question"] != "and who maintains it?"
    assert "cache" in follow_up["standalone_question"].lower(), follow_up["standalone_question"]
    assert follow_up["sources"][0]["path"] == "caching.html", follow_up["sources"]
