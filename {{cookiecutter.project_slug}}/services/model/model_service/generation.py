"""Text generation on transformers' continuous batching (`init_continuous_batching`).

One `ContinuousBatchingManager` runs the model in a background thread over a paged KV
cache; each HTTP request becomes one manager request whose tokens arrive through a
per-request result handler on the event loop. This module adds what a server needs on
top: admission control (a bounded queue), per-request sampling, stop strings, exact
token counts, cancellation and vLLM's metrics.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
import uuid
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig
from transformers.generation.configuration_utils import ContinuousBatchingConfig
from transformers.generation.continuous_batching.cb_logits_processors import (
    ContinuousBatchingLogitsProcessorList,
)
from transformers.generation.logits_process import LogitsProcessorList

from model_service import precision
from model_service.grammar import GrammarCompiler
from model_service.logprobs import TokenLogprob
from model_service.metrics import ServiceMetrics
from model_service.sampling import SLOT_KWARG, PerRequestSampler, SamplingParams
from model_service.text_stream import TextStream
from model_service.tools import tool_aware_template

log = logging.getLogger(__name__)

PAGE_SIZE = 64


class QueueFull(Exception):
    """More requests than `max_num_seqs + max_queue` are in flight."""


class GenerationFailed(Exception):
    """The batching engine reported an error for this request."""


class LoopFailed(Exception):
    """The continuous-batching loop died (or is restarting): every request in it fails
    with 503 while model_service.supervisor restarts it."""


@dataclass
class Delta:
    text: str
    completion_tokens: int
    finish_reason: str | None = None
    # One entry per token this delta covers, when the request asked for logprobs.
    logprobs: list[TokenLogprob] = field(default_factory=list)


@dataclass
class RequestStats:
    """What one generation did, filled in by the engine as it runs (for metrics and traces).

    Times are `time.perf_counter()` seconds; None until the moment has happened.
    """

    prompt_tokens: int = 0
    arrived: float = field(default_factory=time.perf_counter)
    queue_seconds: float | None = None  # waiting for a slot (vllm:request_queue_time)
    scheduled: float | None = None  # left the waiting queue: prefill starts
    first_token: float | None = None
    last_token: float | None = None
    generation_tokens: int = 0
    finish_reason: str | None = None


@dataclass(frozen=True)
class EngineOptions:
    max_model_len: int
    max_num_seqs: int
    max_queue: int
    max_batch_tokens: int
    kv_cache_tokens: int


def resolve_dtype(name: str) -> torch.dtype:
    if name == "auto":
        return torch.float16 if torch.cuda.is_available() else torch.float32
    dtype = getattr(torch, name)
    assert isinstance(dtype, torch.dtype)
    return dtype


CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def cgroup_cpu_limit(cpu_max: Path = CGROUP_CPU_MAX) -> int | None:
    """CPUs a cgroup v2 quota allows (rounded up), or None without a quota.

    A container limited to 2 CPUs on a 64-core node still sees 64 CPUs in its affinity
    mask; 63 torch threads on a 2-CPU quota would spend their time throttled.
    """
    try:
        quota, period = cpu_max.read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    return max(1, math.ceil(int(quota) / int(period)))


def usable_cpus(cpu_max: Path = CGROUP_CPU_MAX) -> int:
    cpus = len(os.sched_getaffinity(0))
    limit = cgroup_cpu_limit(cpu_max)
    return min(cpus, limit) if limit else cpus


def compute_threads(requested: int, cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """Threads for torch: the requested number, or every usable CPU but one."""
    if requested > 0:
        return requested
    return max(1, usable_cpus(cpu_max) - 1)


def kv_bytes_per_token(model: Any) -> int:
    config = model.config.get_text_config()
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    element = torch.finfo(model.dtype).bits // 8
    return 2 * config.num_hidden_layers * kv_heads * head_dim * element


class GenerationEngine:
    def __init__(
        self, model: Any, tokenizer: Any, options: EngineOptions, metrics: ServiceMetrics
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.options = options
        self.metrics = metrics
        self.max_model_len = options.max_model_len
        self.sampler = PerRequestSampler()
        self._eos_ids = self._eos_token_ids()
        vocab = int(model.config.get_text_config().vocab_size)
        self.grammars = GrammarCompiler(tokenizer, vocab, self._eos_ids[0] if self._eos_ids else 0)
        self._in_flight = 0
        # Each running request's output queue, so the supervisor can fail them all at once.
        self._outputs: dict[str, asyncio.Queue[Any]] = {}
        self._closed = False
        self._manager = self._start_manager()
        self._untrack_gauges = metrics.track_gauges(
            self.running_count, self.waiting_count, self.kv_cache_usage
        )

    @classmethod
    def load(
        cls,
        path: Path,
        dtype: str,
        metrics: ServiceMetrics,
        max_model_len: int | None,
        max_num_seqs: int,
        max_queue: int,
        max_batch_tokens: int,
        kv_cache_gib: float = 1.0,
        quantization: str | None = None,
        num_threads: int = 0,
    ) -> GenerationEngine:
        if not torch.cuda.is_available():
            # The event loop (HTTP, tokenizer, SSE) shares the CPUs with the generation
            # loop; OpenMP threads that lose their core stall every step at barriers.
            torch.set_num_threads(compute_threads(num_threads))
        tokenizer = AutoTokenizer.from_pretrained(path)
        chosen = precision.choose(
            dtype, quantization, torch.cuda.is_available(), precision.cpu_flags()
        )
        precision.log_choice(chosen)
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=chosen.dtype, attn_implementation="sdpa"
        ).eval()
        model = precision.quantize(model, chosen.quantization)
        limit = int(getattr(model.config, "max_position_embeddings", 0) or 2048)
        model_len = min(max_model_len or limit, limit)
        # A fixed memory budget, as vLLM's VLLM_CPU_KVCACHE_SPACE: when it is full the
        # scheduler keeps new requests waiting until running ones free their blocks.
        kv_tokens = max(model_len, int(kv_cache_gib * 2**30) // kv_bytes_per_token(model))
        options = EngineOptions(model_len, max_num_seqs, max_queue, max_batch_tokens, kv_tokens)
        return cls(model, tokenizer, options, metrics)

    # -- the continuous batching manager ------------------------------------------------

    def _eos_token_ids(self) -> list[int]:
        eos = self.model.generation_config.eos_token_id
        if eos is None:
            eos = self.tokenizer.eos_token_id
        ids = eos if isinstance(eos, list) else [eos]
        return [int(i) for i in ids if i is not None]

    def _start_manager(self) -> Any:
        generation_config = GenerationConfig(
            do_sample=False,  # the per-request sampler picks the token; argmax keeps it
            max_new_tokens=self.options.max_model_len,
            eos_token_id=self._eos_ids or -1,
            pad_token_id=self.tokenizer.pad_token_id,
        )
        batching = ContinuousBatchingConfig(
            page_size=PAGE_SIZE,
            num_blocks=-(-self.options.kv_cache_tokens // PAGE_SIZE),
            max_batch_tokens=self.options.max_batch_tokens,
            max_requests_per_batch=self.options.max_num_seqs,
            allow_block_sharing=False,
            use_async_batching=False,
            per_request_processors=False,
        )
        manager = self.model.init_continuous_batching(
            generation_config=generation_config, continuous_batching_config=batching
        )
        processors = ContinuousBatchingLogitsProcessorList(LogitsProcessorList([self.sampler]))
        processors.tensors_required = 1
        manager.logit_processor = processors
        manager.start()
        return manager

    def close(self) -> None:
        self._closed = True
        self._untrack_gauges()
        self._manager.stop(block=True, timeout=10)

    def alive(self) -> bool:
        status = self._manager.background_thread_status
        return bool(self._manager.is_running() and status.fatal_error is None)

    def loop_error(self) -> str:
        error = self._manager.background_thread_status.fatal_error
        return f"{type(error).__name__}: {error}" if error else "the generation loop stopped"

    def _loop_failing(self) -> bool:
        # transformers asks for a hard stop before it fails the requests of a dying loop,
        # and records the fatal error only after: the stop status is the early sign.
        status = self._manager.background_thread_status
        return bool(status.fatal_error is not None or status.local_status != status.DONT_STOP)

    def fail_in_flight(self, error: LoopFailed) -> int:
        """Wake every running request with `error` (raised from its `generate`)."""
        for outputs in list(self._outputs.values()):
            outputs.put_nowait(error)
        return len(self._outputs)

    def restart(self) -> None:
        """Replace a dead batching manager with a fresh one (blocking: run it in a thread)."""
        self._manager.stop(block=True, timeout=10)
        self._manager = self._start_manager()
        if self._closed:  # shut down while restarting: no loop thread may outlive the app
            self._manager.stop(block=True, timeout=10)

    def running_count(self) -> float:
        scheduler = self._scheduler()
        return float(len(scheduler.active_requests)) if scheduler else 0.0

    def waiting_count(self) -> float:
        scheduler = self._scheduler()
        queued = self._manager.input_queue.qsize()
        return float(queued + (len(scheduler.waiting_requests) if scheduler else 0))

    def kv_cache_usage(self) -> float:
        processor = self._manager.batch_processor
        if processor is None:
            return 0.0
        return float(1.0 - processor.cache.compute_free_capacity(relative=True))

    def _scheduler(self) -> Any:
        processor = self._manager.batch_processor
        return processor.scheduler if processor is not None else None

    # -- prompts -----------------------------------------------------------------------

    def encode_chat(self, messages: list[dict[str, Any]], **template_kwargs: Any) -> list[int]:
        template = tool_aware_template(self.tokenizer.chat_template)
        encoded = self.tokenizer.apply_chat_template(
            messages,
            add_generation_prompt=True,
            tokenize=True,
            chat_template=template,
            **template_kwargs,
        )
        ids = encoded["input_ids"] if hasattr(encoded, "keys") else encoded
        return [int(i) for i in ids]

    async def compile_grammar(self, grammar: str, param: str) -> Any:
        """A matcher for `grammar` (off the event loop: a large schema compiles for a
        while); raises grammar.GrammarError naming `param`."""
        return await asyncio.to_thread(self.grammars.compile, grammar, param)

    def decode_token(self, token_id: int) -> str:
        return str(self.tokenizer.decode([token_id]))

    def decode_text(self, token_ids: list[int]) -> str:
        return str(self.tokenizer.decode(token_ids, skip_special_tokens=True))

    def encode_text(self, text: str) -> list[int]:
        return [int(i) for i in self.tokenizer(text)["input_ids"]]

    # -- generation --------------------------------------------------------------------

    async def generate(
        self, prompt_ids: list[int], params: SamplingParams, stats: RequestStats | None = None
    ) -> AsyncGenerator[Delta, None]:
        """Stream the completion of `prompt_ids` as text deltas; the last one has a finish
        reason. Closing the iterator early cancels the request and frees its slot.
        `stats`, when given, is filled in as the request runs (queue time, first token, ...)."""
        self._admit()
        request_id = uuid.uuid4().hex
        outputs: asyncio.Queue[Any] = asyncio.Queue()
        slot = self.sampler.register(params, prompt_ids)
        stats = stats or RequestStats()
        stats.prompt_tokens = len(prompt_ids)
        started = time.perf_counter()
        manager_done = False
        stream = TextStream(self.tokenizer._tokenizer, params.stop)
        manager = self._manager  # the supervisor may replace it while this request runs
        try:
            self._submit(manager, request_id, outputs, prompt_ids, params, slot)
            while stats.finish_reason is None:
                output = self._checked(await outputs.get())
                manager_done = output.is_finished()
                self._note_scheduled(stats, output)
                new_tokens = output.generated_tokens[stats.generation_tokens :]
                if not new_tokens and not output.is_finished():
                    continue
                self._note_token_time(stats, started)
                first_new = stats.generation_tokens
                text, stats.finish_reason = self._decode(
                    stream, new_tokens, output.is_finished(), stats, params
                )
                recorded = self.sampler.token_logprobs(slot) if params.logprobs is not None else []
                yield Delta(
                    text,
                    stats.generation_tokens,
                    stats.finish_reason,
                    recorded[first_new : stats.generation_tokens],
                )
        finally:
            self._in_flight -= 1
            self._outputs.pop(request_id, None)
            self._release(manager, request_id, slot, cancel=not manager_done)
            self._observe_request(prompt_ids, params, stats, started)

    def _admit(self) -> None:
        limit = self.options.max_num_seqs + self.options.max_queue
        if self._in_flight >= limit:
            raise QueueFull(f"{self._in_flight} requests in flight (limit {limit})")
        self._in_flight += 1

    def _submit(
        self,
        manager: Any,
        request_id: str,
        outputs: asyncio.Queue[Any],
        prompt_ids: list[int],
        params: SamplingParams,
        slot: int,
    ) -> None:
        if not self.alive():
            raise LoopFailed(f"the generation loop is restarting ({self.loop_error()})")
        self._outputs[request_id] = outputs
        manager.register_result_handler(request_id, outputs.put_nowait)
        added = manager.add_request(
            prompt_ids,
            request_id=request_id,
            max_new_tokens=params.max_tokens,
            streaming=True,
            eos_token_id=-1 if params.ignore_eos else self._eos_ids,
            **{SLOT_KWARG: slot},
        )
        if added is None:  # the manager refuses requests once its loop is stopping
            raise LoopFailed(f"the generation loop stopped ({self.loop_error()})")

    def _checked(self, output: Any) -> Any:
        """The manager's output, or the failure it carries raised."""
        if isinstance(output, LoopFailed):
            raise output
        if output.error is not None and self._loop_failing():
            raise LoopFailed(f"the generation loop failed: {output.error}")
        if output.error is not None:
            raise GenerationFailed(output.error)
        return output

    @staticmethod
    def _note_scheduled(stats: RequestStats, output: Any) -> None:
        if stats.scheduled is None and output.lifespan[0] > 0:
            stats.scheduled = output.lifespan[0]
            stats.queue_seconds = max(0.0, output.lifespan[0] - output.created_time)

    def _note_token_time(self, stats: RequestStats, started: float) -> None:
        now = time.perf_counter()
        if stats.last_token is None:
            stats.first_token = now
            self.metrics.observe_first_token(now - started)
        else:
            self.metrics.observe_inter_token(now - stats.last_token)
        stats.last_token = now

    def _decode(
        self,
        stream: TextStream,
        new_tokens: list[int],
        finished: bool,
        stats: RequestStats,
        params: SamplingParams,
    ) -> tuple[str, str | None]:
        """The text of `new_tokens` and the finish reason, if this output ends the request."""
        text = []
        for token in new_tokens:
            stats.generation_tokens += 1
            piece = stream.push(token)
            text.append(piece.text)
            if piece.stopped:
                return "".join(text), "stop"
        if not finished:
            return "".join(text), None
        text.append(stream.flush())
        hit_eos = bool(new_tokens) and new_tokens[-1] in self._eos_ids
        at_limit = stats.generation_tokens >= params.max_tokens
        return "".join(text), "length" if at_limit and not hit_eos else "stop"

    def _observe_request(
        self, prompt_ids: list[int], params: SamplingParams, stats: RequestStats, started: float
    ) -> None:
        self.metrics.observe_request(
            prompt_tokens=len(prompt_ids),
            generation_tokens=stats.generation_tokens,
            finish_reason=stats.finish_reason or "abort",
            e2e_seconds=time.perf_counter() - started,
            queue_seconds=stats.queue_seconds,
            max_tokens=params.max_tokens,
        )

    def _release(self, manager: Any, request_id: str, slot: int, cancel: bool) -> None:
        # A stop string ends the request before the manager does; so does a disconnect.
        if cancel:
            manager.cancel_request(request_id)
        router = manager.output_router
        with router._lock:
            router.result_handlers.pop(request_id, None)
        self.sampler.release(slot)
