"""One RAG conversation turn: rewrite, retrieve, answer, remember.

The LLM and the embedding model are reached through the gateway's pipeline, in
process (`rag/models.py`, carrying the caller's key record), so the caller's limits,
the caches and the gateway's telemetry apply to every model call RAG makes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from langchain_core.documents import Document
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage

from gateway.keys import KeyRecord
from gateway.rag.chain import build_answer_chain, build_retrieval_chain
from gateway.rag.models import GatewayChatModel, GatewayEmbeddings
from gateway.rag.retrieval import CollectionRetriever
from gateway.rag.runtime import RagRuntime
from gateway.rag.telemetry import tracer

REWRITE_MAX_TOKENS = 64  # a standalone question is one short sentence


@dataclass(frozen=True)
class Turn:
    question: str
    history: list[BaseMessage]
    collection: str
    top_k: int
    score_threshold: float | None
    sources: list[str] | None
    model: str
    max_tokens: int
    temperature: float


@dataclass
class Retrieved:
    standalone_question: str
    documents: list[Document] = field(default_factory=list)


class RagService:
    def __init__(self, runtime: RagRuntime, key: KeyRecord) -> None:
        self.runtime = runtime
        self.key = key
        settings = runtime.settings
        self.embeddings = GatewayEmbeddings(
            runtime.pipeline, key, settings.rag_embedding, settings.rag_embedding_batch_size
        )

    def llm(self, turn: Turn, max_tokens: int | None = None) -> GatewayChatModel:
        return GatewayChatModel(
            pipeline=self.runtime.pipeline,
            key=self.key,
            model=turn.model,
            max_tokens=max_tokens or turn.max_tokens,
            temperature=turn.temperature,
        )

    async def retrieve(self, turn: Turn) -> Retrieved:
        retriever = CollectionRetriever(
            store=self.runtime.store,
            embeddings=self.embeddings,
            collection=turn.collection,
            k=turn.top_k,
            score_threshold=turn.score_threshold,
            sources=turn.sources,
        )
        chain = build_retrieval_chain(self.llm(turn, REWRITE_MAX_TOKENS), retriever)
        result = await chain.ainvoke({"question": turn.question, "history": turn.history})
        return Retrieved(result["standalone_question"], result["documents"])

    def _answer_inputs(self, retrieved: Retrieved) -> dict[str, Any]:
        return {
            "standalone_question": retrieved.standalone_question,
            "documents": retrieved.documents,
        }

    async def answer(self, turn: Turn, retrieved: Retrieved) -> str:
        with tracer.start_as_current_span(
            "rag.generate", attributes=_span_attributes(turn, retrieved)
        ):
            answer: str = await build_answer_chain(self.llm(turn)).ainvoke(
                self._answer_inputs(retrieved)
            )
        return answer

    async def stream_answer(self, turn: Turn, retrieved: Retrieved) -> AsyncIterator[str]:
        # Not the current span: a generator may be closed in another context than it began.
        span = tracer.start_span("rag.generate", attributes=_span_attributes(turn, retrieved))
        try:
            async for piece in build_answer_chain(self.llm(turn)).astream(
                self._answer_inputs(retrieved)
            ):
                yield piece
        finally:
            span.end()

    async def remember(self, owner: str, session_id: str, turn: Turn, answer: str) -> None:
        messages = [HumanMessage(turn.question), AIMessage(answer)]
        await self.runtime.call(lambda: self.runtime.memory.append(owner, session_id, messages))


def _span_attributes(turn: Turn, retrieved: Retrieved) -> dict[str, Any]:
    return {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": turn.model,
        "gen_ai.request.max_tokens": turn.max_tokens,
        "gen_ai.request.temperature": turn.temperature,
        "rag.collection": turn.collection,
        "rag.context_chunks": len(retrieved.documents),
        "rag.grounded": bool(retrieved.documents),
    }
