"""HTTP routes: the OpenAI-compatible API, health, readiness, metrics, key admin."""

from __future__ import annotations

import math
import re
import time
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field

from gateway.auth import ApiKey, MasterKey
from gateway.body_limit import documented_body, json_body
from gateway.deps import PipelineDep, StateDep
from gateway.errors import GatewayError
from gateway.http_responses import serve
from gateway.redis_store import RedisUnavailable
from gateway.route_adapters import CHAT, COMPLETION, EMBEDDING, RouteAdapter
from gateway.spend import BudgetWindow
from gateway.usage import budget_states, usage_report

routes = APIRouter()

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"description": "Invalid request"},
    401: {"description": "Missing or invalid API key"},
    403: {"description": "Key not allowed to use this model"},
    404: {"description": "Unknown model"},
    413: {"description": "Request body too large"},
    429: {"description": "Rate limited (see retry-after)"},
    502: {"description": "Upstream failed"},
    503: {"description": "Nothing can serve the request"},
    504: {"description": "Upstream timed out"},
}


def _body(route: RouteAdapter) -> dict[str, Any]:
    # The body is read and validated by the pipeline (so unknown fields pass through
    # unchanged); this only documents it.
    return documented_body(route.schema)


def _json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


@routes.post(
    "/v1/chat/completions",
    openapi_extra=_body(CHAT),
    responses=ERROR_RESPONSES,
    tags=["openai"],
)
async def chat_completions(request: Request, key: ApiKey, pipeline: PipelineDep) -> Response:
    return await serve(request, key, pipeline, CHAT)


@routes.post(
    "/v1/completions",
    openapi_extra=_body(COMPLETION),
    responses=ERROR_RESPONSES,
    tags=["openai"],
)
async def completions(request: Request, key: ApiKey, pipeline: PipelineDep) -> Response:
    return await serve(request, key, pipeline, COMPLETION)


@routes.post(
    "/v1/embeddings",
    openapi_extra=_body(EMBEDDING),
    responses=ERROR_RESPONSES,
    tags=["openai"],
)
async def embeddings(request: Request, key: ApiKey, pipeline: PipelineDep) -> Response:
    return await serve(request, key, pipeline, EMBEDDING)


@routes.get("/v1/models", tags=["openai"], responses={401: ERROR_RESPONSES[401]})
async def list_models(key: ApiKey, state: StateDep) -> Response:
    """The models this key may use: configured, discovered (a LoRA adapter with its
    `parent`, the base model) and aliases."""
    pool = state.upstreams
    data = []
    for name in pool.model_names():
        if key.allows_model(name):
            card = {"id": name, "object": "model", "created": 0, "owned_by": "gateway"}
            parent = pool.parent_of(name)
            data.append(card if parent is None else {**card, "parent": parent})
    return _json({"object": "list", "data": data})


@routes.get("/healthz", tags=["health"])
async def healthz() -> Response:
    return _json({"status": "ok"})


@routes.get("/readyz", tags=["health"])
async def readyz(state: StateDep) -> Response:
    redis_ok = await state.store.ping()
    state.metrics.redis_up.set(1 if redis_ok else 0)
    upstreams = await state.upstreams.probe()
    body = {
        "status": "ok" if redis_ok else "degraded",
        "redis": "up" if redis_ok else "down",
        "upstreams": {name: "up" if ok else "down" for name, ok in upstreams.items()},
    }
    return _json(body, 200 if any(upstreams.values()) else 503)


@routes.get("/metrics", tags=["health"], include_in_schema=False)
async def metrics(state: StateDep) -> Response:
    registry = state.metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


MAX_LIMIT = 10**12
TEAM_NAME = re.compile(r"[\w.-]+")


class KeyCreate(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    models: list[str] = Field(default_factory=list)
    rpm: int | None = Field(default=None, ge=1, le=MAX_LIMIT)
    tpm: int | None = Field(default=None, ge=1, le=MAX_LIMIT)
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_LIMIT)
    expires_in_seconds: float | None = Field(default=None, gt=0, le=100 * 365 * 86400)
    collections: list[str] = Field(
        default_factory=list, description='RAG collections the key may read ("*": all).'
    )
    team: str | None = Field(default=None, min_length=1, max_length=200, pattern=r"^[\w.-]+$")
    budget: float | None = Field(default=None, ge=0, le=1e9)
    budget_window: BudgetWindow = "monthly"


class KeyUpdate(BaseModel):
    """The fields to change (absent: unchanged; null: removed)."""

    models: list[str] | None = None
    rpm: int | None = Field(default=None, ge=1, le=MAX_LIMIT)
    tpm: int | None = Field(default=None, ge=1, le=MAX_LIMIT)
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_LIMIT)
    team: str | None = Field(default=None, min_length=1, max_length=200, pattern=r"^[\w.-]+$")
    budget: float | None = Field(default=None, ge=0, le=1e9)
    budget_window: BudgetWindow | None = None


class TeamBudget(BaseModel):
    budget: float | None = Field(default=None, ge=0, le=1e9)
    budget_window: BudgetWindow = "monthly"


@routes.post(
    "/admin/keys",
    tags=["admin"],
    status_code=201,
    responses={403: ERROR_RESPONSES[403]},
    openapi_extra=documented_body(KeyCreate),
)
async def create_key(
    _: MasterKey, state: StateDep, body: Annotated[KeyCreate, Depends(json_body(KeyCreate))]
) -> Response:
    """Create a client key; the key is shown once in the response and stored hashed."""
    expires_at = time.time() + body.expires_in_seconds if body.expires_in_seconds else None
    api_key, record = await _key_store_call(
        state.keys.create(
            body.name,
            body.models,
            body.rpm,
            body.tpm,
            body.max_tokens,
            expires_at,
            body.collections,
            team=body.team,
            budget=body.budget,
            budget_window=body.budget_window,
        )
    )
    return _json({"key": api_key, **record.public()}, 201)


@routes.get("/admin/keys", tags=["admin"], responses={403: ERROR_RESPONSES[403]})
async def list_keys(_: MasterKey, state: StateDep) -> Response:
    records = await _key_store_call(state.keys.list_records())
    return _json({"data": [r.public() for r in records]})


@routes.delete("/admin/keys/{id_or_name}", tags=["admin"], responses={404: ERROR_RESPONSES[404]})
async def revoke_key(id_or_name: str, _: MasterKey, state: StateDep) -> Response:
    revoked = await _key_store_call(state.keys.revoke(id_or_name))
    if not revoked:
        raise GatewayError(404, f"No key with id or name '{id_or_name}'.", code="key_not_found")
    return _json({"revoked": [r.id for r in revoked]})


@routes.patch(
    "/admin/keys/{key_id}",
    tags=["admin"],
    responses={404: ERROR_RESPONSES[404]},
    openapi_extra=documented_body(KeyUpdate),
)
async def update_key(
    key_id: str,
    _: MasterKey,
    state: StateDep,
    body: Annotated[KeyUpdate, Depends(json_body(KeyUpdate))],
) -> Response:
    """Change a key's limits, budget or team; replicas see it within key_refresh_seconds."""
    changes = body.model_dump(exclude_unset=True)
    if "models" in changes:
        changes["models"] = tuple(changes["models"] or ())
    if changes.get("budget_window", "") is None:
        changes.pop("budget_window")
    record = await _key_store_call(state.keys.update(key_id, **changes))
    if record is None:
        raise GatewayError(404, f"No key with id '{key_id}'.", code="key_not_found")
    return _json(record.public())


@routes.put(
    "/admin/teams/{team}",
    tags=["admin"],
    responses={403: ERROR_RESPONSES[403]},
    openapi_extra=documented_body(TeamBudget),
)
async def set_team(
    team: str,
    _: MasterKey,
    state: StateDep,
    body: Annotated[TeamBudget, Depends(json_body(TeamBudget))],
) -> Response:
    """Set (or, with budget null, remove) a team's budget; its keys share it."""
    if not TEAM_NAME.fullmatch(team) or len(team) > 200:
        raise GatewayError(400, "team: letters, digits, '_', '.', '-' only.", code="invalid_team")
    await _key_store_call(state.keys.set_team_budget(team, body.budget, body.budget_window))
    return _json({"team": team, "budget": body.budget, "budget_window": body.budget_window})


@routes.get("/admin/usage", tags=["admin"], responses={403: ERROR_RESPONSES[403]})
async def usage(
    _: MasterKey, state: StateDep, since: str | None = None, until: str | None = None
) -> Response:
    """Tokens, requests and spend per key, team and model over [since, until] (unix
    seconds or ISO 8601; default the last 24 hours), from the hourly counters."""
    try:
        report = await usage_report(
            state.store,
            parse_time(since, "since"),
            parse_time(until, "until"),
            state.settings.usage_retention_hours,
        )
        records = await state.keys.list_records()
        report["budgets"] = await budget_states(state.store, records, await state.keys.teams())
    except ValueError as exc:
        raise GatewayError(400, str(exc), code="invalid_request") from None
    except RedisUnavailable:
        raise GatewayError(503, "Redis is unavailable; usage cannot be read now.") from None
    return _json(report)


def parse_time(value: str | None, name: str) -> float | None:
    """Unix seconds or an ISO 8601 time (UTC when it names no zone)."""
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except ValueError:
        pass
    else:
        if not math.isfinite(number):
            raise ValueError(f"{name}: expected a finite number of seconds")
        return number
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{name}: expected unix seconds or ISO 8601, got {value!r}") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


async def _key_store_call(awaitable: Any) -> Any:
    try:
        return await awaitable
    except RedisUnavailable:
        raise GatewayError(503, "Redis is unavailable; keys cannot be managed now.") from None
