"""Exchange records, captured content and feedback, in Redis (docs/feedback.md).

Every request closed by the pipeline leaves one compact record in the stream
`gw:exchanges` (no content: ids, model, route, status, latency, tokens, cache result,
trace id), bounded by length (exact `MAXLEN`) and age (`MINID`). Content (the messages
and the answer) is kept only for sampled requests (`GATEWAY_CAPTURE_SAMPLE_RATE`, or a
key's own rate in `GATEWAY_CAPTURE_KEY_RATES`), in `gw:capture:<request id>` with a TTL,
personal data redacted first when a PII policy is on. Feedback goes to
`gw:feedback:<request id>` (the request's own entries) and the bounded stream
`gw:feedback` (newest first, for `/admin/exchanges`).

Request ids start with the millisecond they were made (hex), so a record is found
with one bounded `XRANGE` from that moment on, without an index key per request.
Appends run in the background after the answer and never fail a request.
"""

from __future__ import annotations

import random
import secrets
import time
from dataclasses import dataclass
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Counter

from gateway.guardrails import redact_pii
from gateway.keys import KeyRecord
from gateway.redis_store import RedisStore
from gateway.settings import Settings

EXCHANGES = "gw:exchanges"
FEEDBACK = "gw:feedback"
CAPTURE_PREFIX = "gw:capture:"
FEEDBACK_PREFIX = "gw:feedback:"
FEEDBACK_PER_REQUEST = 20  # entries kept per request (a client cannot grow one list)
PAGE = 500


def new_request_id(now: float | None = None) -> str:
    """32 hex characters: 12 of the creation time in milliseconds, 20 random."""
    ms = int((time.time() if now is None else now) * 1000)
    return f"{ms:012x}{secrets.token_hex(10)}"


def request_id_ms(request_id: str) -> int | None:
    """The millisecond a gateway-made request id was created (None: not one of ours)."""
    if len(request_id) != 32:
        return None
    try:
        return int(request_id[:12], 16)
    except ValueError:
        return None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _fields(raw: dict[Any, Any]) -> dict[str, str]:
    return {_text(k): _text(v) for k, v in raw.items()}


@dataclass(frozen=True)
class Capture:
    """The content of one sampled exchange: the request's input and the answer text."""

    input: Any
    output: str | None


class LoopMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.feedback = Counter(
            "gateway_feedback_total",
            "Feedback received, by rating (up|down|neutral).",
            ["rating"],
            registry=registry,
        )
        self.records_dropped = Counter(
            "gateway_exchange_records_dropped_total",
            "Exchange records not written (Redis unavailable or failing).",
            registry=registry,
        )
        self.captures = Counter(
            "gateway_captures_total", "Exchanges whose content was captured.", registry=registry
        )


class ExchangeLog:
    """Writes and reads exchange records, captures and feedback (one Redis client)."""

    def __init__(self, settings: Settings, store: RedisStore, metrics: LoopMetrics) -> None:
        self.settings = settings
        self.store = store
        self.metrics = metrics
        self.enabled = settings.exchange_log_enabled
        self.redacts = settings.pii_input != "off" or settings.pii_output != "off"

    # writing ----------------------------------------------------------------------------
    def sampled(self, key: KeyRecord) -> bool:
        """Whether this request's content is captured (the key's rate, else the global)."""
        if not self.enabled:
            return False
        rates = self.settings.capture_key_rates
        rate = rates.get(key.id, rates.get(key.name, self.settings.capture_sample_rate))
        return rate > 0 and (rate >= 1 or random.random() < rate)

    async def append(self, record: dict[str, str], capture: Capture | None) -> None:
        """Add the record (and its capture); never raises: a failure is counted."""
        try:
            await self.store.call(lambda r: self._write(r, record, capture))
        except Exception:  # Redis down or failing: bookkeeping never surfaces in a request
            self.metrics.records_dropped.inc()

    async def _write(self, redis: Any, record: dict[str, str], capture: Capture | None) -> None:
        settings = self.settings
        async with redis.pipeline(transaction=False) as pipe:
            if capture is not None:
                name = CAPTURE_PREFIX + record["request_id"]
                pipe.hset(name, mapping=self._capture_fields(record, capture))
                pipe.expire(name, settings.capture_ttl_seconds)
                record = {**record, "captured": "1"}
            self._add_bounded(pipe, EXCHANGES, record)
            await pipe.execute()
        if capture is not None:
            self.metrics.captures.inc()

    def _add_bounded(self, pipe: Any, stream: str, fields: dict[str, str]) -> None:
        settings = self.settings
        pipe.xadd(stream, fields, maxlen=settings.exchange_stream_max_len, approximate=False)
        oldest = int((time.time() - settings.exchange_max_age_seconds) * 1000)
        pipe.xtrim(stream, minid=f"{oldest}-0", approximate=True)

    def _capture_fields(self, record: dict[str, str], capture: Capture) -> dict[str, str]:
        captured_input, output = capture.input, capture.output
        if self.redacts:
            captured_input = _redacted(captured_input)
            output = redact_pii(output) if output else output
        return {
            "key_id": record["key_id"],
            "key_name": record["key_name"],
            "input": orjson.dumps(captured_input).decode(),
            "output": output or "",
        }

    # reading ----------------------------------------------------------------------------
    async def find(self, request_id: str) -> dict[str, str] | None:
        """The exchange record of a request id (None: unknown, expired or trimmed)."""
        start = request_id_ms(request_id)
        if start is None:
            return None
        window_ms = int((self.settings.read_timeout_seconds + 120) * 1000)
        low, high = f"{start}-0", f"{start + window_ms}-0"
        while True:
            batch = await self.store.call(_page(EXCHANGES, low, high))
            for _, raw in batch:
                fields = _fields(raw)
                if fields.get("request_id") == request_id:
                    return fields
            if len(batch) < PAGE:
                return None
            low = "(" + _text(batch[-1][0])

    async def add_feedback(self, record: dict[str, str], entry: dict[str, Any]) -> None:
        name = FEEDBACK_PREFIX + record["request_id"]
        ttl = self.settings.exchange_max_age_seconds
        encoded = orjson.dumps(entry).decode()
        fields = {**record, "entry": encoded}  # the record travels with its feedback

        async def write(redis: Any) -> None:
            async with redis.pipeline(transaction=False) as pipe:
                pipe.rpush(name, encoded)
                pipe.ltrim(name, -FEEDBACK_PER_REQUEST, -1)
                pipe.expire(name, ttl)
                self._add_bounded(pipe, FEEDBACK, fields)
                await pipe.execute()

        await self.store.call(write)

    async def feedback_for(self, request_id: str) -> list[dict[str, Any]]:
        raw = await self.store.call(lambda r: r.lrange(FEEDBACK_PREFIX + request_id, 0, -1))
        return [orjson.loads(item) for item in raw]

    async def details(self, request_ids: list[str]) -> list[tuple[list[Any], Any]]:
        """(feedback entries, capture or None) of each request, in one round trip."""

        async def read(redis: Any) -> list[Any]:
            async with redis.pipeline(transaction=False) as pipe:
                for request_id in request_ids:
                    pipe.lrange(FEEDBACK_PREFIX + request_id, 0, -1)
                    pipe.hgetall(CAPTURE_PREFIX + request_id)
                results: list[Any] = await pipe.execute()
                return results

        raw = await self.store.call(read) if request_ids else []
        out = []
        for feedback, capture in zip(raw[::2], raw[1::2], strict=True):
            fields = _fields(capture) if capture else None
            content = None
            if fields is not None:
                content = {"input": orjson.loads(fields["input"]), "output": fields["output"]}
            out.append(([orjson.loads(item) for item in feedback], content))
        return out

    async def recent(self, stream: str, since_ms: int, limit: int) -> list[dict[str, str]]:
        """Entries of a stream from newest back to `since_ms`, at most `limit`."""
        high, found = "+", list[dict[str, str]]()
        while len(found) < limit:
            batch = await self.store.call(_page(stream, f"{since_ms}-0", high, newest_first=True))
            found += [_fields(raw) for _, raw in batch]
            if len(batch) < PAGE:
                break
            high = "(" + _text(batch[-1][0])
        return found


def _page(stream: str, low: str, high: str, newest_first: bool = False) -> Any:
    """One page of a stream between two ids, as a command for `RedisStore.call`."""

    def command(redis: Any) -> Any:
        if newest_first:
            return redis.xrevrange(stream, high, low, count=PAGE)
        return redis.xrange(stream, low, high, count=PAGE)

    return command


def _redacted(value: Any) -> Any:
    """Redact personal data in every string of a captured input (messages or prompt)."""
    if isinstance(value, str):
        return redact_pii(value)
    if isinstance(value, list):
        return [_redacted(v) for v in value]
    if isinstance(value, dict):
        return {k: _redacted(v) for k, v in value.items()}
    return value
