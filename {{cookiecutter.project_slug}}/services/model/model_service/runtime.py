"""The loaded model of one server process, and its loading state.

The HTTP server answers while the model loads (`/health` 503, model routes 503), so
probes see progress instead of a closed port; a failed load stops the process.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from model_service.embedding import EmbeddingEngine
from model_service.errors import APIError
from model_service.generation import GenerationEngine
from model_service.metrics import ServiceMetrics
from model_service.settings import ModelSettings
from model_service.sources import resolve
from model_service.supervisor import LoopSupervisor

log = logging.getLogger(__name__)

Engine = GenerationEngine | EmbeddingEngine


@dataclass
class Runtime:
    settings: ModelSettings
    metrics: ServiceMetrics
    engine: Engine | None = None
    model_path: Path | None = None
    error: str | None = None
    created: int = field(default_factory=lambda: int(time.time()))
    tracing: bool = False  # GenAI spans per request (model_service.tracing)
    supervisor: LoopSupervisor | None = None

    @property
    def model_name(self) -> str:
        return self.settings.model_name

    def generator(self) -> GenerationEngine:
        engine = self._ready()
        if not isinstance(engine, GenerationEngine):
            raise APIError(
                400, f"{self.model_name} serves embeddings (MODEL_TASK=embed), not completions."
            )
        return engine

    def embedder(self) -> EmbeddingEngine:
        engine = self._ready()
        if not isinstance(engine, EmbeddingEngine):
            raise APIError(
                400, f"{self.model_name} generates text (MODEL_TASK=generate), not embeddings."
            )
        return engine

    def _ready(self) -> Engine:
        if self.engine is None:
            state = f"failed to load: {self.error}" if self.error else "is still loading"
            raise APIError(503, f"Model {self.model_name} {state}.", headers={"retry-after": "5"})
        return self.engine

    def load(self) -> None:
        """Resolve the source and load the engine (blocking; run it in a thread)."""
        started = time.perf_counter()
        settings = self.settings
        self.model_path = resolve(settings.source, settings.models_dir)
        log.info("loading %s (%s) from %s", self.model_name, settings.task, self.model_path)
        if settings.task == "embed":
            self.engine = EmbeddingEngine.load(
                self.model_path, settings.dtype, settings.max_model_len, settings.max_queue
            )
        else:
            self.engine = GenerationEngine.load(
                self.model_path,
                dtype=settings.dtype,
                metrics=self.metrics,
                max_model_len=settings.max_model_len,
                max_num_seqs=settings.max_num_seqs,
                max_queue=settings.max_queue,
                max_batch_tokens=settings.max_batch_tokens,
                kv_cache_gib=settings.kv_cache_gib,
                num_threads=settings.num_threads,
                quantization=settings.quantization,
            )
        log.info("model ready in %.1fs", time.perf_counter() - started)

    async def load_in_background(self, on_failure: Callable[[], None]) -> None:
        try:
            await asyncio.to_thread(self.load)
        except Exception as error:
            self.error = f"{type(error).__name__}: {error}"
            log.exception("loading %s failed", self.model_name)
            on_failure()
            return
        self.supervise()

    def supervise(self) -> None:
        """Restart the generation loop whenever it dies (call on the event loop)."""
        if isinstance(self.engine, GenerationEngine) and self.supervisor is None:
            self.supervisor = LoopSupervisor(self.engine)
            self.supervisor.start()

    def close(self) -> None:
        if self.supervisor is not None:
            self.supervisor.stop()
        if isinstance(self.engine, GenerationEngine):
            self.engine.close()
