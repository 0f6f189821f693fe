"""OpenAI-compatible routes of the transformers backend (the surface vLLM's server has)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

from model_service import admission, genai_spans, grammar, tools
from model_service.choices import Generated, collect, merged, open_streams, per_choice
from model_service.embedding import encode_vector, shorten
from model_service.errors import APIError, bad_request, error_body
from model_service.formatting import ChatFormatter, CompletionFormatter
from model_service.generation import (
    Delta,
    GenerationEngine,
    GenerationFailed,
    LoopFailed,
    QueueFull,
    RequestStats,
)
from model_service.protocol import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionRequest,
    CompletionResponse,
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
    """The base model, then each loaded adapter with `parent` set to the base (as vLLM)."""
    engine = runtime.engine
    max_model_len = engine.max_model_len if engine else 0
    base = ModelCard(
        id=runtime.model_name,
        created=runtime.created,
        root=str(runtime.model_path or runtime.settings.source),
        max_model_len=max_model_len,
    )
    adapters = [
        ModelCard(
            id=info.name,
            created=runtime.created,
            root=str(info.path),
            parent=runtime.model_name,
            max_model_len=max_model_len,
        )
        for info in (runtime.adapters.adapters() if runtime.adapters else [])
    ]
    return ModelList(data=[base, *adapters])


@router.post("/v1/chat/completions", response_model=None)
async def chat_completions(
    body: ChatCompletionRequest, request: Request, runtime: RuntimeDep
) -> Response | ChatCompletionResponse:
    model, engine = runtime.generator(body.model)
    if body.top_logprobs and not body.logprobs:
        raise bad_request("top_logprobs needs logprobs set to true", "top_logprobs")
    limits = admission.limits_for(runtime.settings, engine)
    plan = tool_plan(body)
    prompt_ids = await admission.chat_prompt_ids(body, engine, limits, plan.template_tools)
    params = sampling_params(body, len(prompt_ids), engine.max_model_len)
    admission.check_request(body, params, len(prompt_ids), limits)
    tool_grammar = plan.grammar()
    source = (tool_grammar, "tools") if tool_grammar else request_grammar(body)
    params = await with_grammar(engine, params, *source)
    request_id, created = new_id("chatcmpl"), now()
    span = genai_spans.start(runtime.tracing, "chat", model, request_id, body)
    formatter = ChatFormatter(
        request_id, created, model, plan, engine.decode_token, bool(body.logprobs)
    )
    choices = per_choice(params, body.n)

    if body.stream:

        def usage_chunk(usage: Usage) -> ChatCompletionChunk:
            return ChatCompletionChunk(
                id=request_id, created=created, model=model, choices=[], usage=usage
            )

        events = await stream_events(
            engine, prompt_ids, choices, formatter, usage_chunk, body.include_usage, span
        )
        return StreamingResponse(events, media_type="text/event-stream", headers=SSE_HEADERS)

    results = await complete_all(request, engine, prompt_ids, choices, span)
    return ChatCompletionResponse(
        id=request_id,
        created=created,
        model=model,
        choices=[formatter.choice(i, r) for i, r in enumerate(results)],
        usage=usage_of(prompt_ids, [r.last for r in results]),
    )


@router.post("/v1/completions", response_model=None)
async def completions(
    body: CompletionRequest, request: Request, runtime: RuntimeDep
) -> Response | CompletionResponse:
    model, engine = runtime.generator(body.model)
    limits = admission.limits_for(runtime.settings, engine)
    prompt_ids = await admission.completion_prompt_ids(body, engine, limits)
    params = sampling_params(body, len(prompt_ids), engine.max_model_len)
    admission.check_request(body, params, len(prompt_ids), limits)
    params = await with_grammar(engine, params, *request_grammar(body))
    request_id, created = new_id("cmpl"), now()
    span = genai_spans.start(runtime.tracing, "text_completion", model, request_id, body)
    echo = await asyncio.to_thread(engine.decode_text, prompt_ids) if body.echo else None
    formatter = CompletionFormatter(
        request_id, created, model, engine.decode_token, body.logprobs is not None, echo
    )
    choices = per_choice(params, body.n)

    if body.stream:

        def usage_chunk(usage: Usage) -> CompletionResponse:
            return CompletionResponse(
                id=request_id, created=created, model=model, choices=[], usage=usage
            )

        events = await stream_events(
            engine, prompt_ids, choices, formatter, usage_chunk, body.include_usage, span
        )
        return StreamingResponse(events, media_type="text/event-stream", headers=SSE_HEADERS)

    results = await complete_all(request, engine, prompt_ids, choices, span)
    return CompletionResponse(
        id=request_id,
        created=created,
        model=model,
        choices=[formatter.choice(i, r) for i, r in enumerate(results)],
        usage=usage_of(prompt_ids, [r.last for r in results]),
    )


@router.post("/v1/embeddings")
async def embeddings(body: EmbeddingRequest, runtime: RuntimeDep) -> EmbeddingResponse:
    runtime.check_model(body.model)
    engine = runtime.embedder()
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
    full = len(result.vectors[0]) if result.vectors else 0
    if body.dimensions is not None and not 1 <= body.dimensions <= full:
        refused = bad_request(f"dimensions must be between 1 and {full}", "dimensions")
        genai_spans.end_embedding(span, None, None, refused)
        raise refused
    vectors = [shorten(v, body.dimensions) for v in result.vectors]
    dimensions = len(vectors[0]) if vectors else None
    genai_spans.end_embedding(span, result.prompt_tokens, dimensions)
    return EmbeddingResponse(
        id=response_id,
        created=now(),
        model=runtime.model_name,
        data=[
            EmbeddingData(index=i, embedding=encode_vector(v, body.encoding_format))
            for i, v in enumerate(vectors)
        ],
        usage=Usage(prompt_tokens=result.prompt_tokens, total_tokens=result.prompt_tokens),
    )


# -- request checks ------------------------------------------------------------------------


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
        presence_penalty=body.presence_penalty or 0.0,
        frequency_penalty=body.frequency_penalty or 0.0,
        repetition_penalty=body.repetition_penalty or 1.0,
        logit_bias=logit_bias(body.logit_bias),
        logprobs=body.logprobs_count(),
    )


def logit_bias(bias: dict[str, float] | None) -> tuple[tuple[int, float], ...]:
    """OpenAI's `logit_bias`: token ids (as strings) to a bias in [-100, 100]."""
    pairs = []
    for key, value in (bias or {}).items():
        if not key.lstrip("-").isdigit() or int(key) < 0:
            raise bad_request(f"logit_bias keys must be token ids, got {key!r}", "logit_bias")
        if not -100 <= value <= 100:
            raise bad_request(f"logit_bias values lie in [-100, 100], not {value}", "logit_bias")
        pairs.append((int(key), float(value)))
    return tuple(pairs)


def tool_plan(body: ChatCompletionRequest) -> tools.ToolPlan:
    try:
        return tools.plan(body.tools, body.tool_choice, body.parallel_tool_calls)
    except tools.ToolError as error:
        raise bad_request(str(error), error.param) from error


def request_grammar(body: SamplingFields) -> tuple[str | None, str]:
    """The grammar of `structured_outputs` or `response_format`, and the field it came from."""
    try:
        if body.structured_outputs:
            text = grammar.from_structured_outputs(body.structured_outputs)
            return text, "structured_outputs"
        return grammar.from_response_format(body.response_format), "response_format"
    except grammar.GrammarError as error:
        raise bad_request(str(error), error.param) from error


async def with_grammar(
    engine: GenerationEngine, params: SamplingParams, text: str | None, param: str
) -> SamplingParams:
    if text is None:
        return params
    try:
        matcher = await engine.compile_grammar(text, param)
    except grammar.GrammarError as error:
        raise bad_request(str(error), error.param) from error
    return dataclasses.replace(params, grammar=matcher)


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


def usage_of(prompt_ids: list[int], lasts: list[Delta]) -> Usage:
    prompt = len(prompt_ids)
    completion = sum(last.completion_tokens for last in lasts)
    return Usage(
        prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion
    )


# -- running a generation ------------------------------------------------------------------


def queue_full(error: QueueFull) -> APIError:
    return APIError(
        503, f"The server is at capacity ({error}); retry later.", headers={"retry-after": "1"}
    )


def loop_failed(error: LoopFailed) -> APIError:
    return APIError(503, f"{error}; retry later.", headers={"retry-after": "1"})


async def complete_all(
    request: Request,
    engine: GenerationEngine,
    prompt_ids: list[int],
    params: list[SamplingParams],
    span: Span | None = None,
) -> list[Generated]:
    """Every choice to completion, side by side; one failing ends them all."""
    tasks = [
        asyncio.ensure_future(complete(request, engine, prompt_ids, p, span if i == 0 else None))
        for i, p in enumerate(params)
    ]
    try:
        return list(await asyncio.gather(*tasks))
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def complete(
    request: Request,
    engine: GenerationEngine,
    prompt_ids: list[int],
    params: SamplingParams,
    span: Span | None = None,
) -> Generated:
    """Run to completion; stop (and free the slot) if the client goes away. Ends `span`."""
    stats = RequestStats()
    deltas = engine.generate(prompt_ids, params, stats)
    task = asyncio.ensure_future(collect(deltas))
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
    params: list[SamplingParams],
    formatter: ChatFormatter | CompletionFormatter,
    usage_chunk: Callable[[Usage], BaseModel],
    include_usage: bool,
    span: Span | None = None,
) -> AsyncIterator[str]:
    """SSE events; admission happens before the 200 so a full queue is still a 503.
    `span` ends with the stream: at its end, on an error or when the client goes away."""
    stats = [RequestStats() for _ in params]
    try:
        streams = await open_streams(engine, prompt_ids, params, stats)
    except QueueFull as error:
        genai_spans.end_generation(span, stats[0], error)
        raise queue_full(error) from error
    except LoopFailed as error:
        genai_spans.end_generation(span, stats[0], error)
        raise loop_failed(error) from error
    except BaseException as error:
        genai_spans.end_generation(span, stats[0], error)
        raise
    return _sse(streams, prompt_ids, formatter, usage_chunk, include_usage, span, stats[0])


def sse_event(payload: BaseModel | dict[str, Any]) -> str:
    data = payload if isinstance(payload, dict) else payload.model_dump()
    if data.get("usage", 0) is None:
        del data["usage"]
    for choice in data.get("choices", []):
        if "delta" in choice:
            choice["delta"] = {k: v for k, v in choice["delta"].items() if v is not None}
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


async def _sse(
    streams: list[tuple[AsyncGenerator[Delta, None], Delta]],
    prompt_ids: list[int],
    formatter: ChatFormatter | CompletionFormatter,
    usage_chunk: Callable[[Usage], BaseModel],
    include_usage: bool,
    span: Span | None,
    stats: RequestStats,
) -> AsyncIterator[str]:
    lasts = [opening for _, opening in streams]
    failure: BaseException | None = None
    disconnected = False
    deltas = merged(streams)
    try:
        for index in range(len(streams)):
            opening = formatter.opening(index)
            if opening is not None:
                yield sse_event(opening)
        async for index, delta in deltas:
            lasts[index] = delta
            payload = formatter.chunk(index, delta)
            if payload is not None:
                yield sse_event(payload)
        if include_usage:
            yield sse_event(usage_chunk(usage_of(prompt_ids, lasts)))
    except LoopFailed as error:
        failure = error
        yield sse_event(error_body(503, f"{error}; retry later."))
    except GenerationFailed as error:
        failure = error
        yield sse_event(error_body(500, f"generation failed: {error}"))
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
