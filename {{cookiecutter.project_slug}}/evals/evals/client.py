"""Async client for the OpenAI-compatible endpoint: bounded concurrency, per-request
timeouts, retries with backoff on 429/5xx and transport errors, and a response cache."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from evals.cache import ResponseCache, cache_key
from evals.settings import EvalsSettings

RETRYABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})


class RequestFailed(Exception):
    """A request failed for good (not retryable, or retries exhausted)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class EndpointUnavailable(Exception):
    """The endpoint cannot be reached or refuses the configured key/model."""


class _Retryable(Exception):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass
class Generation:
    text: str
    usage: dict[str, int] = field(default_factory=dict)
    sources: list[dict[str, Any]] = field(default_factory=list)
    cached: bool = False
    retries: int = 0
    latency_s: float = 0.0
    #: OpenAI's `message.tool_calls`: `{"id", "type": "function", "function": {"name",
    #: "arguments"}}`, `arguments` a JSON string
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    finish_reason: str | None = None


def _error_message(response: httpx.Response) -> str:
    try:
        body = response.json()
        return str(body.get("error", {}).get("message") or body)
    except ValueError:
        return response.text[:300]


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return min(float(value), 30.0) if value is not None else None
    except ValueError:
        return None


def _is_retryable(exc: BaseException) -> bool:
    # A read timeout is not retried: the server may still be working on the request, and
    # sending it again only adds load to a server that is already too slow.
    if isinstance(exc, httpx.ReadTimeout):
        return False
    return isinstance(exc, _Retryable | httpx.TransportError)


class _WaitHonouringRetryAfter:
    """Exponential backoff with jitter, but never shorter than the server's retry-after."""

    def __init__(self) -> None:
        self._backoff = wait_exponential_jitter(initial=0.25, max=8.0, jitter=0.25)

    def __call__(self, state: RetryCallState) -> float:
        backoff = float(self._backoff(state))
        outcome = state.outcome
        exc = outcome.exception() if outcome is not None else None
        if isinstance(exc, _Retryable) and exc.retry_after is not None:
            return max(backoff, exc.retry_after)
        return backoff


class OpenAIClient:
    def __init__(self, settings: EvalsSettings, cache: ResponseCache | None = None) -> None:
        self.settings = settings
        self.base_url = settings.base_url.rstrip("/")
        self.cache = cache
        self._semaphore = asyncio.Semaphore(settings.concurrency)
        headers = {**settings.auth_headers()}
        if settings.bypass_gateway_cache:
            headers["x-cache-bypass"] = "1"
        self._http = httpx.AsyncClient(
            headers=headers,
            timeout=httpx.Timeout(settings.request_timeout_s, connect=10.0),
            limits=httpx.Limits(max_connections=max(settings.concurrency * 2, 8)),
        )
        self.requests_sent = 0
        self.retries = 0

    async def __aenter__(self) -> OpenAIClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._http.aclose()

    async def check_ready(self) -> list[str]:
        """Fail fast (before any scoring) when the endpoint is down or the key is wrong."""
        try:
            response = await self._http.get(f"{self.base_url}/models", timeout=15.0)
        except httpx.HTTPError as exc:
            raise EndpointUnavailable(f"cannot reach {self.base_url}: {exc!r}") from exc
        if response.status_code != 200:
            raise EndpointUnavailable(
                f"{self.base_url}/models answered {response.status_code}: "
                f"{_error_message(response)}"
            )
        return [str(m.get("id")) for m in response.json().get("data", [])]

    async def post_json(
        self, path: str, body: dict[str, Any], *, salt: str = "", base_url: str | None = None
    ) -> tuple[dict[str, Any], bool, int, float]:
        """POST with cache, retries and the concurrency limit.

        Returns (json body, cached, retries, latency seconds).
        """
        url = f"{(base_url or self.base_url).rstrip('/')}{path}"
        key = cache_key(url, str(body.get("model", "")), body, salt)
        if self.cache is not None and (hit := self.cache.get(key)) is not None:
            return hit, True, 0, 0.0
        attempts = 0
        started = time.perf_counter()
        async with self._semaphore:
            retrying = AsyncRetrying(
                retry=retry_if_exception(_is_retryable),
                stop=stop_after_attempt(self.settings.max_retries + 1),
                wait=_WaitHonouringRetryAfter(),
                reraise=True,
            )
            try:
                async for attempt in retrying:
                    with attempt:
                        attempts += 1
                        self.requests_sent += 1
                        data = await self._post_once(url, body)
            except _Retryable as exc:
                raise RequestFailed(f"{exc} (after {attempts} attempts)") from exc
            except httpx.HTTPError as exc:
                raise RequestFailed(f"{exc!r} (after {attempts} attempts)") from exc
        self.retries += attempts - 1
        if self.cache is not None:
            self.cache.put(key, data)
        return data, False, attempts - 1, time.perf_counter() - started

    async def _post_once(self, url: str, body: dict[str, Any]) -> dict[str, Any]:
        response = await self._http.post(url, json=body)
        if response.status_code in RETRYABLE_STATUS:
            raise _Retryable(
                f"{response.status_code}: {_error_message(response)}", _retry_after(response)
            )
        if response.status_code != 200:
            raise RequestFailed(
                f"{response.status_code}: {_error_message(response)}", response.status_code
            )
        data: dict[str, Any] = response.json()
        return data

    async def chat(
        self,
        messages: list[dict[str, Any]],
        *,
        model: str | None = None,
        salt: str = "",
        path: str = "/chat/completions",
        **params: Any,
    ) -> Generation:
        body = {"model": model or self.settings.model, "messages": messages, **params}
        data, cached, retries, latency = await self.post_json(path, body, salt=salt)
        return _generation_from(data, cached, retries, latency)

    async def embed(self, texts: list[str], *, model: str | None = None) -> list[list[float]]:
        body = {"model": model or self.settings.embedding_model, "input": texts}
        data, *_ = await self.post_json(
            "/embeddings", body, base_url=self.settings.embeddings_base_url
        )
        rows = sorted(data["data"], key=lambda row: int(row["index"]))
        return [list(map(float, row["embedding"])) for row in rows]


def _generation_from(
    data: dict[str, Any], cached: bool, retries: int, latency: float
) -> Generation:
    """Read an OpenAI chat completion; RAG answers may add `sources` (or use `answer`)."""
    text, tool_calls, finish_reason = "", [], None
    choices = data.get("choices") or []
    if choices:
        message = choices[0].get("message") or {}
        text = message.get("content") or ""
        tool_calls = [c for c in message.get("tool_calls") or [] if isinstance(c, dict)]
        finish_reason = choices[0].get("finish_reason")
    elif isinstance(data.get("answer"), str):
        text = data["answer"]
    usage = {k: int(v) for k, v in (data.get("usage") or {}).items() if isinstance(v, int)}
    sources = [s for s in data.get("sources") or [] if isinstance(s, dict)]
    return Generation(
        text=text,
        usage=usage,
        sources=sources,
        cached=cached,
        retries=retries,
        latency_s=latency,
        tool_calls=tool_calls,
        finish_reason=finish_reason,
    )
