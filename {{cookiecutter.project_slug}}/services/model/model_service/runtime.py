"""The loaded model of one server process, its LoRA adapters, and its loading state.

The HTTP server answers while the model loads (`/health` 503, model routes 503), so
probes see progress instead of a closed port; a failed load stops the process. The
adapters listed in MODEL_LORA_MODULES load before `/health` turns 200 (one that cannot
load fails the start); a request's `model` picks the base's engine or an adapter's
(model_service.adapters), each supervised by its own LoopSupervisor.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from model_service.adapters import AdapterInfo, AdapterLimits, AdapterRegistry
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
    adapters: AdapterRegistry | None = None
    adapter_supervisors: dict[str, LoopSupervisor] = field(default_factory=dict)

    @property
    def model_name(self) -> str:
        return self.settings.model_name

    def generator(self, requested: str | None = None) -> tuple[str, GenerationEngine]:
        """The served name and the engine for a request's `model` (the base when None)."""
        self.check_model(requested)
        engine = self._ready()
        if not isinstance(engine, GenerationEngine):
            raise APIError(
                400, f"{self.model_name} serves embeddings (MODEL_TASK=embed), not completions."
            )
        if requested is None or requested == self.model_name:
            return self.model_name, engine
        assert self.adapters is not None  # check_model found it among the adapters
        return requested, self.adapters.engine(requested)

    def check_model(self, requested: str | None) -> None:
        """404 naming a `model` that is neither the base nor a loaded adapter."""
        if requested is None or requested == self.model_name:
            return
        if self.adapters is None or requested not in self.adapters.names():
            served = ", ".join([self.model_name, *(self.adapters.names() if self.adapters else [])])
            raise APIError(
                404, f"The model `{requested}` does not exist. Valid aliases: {served}.", "model"
            )

    def adapter_registry(self) -> AdapterRegistry:
        """The adapters of this server, or an error saying why it has none."""
        if self.adapters is not None:
            return self.adapters
        if self.settings.task == "embed":
            raise APIError(400, f"{self.model_name} serves embeddings: no LoRA adapters.")
        if self.settings.quantization:
            raise APIError(
                400, "LoRA adapters need an unquantized base model (unset MODEL_QUANTIZATION)."
            )
        self._ready()
        raise APIError(503, f"Model {self.model_name} is still loading.")

    async def load_adapter(self, name: str, path: Path | None) -> AdapterInfo:
        registry = self.adapter_registry()
        info = await asyncio.to_thread(registry.load, name, path)
        self._supervise_adapter(name)
        return info

    async def unload_adapter(self, name: str) -> None:
        engine = self.adapter_registry().unload(name)
        supervisor = self.adapter_supervisors.pop(name, None)
        if supervisor is not None:
            supervisor.stop()
        await asyncio.to_thread(engine.close)

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
            engine = GenerationEngine.load(
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
            try:  # healthy only once the adapters listed to load at start are loaded too
                self._load_adapters_at_start(engine)
            except BaseException:
                engine.close()
                raise
            self.engine = engine
        log.info("model ready in %.1fs", time.perf_counter() - started)

    def _load_adapters_at_start(self, engine: GenerationEngine) -> None:
        settings = self.settings
        if settings.quantization:
            if settings.lora_modules.strip():
                raise ValueError(
                    "MODEL_LORA_MODULES needs an unquantized base (unset MODEL_QUANTIZATION)"
                )
            return
        limits = AdapterLimits(
            settings.adapters_dir,
            settings.max_loras,
            settings.max_lora_rank,
            settings.lora_kv_cache_gib,
        )
        registry = AdapterRegistry(engine, {self.model_name, settings.source}, limits)
        for module in settings.adapters_at_start:
            try:
                info = registry.load(module.name, module.path)
            except APIError as error:  # a listed adapter that cannot load stops the start
                registry.close()
                raise ValueError(f"MODEL_LORA_MODULES: {error.message}") from None
            log.info("adapter %s (rank %d) loaded from %s", info.name, info.rank, info.path)
        self.adapters = registry

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
        """Restart the generation loops whenever they die (call on the event loop)."""
        if isinstance(self.engine, GenerationEngine) and self.supervisor is None:
            self.supervisor = LoopSupervisor(self.engine)
            self.supervisor.start()
        for name in self.adapters.names() if self.adapters else []:
            self._supervise_adapter(name)

    def _supervise_adapter(self, name: str) -> None:
        if self.adapters is not None and name not in self.adapter_supervisors:
            supervisor = LoopSupervisor(self.adapters.engine(name))
            supervisor.start()
            self.adapter_supervisors[name] = supervisor

    def close(self) -> None:
        for supervisor in [self.supervisor, *self.adapter_supervisors.values()]:
            if supervisor is not None:
                supervisor.stop()
        if self.adapters is not None:
            self.adapters.close()
        if isinstance(self.engine, GenerationEngine):
            self.engine.close()
