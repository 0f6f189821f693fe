"""OpenAI-compatible routes of the transformers backend (the surface vLLM's server has)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

from model_service import admission, genai_spans
from model_service.embedding import encode_vector
from model_service.errors import APIError, bad_request, error_body
from model_service.generation import (
    Delta,
    GenerationEngine,
    GenerationFailed,
    LoopFailed,
    QueueFull,
    RequestStats,
)
from model_service.protocol import (
    AssistantMessage,
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionChoice,
    CompletionRequest,
    CompletionResponse,
    DeltaMessage,
    EmbeddingData,
    EmbeddingRequest,
    EmbeddingResponse,
    ModelCard,
    ModelList,
    SamplingFields,
    Usage,
    new_id,
    now,
)
from model_service.runtime import Runtime
from model_service.sampling import SamplingParams

if TYPE_CHECKING:
    from opentelemetry.trace import Span

router = APIRouter()


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]

SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}
DISCONNECT_POLL_SECONDS = 0.5


@router.get("/health")
async def health(runtime: RuntimeDep) -> Response:
    if runtime.engine is None:
        return JSONResponse(
            error_body(503, runtime.error or f"{runtime.model_name} is loading"), status_code=503
        )
    if isinstance(runtime.engine, GenerationEngine) and not runtime.engine.alive():
        problem = f"generation loop failed ({runtime.engine.loop_error()}); restarting"
        return JSONResponse(error_body(503, problem), status_code=503)
    return Response(status_code=200)


@router.get("/metrics")
async def metrics(runtime: RuntimeDep) -> Response:
    return Response(generate_latest(runtime.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/v1/models")
async def list_models(runtime: RuntimeDep) -> ModelList:
    engine = runtime.engine
    return ModelList(
        data=[
            ModelCard(
                id=runtime.model_name,
                created=runtime.created,
                root=str(runtime.model_path or runtime.settings.source),
                max_model_len=engine.max_model_len if engine else 0,
            )
        ]
    )


@router.post("/v1/chat/completions", response_model=None)
async def chat_completions(
    body: ChatCompletionRequest, request: Request, runtime: RuntimeDep
) -> Response | ChatCompletionResponse:
    check_model(body.model, runtime)
    engine = runtime.generator()
    limits = admission.limits_for(runtime.settings, engine)
    prompt_ids = await admission.chat_prompt_ids(body, engine, limits)
    params = sampling_params(body, len(prompt_ids), engine.max_model_len)
    admission.check_request(body, params, len(prompt_ids), limits)
    request_id, created, model = new_id("chatcmpl"), now(), runtime.model_name
    span = genai_spans.start(runtime.tracing, "chat", model, request_id, body)

    if body.stream:

        def chunk(delta: Delta | None, role: bool = False) -> ChatCompletionChunk:
            choice = ChatChunkChoice(
                delta=DeltaMessage(
                    role="assistant" if role else None, content=delta.text if delta else ""
                ),
                finish_reason=delta.finish_reason if delta else None,  # type: ignore[arg-type]
            )
            return ChatCompletionChunk(
                id=request_id, created=created, model=model, choices=[choice]
            )

        def usage_chunk(usage: Usage) -> ChatCompletionChunk:
            return ChatCompletionChunk(
                id=request_id, created=created, model=model, choices=[], usage=usage
            )

        events = await stream_events(
            engine, prompt_ids, params, chunk(None, role=True), chunk, usage_chunk, body, span
        )
        return StreamingResponse(events, media_type="text/event-stream", headers=SSE_HEADERS)

    text, last = await complete(request, engine, prompt_ids, params, span)
    return ChatCompletionResponse(
        id=request_id,
        created=created,
        model=model,
        choices=[
            ChatChoice(message=AssistantMessage(content=text), finish_reason=last.finish_reason)  # type: ignore[arg-type]
        ],
        usage=usage_of(prompt_ids, last),
    )


@router.post("/v1/completions", response_model=None)
async def completions(
    body: CompletionRequest, request: Request, runtime: RuntimeDep
) -> Response | CompletionResponse:
    check_model(body.model, runtime)
    engine = runtime.generator()
    limits = admission.limits_for(runtime.settings, engine)
    prompt_ids = await admission.completion_prompt_ids(body, engine, limits)
    params = sampling_params(body, len(prompt_ids), engine.max_model_len)
    admission.check_request(body, params, len(prompt_ids), limits)
    request_id, created, model = new_id("cmpl"), now(), runtime.model_name
    span = genai_spans.start(runtime.tracing, "text_completion", model, request_id, body)

    if body.stream:

        def chunk(delta: Delta | None, role: bool = False) -> CompletionResponse:
            choice = CompletionChoice(
                text=delta.text if delta else "",
                finish_reason=delta.finish_reason if delta else None,  # type: ignore[arg-type]
            )
            return CompletionResponse(id=request_id, created=created, model=model, choices=[choice])

        def usage_chunk(usage: Usage) -> CompletionResponse:
            return CompletionResponse(
                id=request_id, created=created, model=model, choices=[], usage=usage
            )

        events = await stream_events(
            engine, prompt_ids, params, None, chunk, usage_chunk, body, span
        )
        return StreamingResponse(events, media_type="text/event-stream", headers=SSE_HEADERS)

    text, last = await complete(request, engine, prompt_ids, params, span)
    return CompletionResponse(
        id=request_id,
        created=created,
        model=model,
        choices=[CompletionChoice(text=text, finish_reason=last.finish_reason)],  # type: ignore[arg-type]
        usage=usage_of(prompt_ids, last),
    )


@router.post("/v1/embeddings")
async def embeddings(body: EmbeddingRequest, runtime: RuntimeDep) -> EmbeddingResponse:
    check_model(body.model, runtime)
    engine = runtime.embedder()
    if body.dimensions is not None:
        raise bad_request("dimensions is not supported by this model", "dimensions")
    admission.check_embedding_input(body.input, runtime.settings, engine)
    texts = embedding_inputs(body, engine.decode_ids)
    if not texts:
        raise bad_request("input must not be empty", "input")
    for index, count in enumerate(await asyncio.to_thread(engine.token_counts, texts)):
        if count > engine.max_model_len:
            raise bad_request(
                f"This model's maximum context length is {engine.max_model_len} tokens. "
                f"However, input {index} has {count} tokens. Please reduce its length.",
                "input",
            )
    response_id = new_id("embd")
    span = genai_spans.start(
        runtime.tracing,
        "embeddings",
        runtime.model_name,
        response_id,
        attributes={"gen_ai.request.encoding_formats": [body.encoding_format]},
    )
    try:
        result = await engine.embed(texts)
    except QueueFull as error:
        genai_spans.end_embedding(span, None, None, error)
        raise queue_full(error) from error
    except BaseException as error:
        genai_spans.end_embedding(span, None, None, error)
        raise
    dimensions = len(result.vectors[0]) if result.vectors else None
    genai_spans.end_embedding(span, result.prompt_tokens, dimensions)
    return EmbeddingResponse(
        id=response_id,
        created=now(),
        model=runtime.model_name,
        data=[
            EmbeddingData(index=i, embedding=encode_vector(v, body.encoding_format))
            for i, v in enumerate(result.vectors)
        ],
        usage=Usage(prompt_tokens=result.prompt_tokens, total_tokens=result.prompt_tokens),
    )


# -- request checks ------------------------------------------------------------------------


def check_model(requested: str | None, runtime: Runtime) -> None:
    if requested is not None and requested != runtime.model_name:
        raise APIError(
            404,
            f"The model `{requested}` does not exist. Valid aliases: {runtime.model_name}.",
            "model",
        )


def sampling_params(body: SamplingFields, prompt_len: int, max_model_len: int) -> SamplingParams:
    unsupported = body.unsupported_fields()
    if unsupported:
        names = ", ".join(unsupported)
        raise bad_request(
            f"Unsupported by the transformers backend: {names}. "
            "Remove them, or serve this model with MODEL_BACKEND=vllm.",
            unsupported[0],
        )
    if prompt_len >= max_model_len:
        raise bad_request(
            f"This model's maximum context length is {max_model_len} tokens. However, your "
            f"prompt contains {prompt_len} input tokens, which leaves no room for output. "
            "Please reduce the length of the input prompt.",
            "input_tokens",
        )
    room = max_model_len - prompt_len
    requested = body.requested_max_tokens
    if requested is not None and requested > room:
        raise bad_request(
            f"'max_tokens' is too large: {requested}. This model's maximum context length is "
            f"{max_model_len} tokens and your request has {prompt_len} input tokens "
            f"({requested} > {max_model_len} - {prompt_len}).",
            "max_tokens",
        )
    temperature = 1.0 if body.temperature is None else body.temperature
    return SamplingParams(
        max_tokens=requested or room,
        temperature=temperature,
        top_p=body.top_p if body.top_p is not None else 1.0,
        top_k=body.top_k if body.top_k is not None else -1,
        seed=body.seed,
        stop=tuple(body.stop_strings()),
        ignore_eos=body.ignore_eos,
    )


def embedding_inputs(
    body: EmbeddingRequest, decode: Callable[[list[list[int]]], list[str]]
) -> list[str]:
    value: Any = body.input
    if isinstance(value, str):
        return [value]
    if all(isinstance(v, str) for v in value):
        return [str(v) for v in value]
    if all(isinstance(v, int) for v in value):
        return decode([[int(v) for v in value]])
    return decode([[int(t) for t in v] for v in value])


def usage_of(prompt_ids: list[int], last: Delta) -> Usage:
    prompt = len(prompt_ids)
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=last.completion_tokens,
        total_tokens=prompt + last.completion_tokens,
    )


# -- running a generation ------------------------------------------------------------------


def queue_full(error: QueueFull) -> APIError:
    return APIError(
        503, f"The server is at capacity ({error}); retry later.", headers={"retry-after": "1"}
    )


def loop_failed(error: LoopFailed) -> APIError:
    return APIError(503, f"{error}; retry later.", headers={"retry-after": "1"})


async def complete(
    request: Request,
    engine: GenerationEngine,
    prompt_ids: list[int],
    params: SamplingParams,
    span: Span | None = None,
) -> tuple[str, Delta]:
    """Run to completion; stop (and free the slot) if the client goes away. Ends `span`."""
    stats = RequestStats()
    deltas = engine.generate(prompt_ids, params, stats)

    async def collect() -> tuple[str, Delta]:
        parts, last = [], Delta("", 0)
        async for delta in deltas:
            parts.append(delta.text)
            last = delta
        return "".join(parts), last

    task = asyncio.ensure_future(collect())
    failure: BaseException | None = None
    disconnected = False
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=DISCONNECT_POLL_SECONDS)
            if done:
                return task.result()
            if await request.is_disconnected():
                task.cancel()
                disconnected = True
                raise APIError(499, "client disconnected")
    except QueueFull as error:
        failure = error
        raise queue_full(error) from error
    except LoopFailed as error:
        failure = error
        raise loop_failed(error) from error
    except GenerationFailed as error:
        failure = error
        raise APIError(500, f"generation failed: {error}") from error
    except BaseException as error:
        failure = error
        raise
    finally:
        if not task.done():
            task.cancel()
            # Let the cancellation unwind the generator inside the task first: closing
            # it while the task still runs it raises "aclose(): ... already running".
            await asyncio.wait({task})
        await deltas.aclose()
        genai_spans.end_generation(span, stats, failure, disconnected)


async def stream_events(
    engine: GenerationEngine,
    prompt_ids: list[int],
    params: SamplingParams,
    first: BaseModel | None,
    chunk: Callable[[Delta], BaseModel],
    usage_chunk: Callable[[Usage], BaseModel],
    body: SamplingFields,
    span: Span | None = None,
) -> AsyncIterator[str]:
    """SSE events; admission happens before the 200 so a full queue is still a 503.
    `span` ends with the stream: at its end, on an error or when the client goes away."""
    stats = RequestStats()
    deltas = engine.generate(prompt_ids, params, stats)
    try:
        opening = await anext(deltas)
    except QueueFull as error:
        genai_spans.end_generation(span, stats, error)
        raise queue_full(error) from error
    except LoopFailed as error:
        genai_spans.end_generation(span, stats, error)
        raise loop_failed(error) from error
    except BaseException as error:
        genai_spans.end_generation(span, stats, error)
        raise
    return _sse(
        deltas, opening, prompt_ids, first, chunk, usage_chunk, body.include_usage, span, stats
    )


async def _sse(
    deltas: AsyncGenerator[Delta, None],
    opening: Delta,
    prompt_ids: list[int],
    first: BaseModel | None,
    chunk: Callable[[Delta], BaseModel],
    usage_chunk: Callable[[Usage], BaseModel],
    include_usage: bool,
    span: Span | None,
    stats: RequestStats,
) -> AsyncIterator[str]:
    def event(payload: BaseModel | dict[str, Any]) -> str:
        data = payload if isinstance(payload, dict) else payload.model_dump()
        if data.get("usage", 0) is None:
            del data["usage"]
        for choice in data.get("choices", []):
            if "delta" in choice:
                choice["delta"] = {k: v for k, v in choice["delta"].items() if v is not None}
        return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"

    last = opening
    failure: BaseException | None = None
    disconnected = False
    try:
        if first is not None:
            yield event(first)
        if opening.text or opening.finish_reason:
            yield event(chunk(opening))
        async for delta in deltas:
            last = delta
            if delta.text or delta.finish_reason:
                yield event(chunk(delta))
        if include_usage:
            yield event(usage_chunk(usage_of(prompt_ids, last)))
    except LoopFailed as error:
        failure = error
        yield event(error_body(503, f"{error}; retry later."))
    except GenerationFailed as error:
        failure = error
        yield event(error_body(500, f"generation failed: {error}"))
    except (asyncio.CancelledError, GeneratorExit):
        disconnected = True  # the server cancels or closes the stream when the client leaves
        raise
    except BaseException as error:
        failure = error
        raise
    finally:
        await deltas.aclose()
        genai_spans.end_generation(span, stats, failure, disconnected)
    yield "data: [DONE]\n\n"
