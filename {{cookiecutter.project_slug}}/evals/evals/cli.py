"""The `evals` command line: run, perf, compare, baseline, suites."""

from __future__ import annotations

import asyncio
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from evals.cache import ResponseCache
from evals.client import EndpointUnavailable, OpenAIClient
from evals.compare import metric_differences, render_comparison
from evals.gate import (
    EXIT_GATE_FAILED,
    EXIT_PASSED,
    EXIT_RUN_FAILED,
    ComparisonGate,
    evaluate_gate,
    parse_threshold_overrides,
)
from evals.loop import (
    GatewayUnavailable,
    OnlineMetrics,
    OnlineScorer,
    fetch_exchanges,
    from_feedback,
    write_dataset,
)
from evals.perf.suite import PerfOptions, run_perf
from evals.report.writer import load_report, new_run_id, resolve_report, write_report
from evals.results import Comparison, Report, SuiteResult
from evals.runner import progress_bar, run_suite
from evals.scorers import ScorerConfigError
from evals.settings import EvalsSettings
from evals.suites import Suite, SuiteError, available_suites, load_suite

app = typer.Typer(
    help="Quality and performance evals against an OpenAI-compatible endpoint.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
baseline_app = typer.Typer(help="Manage the baseline report used for regression checks.")
app.add_typer(baseline_app, name="baseline")
datasets_app = typer.Typer(help="Build datasets (from the quality loop's feedback).")
app.add_typer(datasets_app, name="datasets")
console = Console(stderr=True)


def _settings(**overrides: Any) -> EvalsSettings:
    settings = EvalsSettings()
    return settings.model_copy(update={k: v for k, v in overrides.items() if v is not None})


def _safe_settings(settings: EvalsSettings) -> dict[str, Any]:
    data = settings.model_dump(mode="json", exclude={"api_key"})
    data["api_key_set"] = settings.api_key is not None
    return data


def _new_report(settings: EvalsSettings, kind: str, run_id: str) -> Report:
    return Report(
        run_id=run_id,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        kind=kind,  # type: ignore[arg-type]
        endpoint=settings.base_url,
        model=settings.model,
        settings=_safe_settings(settings),
    )


def _select_suites(names: list[str], settings: EvalsSettings) -> list[Suite]:
    if not names or "all" in names:
        names = available_suites(settings.suites_dir)
    return [load_suite(name, settings.suites_dir) for name in names]


async def _run_quality(suites: list[Suite], settings: EvalsSettings, report: Report) -> None:
    cache = ResponseCache(settings.cache_dir) if settings.cache_enabled else None
    async with OpenAIClient(settings, cache) as client:
        try:
            await client.check_ready()
        except EndpointUnavailable as exc:
            report.errors.append(str(exc))
            return
        with progress_bar() as progress:
            for suite in suites:
                report.suites.append(await run_suite(suite, client, settings, progress))
        if cache is not None:
            report.settings["cache"] = {"hits": cache.hits, "misses": cache.misses}
        report.settings["requests_sent"] = client.requests_sent
        report.settings["retries"] = client.retries


def _run_failures(suites: list[SuiteResult], settings: EvalsSettings) -> list[str]:
    failures = []
    for suite in suites:
        if suite.status == "failed":
            failures.append(f"suite {suite.name} failed: {suite.reason}")
        elif suite.status == "ok" and suite.error_rate > settings.max_error_rate:
            failures.append(
                f"suite {suite.name}: {suite.n_errors}/{suite.n_samples} requests failed "
                f"({suite.error_rate:.0%} > EVALS_MAX_ERROR_RATE {settings.max_error_rate:.0%})"
            )
    return failures


def _finish(report: Report, settings: EvalsSettings, started: float) -> None:
    report.duration_s = time.perf_counter() - started
    out = write_report(report, settings.reports_dir)
    for suite in report.suites:
        if suite.status == "skipped":
            console.print(f"[yellow]skipped[/] suite {suite.name}: {suite.reason}")
    if report.gate is not None:
        for check in report.gate.failures:
            console.print(
                f"[red]gate[/] {check.suite}.{check.metric} ({check.kind}): {check.message}"
            )
    for error in report.errors:
        console.print(f"[red]error[/] {error}")
    verdict = {0: "[green]passed[/]", 1: "[red]gate failed[/]", 2: "[red]run failed[/]"}
    console.print(f"{verdict[report.exit_code]} · report: {out}/report.html")


def _load_baseline(path: Path | None) -> Report | None:
    if path is None:
        return None
    if not path.is_file():
        console.print(f"[yellow]no baseline at {path}; regression not checked[/]")
        return None
    return Report.model_validate_json(path.read_text(encoding="utf-8"))


def _run_base(suites: list[Suite], settings: EvalsSettings, base: str, report: Report) -> None:
    """Run the same suites on the base model (same judge) and record the paired
    differences of the candidate against it."""
    base_settings = settings.model_copy(
        update={"model": base, "judge_model": settings.effective_judge_model}
    )
    base_report = _new_report(base_settings, "quality", report.run_id)
    asyncio.run(_run_quality(suites, base_settings, base_report))
    report.errors += [f"base {base}: {e}" for e in base_report.errors]
    report.errors += [f"base {base}: {e}" for e in _run_failures(base_report.suites, settings)]
    report.comparison = Comparison(
        base_model=base,
        base_suites=base_report.suites,
        differences=metric_differences(
            base_report.suites,
            report.suites,
            seed=settings.seed,
            resamples=settings.bootstrap_resamples,
        ),
    )


def _comparison_gate(
    compare_to: str | None, non_inferior: bool, margin: float, better_on: list[str]
) -> ComparisonGate | None:
    if not (non_inferior or better_on):
        return None
    if compare_to is None:
        raise ValueError("--non-inferior and --better-on need --compare-to BASE")
    return ComparisonGate(margin=margin, non_inferior=non_inferior, better_on=better_on)


@app.command()
def run(
    suite: Annotated[
        list[str] | None, typer.Option("--suite", "-s", help="Suite name or YAML path; 'all'.")
    ] = None,
    threshold: Annotated[
        list[str] | None,
        typer.Option("--threshold", "-t", help="Override: [suite.]metric=value (repeatable)."),
    ] = None,
    baseline: Annotated[
        Path | None, typer.Option(help="Baseline report.json for regression checks.")
    ] = None,
    run_id: Annotated[str | None, typer.Option(help="Report folder name.")] = None,
    cache: Annotated[bool, typer.Option(help="Reuse cached responses.")] = True,
    concurrency: Annotated[int | None, typer.Option(help="Requests in flight.")] = None,
    model: Annotated[str | None, typer.Option(help="Model under test (EVALS_MODEL).")] = None,
    compare_to: Annotated[
        str | None, typer.Option(help="Base model: run it too and report the differences.")
    ] = None,
    non_inferior: Annotated[
        bool, typer.Option(help="Gate: the model must be no worse than --compare-to.")
    ] = False,
    margin: Annotated[
        float | None,
        typer.Option(help="Non-inferiority margin (EVALS_NONINFERIORITY_MARGIN, 0.05)."),
    ] = None,
    better_on: Annotated[
        list[str] | None,
        typer.Option(help="Gate: better than the base on SUITE or SUITE.METRIC (repeatable)."),
    ] = None,
) -> None:
    """Run quality suites, gate them, and write reports/<run-id>/."""
    started = time.perf_counter()
    settings = _settings(concurrency=concurrency, cache_enabled=cache, model=model)
    try:
        overrides = parse_threshold_overrides(threshold or [])
        suites = _select_suites(suite or [], settings)
        comparison_gate = _comparison_gate(
            compare_to,
            non_inferior,
            settings.noninferiority_margin if margin is None else margin,
            better_on or [],
        )
    except (SuiteError, ValueError) as exc:
        console.print(f"[red]error[/] {exc}")
        raise typer.Exit(EXIT_RUN_FAILED) from exc
    label = "-".join(s.name for s in suites) if len(suites) <= 3 else "all"
    report = _new_report(settings, "quality", run_id or new_run_id(label))
    try:
        asyncio.run(_run_quality(suites, settings, report))
        if compare_to is not None and not report.errors:
            _run_base(suites, settings, compare_to, report)
    except ScorerConfigError as exc:
        report.errors.append(f"suite configuration: {exc}")
    report.errors += _run_failures(report.suites, settings)
    baseline = baseline or settings.baseline
    baseline_report = _load_baseline(baseline)
    if report.errors:
        report.exit_code = EXIT_RUN_FAILED
    else:
        report.gate = evaluate_gate(
            report.suites,
            overrides=overrides,
            baseline=baseline_report,
            baseline_name=str(baseline) if baseline_report else None,
            tolerance=settings.regression_tolerance,
            differences=report.comparison.differences if report.comparison else None,
            comparison_gate=comparison_gate,
        )
        report.exit_code = EXIT_PASSED if report.gate.passed else EXIT_GATE_FAILED
    _finish(report, settings, started)
    raise typer.Exit(report.exit_code)


def _numbers(text: str, kind: type[float] | type[int]) -> list[Any]:
    return [kind(x) for x in text.split(",") if x.strip()]


@app.command()
def perf(
    concurrency: Annotated[str, typer.Option(help="Closed-loop sweep, e.g. 1,4,16.")] = "1,4",
    rate: Annotated[str, typer.Option(help="Poisson rates in req/s, e.g. 0.5,2.")] = "",
    num_requests: Annotated[int, typer.Option(help="Requests per scenario.")] = 8,
    max_tokens: Annotated[int, typer.Option()] = 32,
    warmup: Annotated[int, typer.Option(help="Warm-up requests (not measured).")] = 2,
    slo: Annotated[str | None, typer.Option(help="SLO profile: gpu or cpu.")] = None,
    ttft_slo_ms: Annotated[float | None, typer.Option()] = None,
    tpot_slo_ms: Annotated[float | None, typer.Option()] = None,
    seed: Annotated[int, typer.Option()] = 0,
    measure_cache: Annotated[
        bool, typer.Option(help="Do not send x-cache-bypass (measure cache hits).")
    ] = False,
    direct_url: Annotated[
        str | None, typer.Option(help="Model service base URL (with /v1): buffering check.")
    ] = None,
    prompts: Annotated[
        str, typer.Option(help="Dataset whose inputs are the prompts.")
    ] = "smoke.jsonl",
    ignore_eos: Annotated[bool, typer.Option(help="Send ignore_eos (vLLM extension).")] = False,
    max_concurrency: Annotated[int | None, typer.Option(help="Cap for Poisson runs.")] = None,
    run_id: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Latency and throughput with vLLM's definitions; writes reports/<run-id>/."""
    started = time.perf_counter()
    settings = _settings()
    options = PerfOptions(
        concurrencies=_numbers(concurrency, int),
        rates=_numbers(rate, float),
        num_requests=num_requests,
        max_tokens=max_tokens,
        warmup=warmup,
        slo_profile=slo or settings.slo_profile,
        ttft_slo_ms=ttft_slo_ms,
        tpot_slo_ms=tpot_slo_ms,
        seed=seed,
        measure_cache=measure_cache,
        direct_url=direct_url or settings.direct_base_url,
        prompts_dataset=prompts,
        ignore_eos=ignore_eos,
        max_concurrency=max_concurrency,
    )
    report = _new_report(settings, "perf", run_id or new_run_id("perf"))
    try:
        report.perf = asyncio.run(run_perf(settings, options))
    except ValueError as exc:
        report.errors.append(str(exc))
    if report.perf is not None:
        for scenario in report.perf.scenarios:
            if scenario.error_rate > settings.max_error_rate:
                report.errors.append(
                    f"{scenario.name}: {scenario.failed}/{scenario.num_requests} failed "
                    f"({', '.join(scenario.errors)})"
                )
    report.exit_code = EXIT_RUN_FAILED if report.errors else EXIT_PASSED
    _finish(report, settings, started)
    raise typer.Exit(report.exit_code)


@app.command()
def compare(
    a: Annotated[str, typer.Argument(help="Report A: run id, folder, report.json or 'latest'.")],
    b: Annotated[str, typer.Argument(help="Report B.")],
    output: Annotated[Path | None, typer.Option(help="Also write the Markdown here.")] = None,
) -> None:
    """Show the difference between two reports (B relative to A)."""
    settings = _settings()
    try:
        text = render_comparison(
            load_report(a, settings.reports_dir),
            load_report(b, settings.reports_dir),
            seed=settings.seed,
            resamples=settings.bootstrap_resamples,
        )
    except FileNotFoundError as exc:
        console.print(f"[red]error[/] {exc}")
        raise typer.Exit(EXIT_RUN_FAILED) from exc
    print(text)
    if output is not None:
        output.write_text(text, encoding="utf-8")


@baseline_app.command("save")
def baseline_save(
    run: Annotated[str, typer.Argument(help="Run id, folder or 'latest'.")] = "latest",
    to: Annotated[Path, typer.Option(help="Where the baseline lives.")] = Path(
        "evals/baseline.json"
    ),
) -> None:
    """Copy a run's report.json to the baseline path (commit it to gate regressions)."""
    settings = _settings()
    source = resolve_report(run, settings.reports_dir)
    to.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, to)
    console.print(f"baseline: {source} -> {to}")


@app.command("suites")
def list_suites() -> None:
    """List the suites and whether their datasets are present."""
    settings = _settings()
    for name in available_suites(settings.suites_dir):
        s = load_suite(name, settings.suites_dir)
        present = (settings.datasets_dir / s.dataset).exists()
        state = (
            "ready" if present else ("skipped (no dataset)" if s.optional else "MISSING DATASET")
        )
        print(f"{name:16} {s.task:15} {s.dataset:24} {state}")


@datasets_app.command("from-feedback")
def datasets_from_feedback(
    out: Annotated[Path, typer.Option(help="Dataset file to write (JSONL).")],
    rating: Annotated[
        str | None, typer.Option(help="Only exchanges rated up, down or neutral.")
    ] = None,
    since: Annotated[str | None, typer.Option(help="How far back: 7d, 12h, 30m.")] = None,
    key: Annotated[str | None, typer.Option(help="Only this key's exchanges (name or id).")] = None,
    limit: Annotated[int, typer.Option(min=1, max=5000)] = 5000,
) -> None:
    """Write a dataset of rated, captured exchanges (correction -> target) through the
    gateway's /admin/exchanges (EVALS_BASE_URL, EVALS_API_KEY)."""
    settings = _settings()
    try:
        items = fetch_exchanges(
            settings, rating=rating, since=since, key=key, feedback="true", limit=limit
        )
    except GatewayUnavailable as exc:
        console.print(f"[red]error[/] {exc}")
        raise typer.Exit(EXIT_RUN_FAILED) from exc
    samples = from_feedback(items)
    write_dataset(samples, out)
    console.print(f"{len(samples)} samples from {len(items)} rated exchanges -> {out}")


@app.command()
def online(
    once: Annotated[bool, typer.Option(help="One pass, then exit.")] = False,
    suite: Annotated[str | None, typer.Option(help="Suite (EVALS_ONLINE_SUITE).")] = None,
) -> None:
    """Score captured exchanges with a suite's scorers, continuously (or --once), and
    export evals_online_score / evals_online_samples_total over OTLP."""
    settings = _settings()
    try:
        chosen = load_suite(suite or settings.online_suite, settings.suites_dir)
        scorer = OnlineScorer(chosen, settings)
    except (SuiteError, ScorerConfigError) as exc:
        console.print(f"[red]error[/] {exc}")
        raise typer.Exit(EXIT_RUN_FAILED) from exc
    metrics = OnlineMetrics()
    try:
        asyncio.run(_online_passes(scorer, metrics, settings, once))
    except GatewayUnavailable as exc:
        console.print(f"[red]error[/] {exc}")
        raise typer.Exit(EXIT_RUN_FAILED) from exc
    finally:
        metrics.shutdown()


async def _online_passes(
    scorer: OnlineScorer, metrics: OnlineMetrics, settings: EvalsSettings, once: bool
) -> None:
    async with OpenAIClient(settings) as client:
        while True:
            try:
                items = fetch_exchanges(
                    settings,
                    captured="true",
                    since=settings.online_since,
                    limit=settings.online_max_samples,
                )
            except GatewayUnavailable as exc:
                if once:
                    raise
                console.print(f"[yellow]gateway unavailable[/] {exc}; retrying")
                items = []
            result = await scorer.score(items, client)
            metrics.record(scorer.suite.name, result)
            metrics.flush()
            means = ", ".join(f"{k}={v:.3f}" for k, v in result.means.items()) or "-"
            console.print(f"online {scorer.suite.name}: {result.samples} scored; {means}")
            if once:
                return
            await asyncio.sleep(settings.online_interval_s)
