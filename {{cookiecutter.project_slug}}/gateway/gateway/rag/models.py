"""LangChain models that call the gateway's pipeline in process: no HTTP loopback.

`GatewayChatModel` (a chat model) and `GatewayEmbeddings` (an embeddings class) carry
the caller's key record, so the caller's model access, limits, the caches, guardrails,
metrics and spans apply to every model call RAG makes, exactly as for an HTTP request.
Refusals surface as the pipeline's `GatewayError` (429 with `retry-after`, 502, ...).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import orjson
from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
    CallbackManagerForLLMRun,
)
from langchain_core.embeddings import Embeddings
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    convert_to_openai_messages,
)
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import ConfigDict

from gateway import sse
from gateway.errors import GatewayError
from gateway.keys import KeyRecord
from gateway.pipeline import Answer, Pipeline
from gateway.route_adapters import CHAT, EMBEDDING
from gateway.stream_relay import StreamAnswer


def _request_id() -> str:
    return "rag-" + uuid.uuid4().hex


def _refused(answer: Answer) -> GatewayError:
    """An upstream's own 4xx (passed on by the pipeline) as an error to raise."""
    try:
        message = orjson.loads(answer.body)["error"]["message"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        message = f"The model call failed with status {answer.status}."
    return GatewayError(answer.status, str(message), code="model_call_failed")


class GatewayChatModel(BaseChatModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    pipeline: Pipeline
    key: KeyRecord
    model: str
    max_tokens: int
    temperature: float

    @property
    def _llm_type(self) -> str:
        return "gateway-pipeline"

    def _payload(self, messages: list[BaseMessage], stop: list[str] | None, stream: bool) -> dict:
        payload: dict[str, Any] = {
            "model": self.model,
            "messages": convert_to_openai_messages(messages),
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
        }
        if stop:
            payload["stop"] = stop
        if stream:
            payload["stream"] = True
        return payload

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        answer = await self.pipeline.handle(
            CHAT, self.key, self._payload(messages, stop, False), _request_id()
        )
        assert isinstance(answer, Answer)
        if answer.status != 200:
            raise _refused(answer)
        body = orjson.loads(answer.body)
        text = (body["choices"][0].get("message") or {}).get("content") or ""
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        answer = await self.pipeline.handle(
            CHAT, self.key, self._payload(messages, stop, True), _request_id()
        )
        async for text in _stream_texts(answer):
            if run_manager is not None:
                await run_manager.on_llm_new_token(text)
            yield ChatGenerationChunk(message=AIMessageChunk(content=text))

    # The gateway serves requests on an event loop; a blocking call there would stall it.
    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        raise NotImplementedError("GatewayChatModel is async: use ainvoke or astream")

    def _stream(self, *args: Any, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        raise NotImplementedError("GatewayChatModel is async: use astream")


async def _stream_texts(answer: Answer | StreamAnswer) -> AsyncIterator[str]:
    """The content pieces of a streamed answer (live, or a replayed cached one)."""
    if isinstance(answer, Answer):
        if answer.status != 200:
            raise _refused(answer)
        events: AsyncIterator[bytes] = _once(answer.body)
    else:
        events = answer.events
    try:
        async for event in sse.iter_events(events):
            data = sse.event_data(event)
            if data is None or data == sse.DONE:
                continue
            chunk = orjson.loads(data)
            if "error" in chunk:
                error = chunk["error"]
                raise GatewayError(502, str(error.get("message")), code=error.get("code"))
            for choice in chunk.get("choices") or ():
                text = (choice.get("delta") or {}).get("content")
                if text:
                    yield text
    finally:
        closer = getattr(events, "aclose", None)
        if closer is not None:
            await closer()


async def _once(body: bytes) -> AsyncIterator[bytes]:
    yield body


class GatewayEmbeddings(Embeddings):
    def __init__(self, pipeline: Pipeline, key: KeyRecord, model: str, batch_size: int) -> None:
        self.pipeline = pipeline
        self.key = key
        self.model = model
        self.batch_size = batch_size

    async def _embed_batch(self, texts: list[str]) -> list[list[float]]:
        payload = {"model": self.model, "input": texts, "encoding_format": "float"}
        answer = await self.pipeline.handle(EMBEDDING, self.key, payload, _request_id())
        assert isinstance(answer, Answer)
        if answer.status != 200:
            raise _refused(answer)
        data = sorted(orjson.loads(answer.body)["data"], key=lambda item: item["index"])
        if len(data) != len(texts):
            raise GatewayError(
                502, f"asked for {len(texts)} embeddings, got {len(data)}", code="embedding_failed"
            )
        return [[float(x) for x in item["embedding"]] for item in data]

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        vectors: list[list[float]] = []
        for start in range(0, len(texts), self.batch_size):
            vectors.extend(await self._embed_batch(texts[start : start + self.batch_size]))
        return vectors

    async def aembed_query(self, text: str) -> list[float]:
        return (await self._embed_batch([text]))[0]

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        raise NotImplementedError("GatewayEmbeddings is async: use aembed_documents")

    def embed_query(self, text: str) -> list[float]:
        raise NotImplementedError("GatewayEmbeddings is async: use aembed_query")
