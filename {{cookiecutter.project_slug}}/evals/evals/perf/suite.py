"""`evals perf`: warm-up, a concurrency sweep and Poisson rates against the endpoint,
optionally the same load against the model service directly (buffering check)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from evals.datasets import load_dataset
from evals.perf.load import Messages, StreamTarget, run_closed_loop, run_open_loop, warm_up
from evals.perf.metrics import (
    SLO,
    SLO_PROFILES,
    PerfReport,
    RequestRecord,
    ScenarioResult,
    buffering_check,
    summarise_scenario,
)
from evals.settings import EvalsSettings
from evals.suites import PromptSpec


@dataclass
class PerfOptions:
    concurrencies: list[int] = field(default_factory=lambda: [1, 4])
    rates: list[float] = field(default_factory=list)
    num_requests: int = 8
    max_tokens: int = 32
    warmup: int = 2
    slo_profile: str = "cpu"
    ttft_slo_ms: float | None = None
    tpot_slo_ms: float | None = None
    seed: int = 0
    measure_cache: bool = False
    direct_url: str | None = None
    prompts_dataset: str = "smoke.jsonl"
    ignore_eos: bool = False
    max_concurrency: int | None = None

    def slo(self) -> SLO:
        if self.slo_profile not in SLO_PROFILES:
            raise ValueError(f"unknown SLO profile {self.slo_profile!r} (gpu|cpu)")
        base = SLO_PROFILES[self.slo_profile]
        return SLO(
            ttft_ms=self.ttft_slo_ms if self.ttft_slo_ms is not None else base.ttft_ms,
            tpot_ms=self.tpot_slo_ms if self.tpot_slo_ms is not None else base.tpot_ms,
        )


def load_prompts(settings: EvalsSettings, dataset: str) -> list[Messages]:
    samples = load_dataset(settings.datasets_dir / dataset)
    prompt = PromptSpec()
    return [prompt.messages(s) for s in samples]


def _targets(settings: EvalsSettings, options: PerfOptions) -> list[tuple[str, StreamTarget]]:
    extra: dict[str, Any] = {"ignore_eos": True} if options.ignore_eos else {}
    headers = settings.auth_headers()
    if not options.measure_cache:
        headers["x-cache-bypass"] = "1"
    targets = [
        (
            "endpoint",
            StreamTarget(
                base_url=settings.base_url,
                model=settings.model,
                headers=headers,
                max_tokens=options.max_tokens,
                timeout_s=settings.request_timeout_s,
                extra_body=extra,
            ),
        )
    ]
    if options.direct_url:
        targets.append(
            (
                "direct",
                StreamTarget(
                    base_url=options.direct_url,
                    model=settings.model,
                    max_tokens=options.max_tokens,
                    timeout_s=settings.request_timeout_s,
                    extra_body=extra,
                ),
            )
        )
    return targets


async def run_perf(settings: EvalsSettings, options: PerfOptions) -> PerfReport:
    slo = options.slo()
    prompts = load_prompts(settings, options.prompts_dataset)
    report = PerfReport(
        slo_profile=options.slo_profile,
        slo=slo,
        max_tokens=options.max_tokens,
        warmup_requests=options.warmup,
        seed=options.seed,
        cache_bypass=not options.measure_cache,
        prompts=options.prompts_dataset,
    )
    limits = httpx.Limits(max_connections=max([*options.concurrencies, 16]) * 2)
    async with httpx.AsyncClient(limits=limits) as http:
        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        ) as progress:
            for target_name, target in _targets(settings, options):
                if options.warmup:
                    await warm_up(http, target, prompts, options.warmup)
                report.scenarios += await _sweep(
                    http, target_name, target, prompts, options, slo, progress
                )
    endpoint = _first(report.scenarios, "endpoint", 1)
    direct = _first(report.scenarios, "direct", 1)
    if endpoint and direct:
        report.buffering = buffering_check(endpoint, direct)
    return report


def _first(scenarios: list[ScenarioResult], target: str, concurrency: int) -> ScenarioResult | None:
    matching = [s for s in scenarios if s.target == target and s.mode == "concurrency"]
    preferred = [s for s in matching if s.concurrency == concurrency]
    chosen = preferred or matching
    return chosen[0] if chosen else None


def _advance(progress: Progress, task: TaskID) -> Callable[[RequestRecord], None]:
    return lambda _record: progress.advance(task)


async def _sweep(
    http: httpx.AsyncClient,
    target_name: str,
    target: StreamTarget,
    prompts: list[Messages],
    options: PerfOptions,
    slo: SLO,
    progress: Progress,
) -> list[ScenarioResult]:
    results = []
    # The direct run only needs the lowest concurrency, for the buffering comparison.
    concurrencies = (
        options.concurrencies if target_name == "endpoint" else options.concurrencies[:1]
    )
    for concurrency in concurrencies:
        name = f"{target_name} concurrency={concurrency}"
        task = progress.add_task(name, total=options.num_requests)
        records, duration = await run_closed_loop(
            http,
            target,
            prompts,
            num_requests=options.num_requests,
            concurrency=concurrency,
            on_done=_advance(progress, task),
        )
        results.append(
            summarise_scenario(
                records,
                name=name,
                mode="concurrency",
                duration_s=duration,
                slo=slo,
                target=target_name,
                concurrency=concurrency,
            )
        )
    if target_name != "endpoint":
        return results
    for index, rate in enumerate(options.rates):
        name = f"{target_name} rate={rate:g}/s"
        task = progress.add_task(name, total=options.num_requests)
        records, duration = await run_open_loop(
            http,
            target,
            prompts,
            num_requests=options.num_requests,
            rate=rate,
            seed=options.seed + index,
            max_concurrency=options.max_concurrency,
            on_done=_advance(progress, task),
        )
        results.append(
            summarise_scenario(
                records, name=name, mode="rate", duration_s=duration, slo=slo, rate=rate
            )
        )
    return results
