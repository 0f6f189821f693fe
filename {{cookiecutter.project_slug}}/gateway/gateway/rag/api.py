"""`POST /v1/rag/chat`: answer from a collection, with sources, optionally streamed.

Errors use the gateway's OpenAI-shaped `GatewayError`: 400 for a bad request (empty
question, last message not from the user, invalid collection name, top_k too large),
404 for an unknown collection, 503 when Redis cannot be reached, and the status of the
in-process model call when that fails (401, 429, 502, 504, ...).
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

import openai
import orjson
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import StreamingResponse
from langchain_core.documents import Document
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from redis.exceptions import RedisError
from redisvl.exceptions import RedisSearchError

from gateway.auth import ApiKey, presented_key
from gateway.errors import GatewayError
from gateway.rag.embeddings import EmbeddingError
from gateway.rag.inprocess import gateway_client
from gateway.rag.runtime import RagRuntime, runtime_for
from gateway.rag.schemas import (
    RagAnswerMessage,
    RagChatRequest,
    RagChatResponse,
    RagChoice,
    RagSource,
)
from gateway.rag.service import RagService, Retrieved, Turn
from gateway.rag.store import (
    CollectionNotFoundError,
    DimensionMismatchError,
    InvalidCollectionNameError,
    validate_collection_name,
)
from gateway.rag.telemetry import tracer

T = TypeVar("T")


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield
    runtime: RagRuntime | None = getattr(app.state, "rag", None)
    if runtime is not None:
        await runtime.close()
        app.state.rag = None


router = APIRouter(tags=["rag"], lifespan=_lifespan)


@router.post("/v1/rag/chat", response_model=RagChatResponse)
async def rag_chat(body: RagChatRequest, request: Request, key: ApiKey) -> Any:
    runtime = runtime_for(request.app)
    settings = runtime.settings
    turn_id = f"rag-{uuid.uuid4().hex}"
    with tracer.start_as_current_span("rag.chat") as span:
        span.set_attribute("rag.collection", body.collection)
        span.set_attribute("rag.streaming", body.stream)
        span.set_attribute("rag.session", body.session_id is not None)
        question, prior = _split_messages(body)
        top_k = body.top_k or settings.top_k
        if top_k > settings.max_top_k:
            raise GatewayError(
                400,
                f"top_k must be at most {settings.max_top_k} (GATEWAY_RAG_MAX_TOP_K).",
                param="top_k",
                code="invalid_value",
            )
        await _require_collection(runtime, body.collection)
        history = prior
        if body.session_id is not None:
            history = await _redis(runtime.memory.load(key.id, body.session_id)) + prior
        turn = Turn(
            question=question,
            history=history,
            collection=body.collection,
            top_k=top_k,
            score_threshold=(
                body.score_threshold
                if body.score_threshold is not None
                else settings.score_threshold
            ),
            sources=body.sources,
            model=body.model or settings.llm_model,
            max_tokens=body.max_tokens or settings.max_tokens,
            temperature=body.temperature if body.temperature is not None else settings.temperature,
        )
        api_key = presented_key(request) or ""
        client = gateway_client(request.app, api_key, settings.request_timeout_seconds)
        service = RagService(runtime, client, api_key)
        try:
            retrieved = await _model_call(service.retrieve(turn))
        except BaseException:
            await client.aclose()
            raise
        if body.stream:
            return StreamingResponse(
                _stream(service, client, turn, retrieved, body, key.id, turn_id),
                media_type="text/event-stream",
                headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
            )
        try:
            answer = await _model_call(service.answer(turn, retrieved))
        finally:
            await client.aclose()
        if body.session_id is not None:
            await _redis(service.remember(key.id, body.session_id, turn, answer))
        return RagChatResponse(
            id=turn_id,
            created=int(time.time()),
            model=turn.model,
            collection=turn.collection,
            session_id=body.session_id,
            answer=answer,
            grounded=bool(retrieved.documents),
            standalone_question=retrieved.standalone_question,
            sources=_sources(retrieved.documents),
            choices=[RagChoice(message=RagAnswerMessage(content=answer))],
        )


def _split_messages(body: RagChatRequest) -> tuple[str, list[BaseMessage]]:
    """The question (last user message) and the conversation before it."""
    last = body.messages[-1]
    if last.role != "user":
        raise GatewayError(
            400, "The last message must come from the user.", param="messages", code="invalid_value"
        )
    question = last.text.strip()
    if not question:
        raise GatewayError(400, "The question is empty.", param="messages", code="empty_question")
    prior: list[BaseMessage] = []
    for message in body.messages[:-1]:
        if message.role == "user":
            prior.append(HumanMessage(message.text))
        elif message.role == "assistant":
            prior.append(AIMessage(message.text))
    return question, prior


async def _require_collection(runtime: RagRuntime, collection: str) -> None:
    try:
        validate_collection_name(collection)
    except InvalidCollectionNameError as exc:
        raise GatewayError(400, str(exc), param="collection", code="invalid_value") from None
    if not await _redis(runtime.store.exists(collection)):
        raise GatewayError(
            404,
            f"Collection {collection!r} does not exist: ingest documents into it with "
            f"`python -m gateway rag ingest PATH --collection {collection}`.",
            param="collection",
            code="collection_not_found",
        )


async def _redis(call: Awaitable[T]) -> T:
    try:
        return await call
    except (RedisError, RedisSearchError, OSError) as exc:
        raise GatewayError(
            503,
            f"The vector store is unavailable: {type(exc).__name__}.",
            code="vector_store_unavailable",
            headers={"retry-after": "5"},
        ) from exc


async def _model_call(call: Awaitable[T]) -> T:
    """Map failures of the in-process model calls onto the gateway's error shape."""
    try:
        return await _redis(call)
    except openai.APIStatusError as exc:
        raise GatewayError(
            exc.status_code,
            _openai_message(exc),
            code="model_call_failed",
            headers=_retry_after(exc.response.headers.get("retry-after")),
        ) from exc
    except openai.APITimeoutError as exc:
        raise GatewayError(504, "The model did not answer in time.", code="timeout") from exc
    except openai.APIConnectionError as exc:
        raise GatewayError(502, "The model could not be reached.", code="upstream_error") from exc
    except EmbeddingError as exc:
        raise GatewayError(
            exc.status or 502,
            str(exc),
            code="embedding_failed",
            headers=_retry_after(exc.retry_after),
        ) from exc
    except CollectionNotFoundError as exc:
        raise GatewayError(
            404, f"Collection {exc} does not exist.", code="collection_not_found"
        ) from exc
    except DimensionMismatchError as exc:
        raise GatewayError(400, str(exc), param="collection", code="embedding_mismatch") from exc


def _retry_after(value: str | None) -> dict[str, str]:
    return {"retry-after": value} if value else {}


def _openai_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        message = body.get("message") or body.get("error", {}).get("message")
        if message:
            return str(message)
    return f"The model call failed with status {exc.status_code}."


def _sources(documents: list[Document]) -> list[RagSource]:
    return [
        RagSource(
            path=doc.metadata["source"],
            title=doc.metadata["title"],
            chunk=doc.metadata["chunk"],
            score=round(float(doc.metadata["score"]), 4),
            text=doc.page_content,
        )
        for doc in documents
    ]


def _event(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def _chunk(turn_id: str, model: str, delta: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "id": turn_id,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": extra.pop("finish", None)}],
        **extra,
    }


async def _stream(
    service: RagService,
    client: Any,
    turn: Turn,
    retrieved: Retrieved,
    body: RagChatRequest,
    owner: str,
    turn_id: str,
) -> AsyncIterator[bytes]:
    """OpenAI-style chunks; the first also carries `sources` and the standalone question."""
    pieces: list[str] = []
    try:
        yield _event(
            _chunk(
                turn_id,
                turn.model,
                {"role": "assistant", "content": ""},
                collection=turn.collection,
                session_id=body.session_id,
                grounded=bool(retrieved.documents),
                standalone_question=retrieved.standalone_question,
                sources=[s.model_dump() for s in _sources(retrieved.documents)],
            )
        )
        try:
            async for piece in _iterate(service.stream_answer(turn, retrieved)):
                if piece:
                    pieces.append(piece)
                    yield _event(_chunk(turn_id, turn.model, {"content": piece}))
        except GatewayError as exc:
            yield _event(exc.body())
            return
        yield _event(_chunk(turn_id, turn.model, {}, finish="stop"))
        yield b"data: [DONE]\n\n"
        if body.session_id is not None:
            with contextlib.suppress(GatewayError):
                await _redis(service.remember(owner, body.session_id, turn, "".join(pieces)))
    finally:
        await client.aclose()


async def _iterate(stream: AsyncIterator[str]) -> AsyncIterator[str]:
    """Iterate a model stream, mapping its failures like `_model_call` does."""
    iterator = stream.__aiter__()
    while True:
        try:
            piece = await _model_call(_next(iterator))
        except StopAsyncIteration:
            return
        yield piece


async def _next(iterator: AsyncIterator[str]) -> str:
    return await iterator.__anext__()
