"""The console's pages: thin handlers that read the gateway's state and render."""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates
from starlette.responses import FileResponse, RedirectResponse, Response

from gateway.console.charts import hourly_chart
from gateway.console.session import SECURITY_HEADERS, Sessions
from gateway.redis_store import RedisUnavailable
from gateway.state import GatewayState
from gateway.usage import budget_states, usage_report

HERE = Path(__file__).parent
STATIC = {"console.css": "text/css", "console.js": "text/javascript"}
templates = Jinja2Templates(directory=str(HERE / "templates"))


class ConsoleRoute(APIRoute):
    """Every /ui response carries the CSP and the other security headers."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def with_headers(request: Request) -> Response:
            try:
                response = await handler(request)
            except RedisUnavailable:
                message = "Redis is unavailable; the console needs it. Retry shortly."
                response = render(request, "error.html", 503, signed_in=False, message=message)
            response.headers.update(SECURITY_HEADERS)
            return response

        return with_headers


routes = APIRouter(prefix="/ui", route_class=ConsoleRoute, include_in_schema=False)


def _state(request: Request) -> GatewayState:
    state: GatewayState = request.app.state.gateway
    return state


def _sessions(request: Request) -> Sessions:
    sessions: Sessions = request.app.state.console_sessions
    return sessions


def render(request: Request, name: str, status: int = 200, **context: Any) -> Response:
    sessions = _sessions(request)
    seed = sessions.csrf_seed(request)
    context.setdefault("signed_in", True)
    response = templates.TemplateResponse(
        request, name, {"csrf_token": sessions.csrf_token(seed), **context}, status_code=status
    )
    sessions.set_cookies(response, seed)
    return response


def _redirect(path: str) -> Response:
    return RedirectResponse(path, status_code=303)


async def _form(request: Request) -> dict[str, str]:
    """An urlencoded form as single values (the body limit already applies)."""
    parsed = parse_qs((await request.body()).decode(errors="replace"), keep_blank_values=True)
    return {name: values[-1] for name, values in parsed.items()}


async def _guard(request: Request, form: dict[str, str] | None = None) -> Response | None:
    """A response refusing the request (no session, bad CSRF token), or None."""
    if not await _sessions(request).valid(request):
        return _redirect("/ui")
    if form is not None and not _sessions(request).csrf_ok(request, form):
        return render(request, "error.html", 403, message="The form's CSRF token is invalid.")
    return None


@routes.get("/static/{name}")
async def static(name: str) -> Response:
    if name not in STATIC:
        return Response("not found", status_code=404)
    return FileResponse(HERE / "static" / name, media_type=STATIC[name])


@routes.get("")
async def home(request: Request) -> Response:
    if await _sessions(request).valid(request):
        return _redirect("/ui/keys")
    return render(request, "signin.html", signed_in=False)


@routes.post("/signin")
async def sign_in(request: Request) -> Response:
    form, sessions = await _form(request), _sessions(request)
    if not sessions.csrf_ok(request, form):
        return render(request, "error.html", 403, signed_in=False, message="Invalid CSRF token.")
    if not _state(request).keys.is_master(form.get("master_key", "")):
        return render(request, "signin.html", 401, signed_in=False, error="Wrong master key.")
    try:
        token = await sessions.start()
    except RedisUnavailable:
        return render(request, "signin.html", 503, signed_in=False, error="Redis is down.")
    response = _redirect("/ui/keys")
    sessions.set_cookies(response, sessions.csrf_seed(request), token)
    return response


@routes.post("/signout")
async def sign_out(request: Request) -> Response:
    form = await _form(request)
    refused = await _guard(request, form)
    if refused is not None:
        return refused
    await _sessions(request).end(request)
    response = _redirect("/ui")
    Sessions.clear(response)
    return response


@routes.get("/keys")
async def keys_page(request: Request) -> Response:
    refused = await _guard(request)
    if refused is not None:
        return refused
    return await _keys_view(request)


async def _keys_view(
    request: Request, new_key: str | None = None, error: str | None = None, status: int = 200
) -> Response:
    state = _state(request)
    records = await state.keys.list_records()
    budgets = await budget_states(state.store, records, await state.keys.teams())
    spent = {b["name"]: b for b in budgets if b["kind"] == "key"}
    return render(
        request,
        "keys.html",
        status,
        records=records,
        spent=spent,
        new_key=new_key,
        error=error,
        models=state.upstreams.model_names(),
    )


def _optional_int(form: dict[str, str], name: str) -> int | None:
    raw = form.get(name, "").strip()
    if not raw:
        return None
    value = int(raw)
    if value < 1:
        raise ValueError(f"{name} must be at least 1")
    return value


def _key_fields(form: dict[str, str]) -> dict[str, Any]:
    """The editable key fields of a form; raises ValueError with a readable message."""
    budget = form.get("budget", "").strip()
    window = form.get("budget_window", "monthly")
    if window not in ("daily", "weekly", "monthly"):
        raise ValueError("budget_window must be daily, weekly or monthly")
    if budget and float(budget) < 0:
        raise ValueError("budget must not be negative")
    return {
        "rpm": _optional_int(form, "rpm"),
        "tpm": _optional_int(form, "tpm"),
        "max_tokens": _optional_int(form, "max_tokens"),
        "team": form.get("team", "").strip() or None,
        "budget": float(budget) if budget else None,
        "budget_window": window,
    }


@routes.post("/keys")
async def create_key(request: Request) -> Response:
    form = await _form(request)
    refused = await _guard(request, form)
    if refused is not None:
        return refused
    name = form.get("name", "").strip()
    try:
        if not name or len(name) > 200:
            raise ValueError("a name of 1 to 200 characters is needed")
        fields = _key_fields(form)
    except ValueError as exc:
        return await _keys_view(request, error=f"Not created: {exc}.", status=400)
    models = [m for m in form.get("models", "").replace(",", " ").split() if m]
    api_key, _ = await _state(request).keys.create(name, models, **fields)
    return await _keys_view(request, new_key=api_key, status=201)


@routes.post("/keys/{key_id}/edit")
async def edit_key(request: Request, key_id: str) -> Response:
    form = await _form(request)
    refused = await _guard(request, form)
    if refused is not None:
        return refused
    try:
        fields = _key_fields(form)
    except ValueError as exc:
        return await _keys_view(request, error=f"Not changed: {exc}.", status=400)
    if await _state(request).keys.update(key_id, **fields) is None:
        return await _keys_view(request, error=f"No key {key_id}.", status=404)
    return _redirect("/ui/keys")


@routes.post("/keys/{key_id}/revoke")
async def revoke_key(request: Request, key_id: str) -> Response:
    form = await _form(request)
    refused = await _guard(request, form)
    if refused is not None:
        return refused
    await _state(request).keys.revoke(key_id)
    return _redirect("/ui/keys")


@routes.get("/usage")
async def usage_page(request: Request, hours: int = 24) -> Response:
    refused = await _guard(request)
    if refused is not None:
        return refused
    state = _state(request)
    hours = max(1, min(hours, state.settings.usage_retention_hours))
    now = time.time()
    report = await usage_report(state.store, now - hours * 3600, now, hours + 1)
    records = await state.keys.list_records()
    budgets = await budget_states(state.store, records, await state.keys.teams())
    return render(
        request,
        "usage.html",
        report=report,
        hours=hours,
        budgets=budgets,
        spend_chart=hourly_chart(report["hours"], "spend", "Spend per hour"),
        token_chart=hourly_chart(report["hours"], "total_tokens", "Tokens per hour"),
    )


@routes.get("/status")
async def status_page(request: Request) -> Response:
    refused = await _guard(request)
    if refused is not None:
        return refused
    state = _state(request)
    probes = await state.upstreams.probe()
    upstreams = [
        {
            "name": u.name,
            "models": ", ".join(state.upstreams.served_by(u)),
            "up": probes.get(u.name, False),
            "breaker": u.breaker.state,
            "in_flight": u.in_flight,
        }
        for u in state.upstreams.upstreams
    ]
    return render(
        request,
        "status.html",
        upstreams=upstreams,
        redis_up=await state.store.ping(),
        cache=cache_rates(state),
    )


def cache_rates(state: GatewayState) -> list[dict[str, Any]]:
    """Hit rate per cache kind since this replica started (from its own counters)."""
    counts: dict[str, dict[str, float]] = {}
    for metric in state.metrics.cache.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total"):
                results = counts.setdefault(sample.labels["kind"], {})
                results[sample.labels["result"]] = sample.value
    rows = []
    for name, results in sorted(counts.items()):
        looked = results.get("hit", 0) + results.get("miss", 0)
        rate = results.get("hit", 0) / looked if looked else None
        rows.append({"kind": name, "hits": results.get("hit", 0), "lookups": looked, "rate": rate})
    return rows


@routes.get("/playground")
async def playground_page(request: Request) -> Response:
    refused = await _guard(request)
    if refused is not None:
        return refused
    state = _state(request)
    return render(
        request,
        "playground.html",
        models=state.upstreams.model_names(),
        rag=getattr(request.app.state, "rag", None) is not None,
    )
