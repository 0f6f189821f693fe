"""The quality loop's routes: `POST|GET /v1/feedback` (a key rates its own requests) and
`GET /admin/exchanges` (master key: records, captures and feedback, filtered), read by
`python -m evals datasets from-feedback` and `python -m evals online`.

Feedback names a request by the id the gateway returned in `x-request-id`. It is kept
with the exchange (exchange_log.py), counted in `gateway_feedback_total{rating}` and
sent as a `gen_ai.evaluation.result` event on the request's own trace.
"""

from __future__ import annotations

import re
import time
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from pydantic import BaseModel, ConfigDict, Field, model_validator

from gateway.auth import ApiKey
from gateway.body_limit import documented_body, json_body
from gateway.deps import StateDep
from gateway.errors import GatewayError
from gateway.exchange_log import EXCHANGES, FEEDBACK, ExchangeLog
from gateway.keys import KeyRecord
from gateway.redis_store import RedisUnavailable
from gateway.tracing import tracer, tracing_requested

loop_routes = APIRouter()
DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)$")
UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
Tag = Annotated[str, Field(min_length=1, max_length=64)]


class FeedbackIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(min_length=1, max_length=64)
    rating: Literal["up", "down"] | None = None
    score: float | None = Field(default=None, ge=-1, le=1)
    comment: str | None = Field(default=None, max_length=4000)
    correction: str | None = Field(default=None, max_length=20000)
    tags: list[Tag] = Field(default_factory=list, max_length=20)

    @model_validator(mode="after")
    def _rated(self) -> FeedbackIn:
        if self.rating is None and self.score is None:
            raise ValueError("give a rating (up|down) or a score in [-1, 1]")
        return self

    @property
    def label(self) -> str:
        """up|down|neutral: the rating, or the score's sign."""
        if self.rating is not None:
            return self.rating
        assert self.score is not None
        return "up" if self.score > 0 else "down" if self.score < 0 else "neutral"


def _json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


async def _redis(awaitable: Any) -> Any:
    try:
        return await awaitable
    except RedisUnavailable:
        raise GatewayError(
            503, "Redis is unavailable; feedback cannot be read or kept now.", code="unavailable"
        ) from None


async def _owned_record(log: ExchangeLog, request_id: str, key: KeyRecord) -> dict[str, str]:
    record = await _redis(log.find(request_id))
    if record is None:
        raise GatewayError(
            404,
            f"No exchange with request id '{request_id}' (unknown, or past retention).",
            param="request_id",
            code="request_not_found",
        )
    if record["key_id"] != key.id:
        raise GatewayError(
            403, "This key did not make that request.", param="request_id", code="not_your_request"
        )
    return record


@loop_routes.post(
    "/v1/feedback",
    tags=["feedback"],
    status_code=201,
    openapi_extra=documented_body(FeedbackIn),
)
async def post_feedback(
    key: ApiKey, state: StateDep, body: Annotated[FeedbackIn, Depends(json_body(FeedbackIn))]
) -> Response:
    """Rate an answer by its `x-request-id`: thumbs up/down or a score, with an optional
    comment, a correction (the answer it should have been) and tags."""
    log = state.exchange_log
    record = await _owned_record(log, body.request_id, key)
    score = body.score if body.score is not None else (1.0 if body.rating == "up" else -1.0)
    entry = {
        "request_id": body.request_id,
        "key_id": key.id,
        "rating": body.label,
        "score": score,
        "comment": body.comment,
        "correction": body.correction,
        "tags": body.tags,
        "at": round(time.time(), 3),
    }
    await _redis(log.add_feedback(record, entry))
    state.loop_metrics.feedback.labels(body.label).inc()
    _emit_evaluation_event(record, entry)
    return _json(entry, 201)


def _emit_evaluation_event(record: dict[str, str], entry: dict[str, Any]) -> None:
    """A `gen_ai.evaluation.result` event in a span under the request's own span."""
    if not (tracing_requested() and record.get("trace_id") and record.get("span_id")):
        return
    parent = SpanContext(
        int(record["trace_id"], 16),
        int(record["span_id"], 16),
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
    )
    context = trace.set_span_in_context(NonRecordingSpan(parent))
    span = tracer().start_span("gen_ai.evaluation user_feedback", context=context)
    attributes: dict[str, Any] = {
        "gen_ai.evaluation.name": "user_feedback",
        "gen_ai.evaluation.score.value": entry["score"],
        "gen_ai.evaluation.score.label": entry["rating"],
        "gateway.request_id": entry["request_id"],
    }
    if entry["comment"]:
        attributes["gen_ai.evaluation.explanation"] = entry["comment"]
    span.add_event("gen_ai.evaluation.result", attributes)
    span.end()


@loop_routes.get("/v1/feedback", tags=["feedback"])
async def get_feedback(
    key: ApiKey, state: StateDep, request_id: Annotated[str, Query(min_length=1, max_length=64)]
) -> Response:
    """This key's feedback on one of its requests."""
    await _owned_record(state.exchange_log, request_id, key)
    entries = await _redis(state.exchange_log.feedback_for(request_id))
    return _json({"data": [e for e in entries if e.get("key_id") == key.id]})


def since_ms(since: str | None) -> int:
    """`7d`, `12h`, `30m`, `90s` or plain seconds ago, as a stream id time (0: all)."""
    if not since:
        return 0
    match = DURATION.match(since.strip())
    if match is None:
        raise GatewayError(400, "since: use a duration such as 7d, 12h, 30m or 90s.", param="since")
    seconds = float(match.group(1)) * UNIT_SECONDS[match.group(2)]
    return max(0, int((time.time() - seconds) * 1000))


class ExchangeFilter(BaseModel):
    since: str | None = None
    key: str | None = None  # name or id
    rating: Literal["up", "down", "neutral"] | None = None
    feedback: bool | None = None  # only exchanges with (true) or without (false) feedback
    captured: bool | None = None
    limit: int = Field(default=100, ge=1, le=5000)

    def wants_key(self, item: dict[str, Any]) -> bool:
        return self.key is None or self.key in (item.get("key_id"), item.get("key_name"))


async def exchange_reader(key: ApiKey, state: StateDep) -> KeyRecord:
    """The master key, or a key named in GATEWAY_EXCHANGE_READER_KEYS (the online job)."""
    if not (key.is_master or key.name in state.settings.exchange_reader_keys):
        raise GatewayError(403, "This endpoint needs the master key.", code="forbidden")
    return key


@loop_routes.get("/admin/exchanges", tags=["admin"])
async def list_exchanges(
    _: Annotated[KeyRecord, Depends(exchange_reader)],
    state: StateDep,
    query: Annotated[ExchangeFilter, Query()],
) -> Response:
    """Exchange records, newest first, with their captured content and feedback."""
    log, start = state.exchange_log, since_ms(query.since)
    from_feedback = query.rating is not None or query.feedback is True
    entries = await _redis(
        log.recent(FEEDBACK if from_feedback else EXCHANGES, start, query.limit * 4)
    )
    items: dict[str, dict[str, Any]] = {}
    for entry in entries:
        if entry["request_id"] in items or not query.wants_key(entry):
            continue
        if query.captured is not None and (entry.get("captured") == "1") != query.captured:
            continue
        entry.pop("entry", None)
        items[entry["request_id"]] = entry
    data = await _redis(_with_content(log, list(items.values()), query))
    return _json({"data": data[: query.limit]})


async def _with_content(
    log: ExchangeLog, items: list[dict[str, Any]], query: ExchangeFilter
) -> list[dict[str, Any]]:
    out = []
    details = await log.details([item["request_id"] for item in items])
    for item, (feedback, content) in zip(items, details, strict=True):
        if query.feedback is False and feedback:
            continue
        if query.rating is not None:
            feedback = [f for f in feedback if f.get("rating") == query.rating]
            if not feedback:
                continue
        item["feedback"], item["content"] = feedback, content
        out.append(item)
        if len(out) >= query.limit:
            break
    return out
