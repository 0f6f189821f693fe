"""FastAPI application of the transformers backend."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

from fastapi import FastAPI

from model_service import __version__
from model_service.api import router
from model_service.body_limit import BodyLimit
from model_service.errors import install_error_handlers
from model_service.lora_api import router as lora_router
from model_service.metrics import ServiceMetrics
from model_service.runtime import Runtime
from model_service.settings import ModelSettings
from model_service.tracing import configure_tracing, instrument


def create_app(
    settings: ModelSettings, on_load_failure: Callable[[], None] | None = None
) -> FastAPI:
    """The app loads its model in the background once it starts serving. Traced when the
    `OTEL_*` variables ask for it (see model_service.tracing)."""
    runtime = Runtime(settings, ServiceMetrics(settings.model_name))
    runtime.tracing = configure_tracing("llm" if settings.task == "generate" else "embedder")

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loading = asyncio.create_task(runtime.load_in_background(on_load_failure or (lambda: None)))
        try:
            yield
        finally:
            loading.cancel()
            runtime.close()

    app = FastAPI(title="model-service", version=__version__, lifespan=lifespan)
    app.state.runtime = runtime
    install_error_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=settings.max_request_bytes)
    app.include_router(router)
    # Documented only when on, as vLLM does; off, the routes answer 404 naming the switch.
    app.include_router(lora_router, include_in_schema=settings.allow_runtime_lora_updating)
    if runtime.tracing:
        instrument(app)
    return app
