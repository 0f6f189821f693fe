"""A LangChain retriever over one collection: embed the question, search Redis."""

from __future__ import annotations

from typing import Any

from langchain_core.callbacks import (
    AsyncCallbackManagerForRetrieverRun,
    CallbackManagerForRetrieverRun,
)
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict

from gateway.rag.store import VectorStore
from gateway.rag.telemetry import tracer


class CollectionRetriever(BaseRetriever):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    store: VectorStore
    embeddings: Embeddings
    collection: str
    k: int = 4
    score_threshold: float | None = None
    sources: list[str] | None = None

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun, **_: Any
    ) -> list[Document]:
        with tracer.start_as_current_span("rag.retrieve") as span:
            span.set_attribute("rag.collection", self.collection)
            span.set_attribute("rag.top_k", self.k)
            if self.score_threshold is not None:
                span.set_attribute("rag.score_threshold", self.score_threshold)
            vector = await self.embeddings.aembed_query(query)
            hits = await self.store.search(
                self.collection, vector, self.k, self.score_threshold, self.sources
            )
            span.set_attribute("rag.results", len(hits))
            span.set_attribute("rag.scores", [round(hit.score, 4) for hit in hits])
            span.set_attribute("rag.sources", [hit.source for hit in hits])
        return [
            Document(
                page_content=hit.text,
                metadata={
                    "source": hit.source,
                    "title": hit.title,
                    "chunk": hit.chunk,
                    "score": hit.score,
                },
            )
            for hit in hits
        ]

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, **_: Any
    ) -> list[Document]:
        raise NotImplementedError("CollectionRetriever is async: use ainvoke")
