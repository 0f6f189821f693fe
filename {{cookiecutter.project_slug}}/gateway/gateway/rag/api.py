"""`POST /v1/rag/chat`: answer from a collection, with sources, optionally streamed.

Errors use the gateway's OpenAI-shaped `GatewayError`: 400 for a bad request (empty
question, last message not from the user, invalid collection name, top_k too large),
404 for an unknown collection, 503 when Redis cannot be reached, and the pipeline's
own error when a model call is refused or fails (403, 429, 502, 504, ...).

"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any, TypeVar

import orjson
from fastapi import APIRouter, Depends
from fastapi.responses import StreamingResponse
from langchain_core.documents import Document
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from starlette.requests import HTTPConnection

from gateway.auth import ApiKey
from gateway.body_limit import documented_body, json_body
from gateway.errors import GatewayError
from gateway.keys import KeyRecord
from gateway.rag.runtime import RagRuntime
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
from gateway.state import GatewayState

T = TypeVar("T")


def create_runtime(state: GatewayState) -> RagRuntime:
    return RagRuntime.create(state)


async def get_runtime(connection: HTTPConnection) -> RagRuntime:
    runtime: RagRuntime = connection.app.state.rag
    return runtime


RuntimeDep = Annotated[RagRuntime, Depends(get_runtime)]
routes = APIRouter(tags=["rag"])


RagBody = Annotated[RagChatRequest, Depends(json_body(RagChatRequest))]


@routes.post(
    "/v1/rag/chat", response_model=RagChatResponse, openapi_extra=documented_body(RagChatRequest)
)
async def rag_chat(key: ApiKey, runtime: RuntimeDep, body: RagBody) -> Any:
    # Parameter order is dependency order: the key is checked before the body is read.
    turn_id = f"rag-{uuid.uuid4().hex}"
    with tracer.start_as_current_span("rag.chat") as span:
        span.set_attribute("rag.collection", body.collection)
        span.set_attribute("rag.streaming", body.stream)
        span.set_attribute("rag.session", body.session_id is not None)
        turn = await _turn(runtime, body, key)
        service = RagService(runtime, key)
        retrieved = await _model_call(runtime, lambda: service.retrieve(turn))
        if body.stream:
            return StreamingResponse(
                _stream(service, turn, retrieved, body, key.id, turn_id),
                media_type="text/event-stream",
                headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
            )
        answer = await _model_call(runtime, lambda: service.answer(turn, retrieved))
        if body.session_id is not None:
            await service.remember(key.id, body.session_id, turn, answer)
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


async def _turn(runtime: RagRuntime, body: RagChatRequest, key: KeyRecord) -> Turn:
    """The turn to answer: the request checked, the session history loaded."""
    owner = key.id
    settings = runtime.settings
    question, prior = _split_messages(body)
    top_k = body.top_k or settings.rag_top_k
    if top_k > settings.rag_max_top_k:
        raise GatewayError(
            400,
            f"top_k must be at most {settings.rag_max_top_k} (GATEWAY_RAG_MAX_TOP_K).",
            param="top_k",
            code="invalid_value",
        )
    await _require_collection(runtime, body.collection, key)
    history = prior
    if body.session_id is not None:
        session_id = body.session_id
        history = await runtime.call(lambda: runtime.memory.load(owner, session_id)) + prior
    threshold = body.score_threshold
    return Turn(
        question=question,
        history=history,
        collection=body.collection,
        top_k=top_k,
        score_threshold=threshold if threshold is not None else settings.rag_score_threshold,
        sources=body.sources,
        model=body.model or settings.rag_llm_model,
        max_tokens=body.max_tokens or settings.rag_max_tokens,
        temperature=body.temperature if body.temperature is not None else settings.rag_temperature,
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


async def _require_collection(runtime: RagRuntime, collection: str, key: KeyRecord) -> None:
    try:
        validate_collection_name(collection)
    except InvalidCollectionNameError as exc:
        raise GatewayError(400, str(exc), param="collection", code="invalid_value") from None
    # A collection the key was not granted reads as one that does not exist: the
    # answer tells no key which collections other keys have.
    granted = key.allows_collection(collection)
    if not granted or not await runtime.call(lambda: runtime.store.exists(collection)):
        raise GatewayError(
            404,
            f"Collection {collection!r} does not exist: ingest documents into it with "
            f"`python -m gateway rag ingest PATH --collection {collection}`.",
            param="collection",
            code="collection_not_found",
        )


async def _model_call(runtime: RagRuntime, call: Callable[[], Awaitable[T]]) -> T:
    """Run a chain step (vector search and model calls) under the Redis policy, mapping
    the store's own failures onto the gateway's error shape; the pipeline's errors
    (GatewayError) pass through as they are."""
    try:
        return await runtime.call(call)
    except CollectionNotFoundError as exc:
        raise GatewayError(
            404, f"Collection {exc} does not exist.", code="collection_not_found"
        ) from exc
    except DimensionMismatchError as exc:
        raise GatewayError(400, str(exc), param="collection", code="embedding_mismatch") from exc


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
    turn: Turn,
    retrieved: Retrieved,
    body: RagChatRequest,
    owner: str,
    turn_id: str,
) -> AsyncIterator[bytes]:
    """OpenAI-style chunks; the first also carries `sources` and the standalone question."""
    pieces: list[str] = []
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
        async for piece in service.stream_answer(turn, retrieved):
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
            await service.remember(owner, body.session_id, turn, "".join(pieces))
