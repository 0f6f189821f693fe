"""The FastAPI application: `create_app(settings, state)`.

The factory takes the settings, or a ready `GatewayState` (tests build one against a
real Redis and a scripted upstream); the lifespan starts and stops that state. An
optional part (RAG) is a module with `routes` and `create_runtime(state)`, present
only when the project was generated with it.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from gateway import __version__
from gateway.api import routes
from gateway.body_limit import DOCUMENTED_BODIES, BodyLimit
from gateway.errors import install_error_handlers
from gateway.feedback import loop_routes
from gateway.settings import Settings
from gateway.state import GatewayState
from gateway.tracing import tracing_requested

log = logging.getLogger("gateway")


def _optional_part(module: str) -> Any | None:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if exc.name and module.startswith(exc.name):
            return None  # the part was not generated (enable_rag=no)
        raise


def create_app(settings: Settings | None = None, state: GatewayState | None = None) -> FastAPI:
    state = state or GatewayState(settings or Settings())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await state.start()
        try:
            yield
        finally:
            await state.stop()

    app = FastAPI(
        title="Gateway",
        version=__version__,
        description="OpenAI-compatible gateway: keys, limits, caching, routing, guardrails.",
        lifespan=lifespan,
    )
    app.state.gateway = state
    install_error_handlers(app)
    app.add_middleware(BodyLimit, limit=state.settings.max_body_bytes)
    app.include_router(routes)
    if state.settings.console_enabled:
        _add_console(app, state)
    app.include_router(loop_routes)
    rag = _optional_part("gateway.rag.api")
    if rag is not None:
        app.state.rag = rag.create_runtime(state)
        app.include_router(rag.routes)
    _document_bodies(app)
    if tracing_requested():
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        FastAPIInstrumentor.instrument_app(app, excluded_urls="healthz,readyz,metrics")
    return app


def _add_console(app: FastAPI, state: GatewayState) -> None:
    from gateway.console import routes as console_routes
    from gateway.console.session import Sessions

    settings = state.settings
    app.state.console_sessions = Sessions(
        state.store,
        settings.master_key,
        settings.console_session_seconds,
        secure=settings.environment == "production",
    )
    app.include_router(console_routes)


def _document_bodies(app: FastAPI) -> None:
    """Add the request models (read by the routes themselves) to the OpenAPI schema."""
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = original()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in dict.fromkeys(DOCUMENTED_BODIES):
            model_schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(model_schema.pop("$defs", {}))
            components[model.__name__] = model_schema
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
