"""LangChain `Embeddings` over an OpenAI-compatible `/v1/embeddings` endpoint.

Used by the `rag` CLI (an httpx client bound to the embedding service, or to a
gateway's /v1); the API uses `rag/models.py`, which calls the pipeline in process.
Vectors are requested as floats: not every OpenAI-compatible server implements base64.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx
from langchain_core.embeddings import Embeddings


class EmbeddingError(RuntimeError):
    """The embedding endpoint failed or answered with something unusable."""

    def __init__(
        self, message: str, status: int | None = None, retry_after: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class OpenAICompatibleEmbeddings(Embeddings):
    def __init__(
        self,
        client: httpx.AsyncClient,
        model: str,
        batch_size: int = 32,
    ) -> None:
        self.client = client
        self.model = model
        self.batch_size = batch_size

    async def _embed_batch(self, texts: Sequence[str]) -> list[list[float]]:
        payload = {"model": self.model, "input": list(texts), "encoding_format": "float"}
        try:
            response = await self.client.post("embeddings", json=payload)
        except httpx.HTTPError as exc:
            raise EmbeddingError(f"embedding request failed: {exc!r}") from exc
        if response.status_code != 200:
            raise EmbeddingError(
                f"embedding endpoint answered {response.status_code}: {_error_message(response)}",
                status=response.status_code,
                retry_after=response.headers.get("retry-after"),
            )
        data = sorted(response.json()["data"], key=lambda item: item["index"])
        if len(data) != len(texts):
            raise EmbeddingError(f"asked for {len(texts)} embeddings, got {len(data)}")
        return [[float(x) for x in item["embedding"]] for item in data]

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        vectors: list[list[float]] = []
        for start in range(0, len(texts), self.batch_size):
            vectors.extend(await self._embed_batch(texts[start : start + self.batch_size]))
        return vectors

    async def aembed_query(self, text: str) -> list[float]:
        return (await self._embed_batch([text]))[0]

    # The gateway serves requests on an event loop; a blocking call there would stall it.
    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        raise NotImplementedError("OpenAICompatibleEmbeddings is async: use aembed_documents")

    def embed_query(self, text: str) -> list[float]:
        raise NotImplementedError("OpenAICompatibleEmbeddings is async: use aembed_query")


def _error_message(response: httpx.Response) -> str:
    try:
        body: Any = response.json()
        return str(body.get("error", {}).get("message") or body)[:300]
    except ValueError:
        return response.text[:300]
