"""The FastAPI application: `create_app(settings)`."""

from __future__ import annotations

import importlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

from gateway import __version__
from gateway.api import router as api_router
from gateway.errors import install_error_handlers
from gateway.schemas import ChatCompletionRequest, CompletionRequest, EmbeddingRequest
from gateway.settings import Settings
from gateway.state import GatewayState
from gateway.tracing import tracing_requested

log = logging.getLogger("gateway")
DOCUMENTED_BODIES: tuple[type[BaseModel], ...] = (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
)


def _optional_router(module: str) -> Any | None:
    try:
        return importlib.import_module(module).router
    except ImportError as exc:
        if exc.name and module.startswith(exc.name):
            return None  # the part was not generated (enable_rag=no)
        raise


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    state = GatewayState(settings)

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
    app.include_router(api_router)
    rag_router = _optional_router("gateway.rag.api")
    if rag_router is not None:
        app.include_router(rag_router)
    _document_bodies(app)
    if tracing_requested():
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        FastAPIInstrumentor.instrument_app(app, excluded_urls="healthz,readyz,metrics")
    return app


def _document_bodies(app: FastAPI) -> None:
    """Add the request models (read by the pipeline itself) to the OpenAPI schema."""
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = original()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in DOCUMENTED_BODIES:
            model_schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(model_schema.pop("$defs", {}))
            components[model.__name__] = model_schema
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
