"""Run quality suites: generate (async, bounded), score, and summarise with statistics."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from evals.client import Generation, OpenAIClient, RequestFailed
from evals.datasets import DatasetError, Sample, load_dataset
from evals.judge_calibration import calibrate_judge
from evals.results import MetricResult, SampleRecord, SuiteResult
from evals.scorers import Scorer, ScoringContext, build_scorer
from evals.scorers.judge import LLMJudge
from evals.settings import EvalsSettings
from evals.stats import by_category, classification_report, summarise
from evals.structured_output import StructuredOutput
from evals.suites import Suite


async def generate(
    client: OpenAIClient,
    suite: Suite,
    sample: Sample,
    structured: StructuredOutput | None = None,
) -> Generation:
    messages = suite.prompt.messages(sample)
    params: dict[str, Any] = suite.request.model_dump()
    if suite.endpoint == "rag":
        return await client.chat(messages, path="/rag/chat", **params)
    if structured is not None:
        return await structured.chat(client, messages, **params)
    return await client.chat(messages, **params)


async def _run_sample(
    suite: Suite,
    sample: Sample,
    scorers: list[Scorer],
    ctx: ScoringContext,
    structured: StructuredOutput | None,
) -> SampleRecord:
    record = SampleRecord(id=sample.id, category=sample.category)
    try:
        generation = await generate(ctx.client, suite, sample, structured)
    except RequestFailed as exc:
        record.error = str(exc)
        return record
    record.output = generation.text
    record.tool_calls = generation.tool_calls
    record.cached = generation.cached
    record.retries = generation.retries
    record.usage = generation.usage
    for scorer in scorers:
        try:
            result = await scorer.score(sample, generation, ctx)
        except RequestFailed as exc:
            record.scores[scorer.name] = None
            record.details[scorer.name] = {"error": str(exc)}
            continue
        record.scores[scorer.name] = result.value
        if result.details:
            record.details[scorer.name] = result.details
    return record


def _metric(scorer: Scorer, records: list[SampleRecord], settings: EvalsSettings) -> MetricResult:
    """Failed requests score 0 (a gate must not pass on answers it never saw); samples
    the scorer could not judge (value None) are counted apart, not averaged."""
    values: list[float] = []
    categories: list[str] = []
    unscored = 0
    for record in records:
        value = record.metric_value(scorer.name)
        if value is None:
            unscored += 1
            continue
        values.append(value)
        categories.append(record.category)
    metric = MetricResult(name=scorer.name, scorer=type(scorer).__name__, unscored=unscored)
    if values:
        metric.summary = summarise(
            values, seed=settings.seed, resamples=settings.bootstrap_resamples
        )
        metric.per_category = by_category(
            values, categories, seed=settings.seed, resamples=settings.bootstrap_resamples
        )
    return metric


async def run_suite(
    suite: Suite, client: OpenAIClient, settings: EvalsSettings, progress: Progress
) -> SuiteResult:
    result = SuiteResult(
        name=suite.name,
        description=suite.description,
        dataset=suite.dataset,
        thresholds=dict(suite.thresholds),
    )
    dataset_path = settings.datasets_dir / suite.dataset
    if suite.optional and not dataset_path.exists():
        result.status = "skipped"
        result.reason = f"dataset {suite.dataset} is not present (feature disabled)"
        return result
    try:
        samples = load_dataset(dataset_path)
    except DatasetError as exc:
        result.status, result.reason = "failed", str(exc)
        return result
    scorers = [build_scorer(spec) for spec in suite.scorers]
    ctx = ScoringContext(client=client, settings=settings, request=suite.request.model_dump())
    structured = None
    if suite.structured_output is not None:
        structured = StructuredOutput(suite.structured_output, settings.structured_output)
    started = time.perf_counter()
    task = progress.add_task(suite.name, total=len(samples))

    async def one(sample: Sample) -> SampleRecord:
        record = await _run_sample(suite, sample, scorers, ctx, structured)
        progress.advance(task)
        return record

    records = list(await asyncio.gather(*(one(s) for s in samples)))
    result.samples = records
    result.n_samples = len(records)
    result.n_errors = sum(1 for r in records if r.error)
    result.error_rate = result.n_errors / len(records)
    usage: Counter[str] = Counter()
    for r in records:
        usage.update(r.usage)
    result.usage = dict(usage)
    if structured is not None:
        result.structured_output = structured.note()
    for scorer in scorers:
        result.metrics[scorer.name] = _metric(scorer, records, settings)
    for scorer in scorers:
        if scorer.kind == "classification":
            by_id = {s.id: s for s in samples}
            result.classification = classification_report(
                [str(by_id[r.id].label) for r in records],
                [(r.details.get(scorer.name) or {}).get("predicted") for r in records],
                labels=sorted({c for s in samples for c in (s.choices or [])}),
            )
            break
    judges = [s for s in scorers if isinstance(s, LLMJudge)]
    for judge_scorer in judges:
        agreement = await calibrate_judge(judge_scorer, suite, client, settings)
        result.judge.append(agreement)
        metric = result.metrics[judge_scorer.name]
        metric.gating = agreement.gates
        metric.gating_note = (
            f"judge kappa {agreement.kappa:.2f} vs human labels "
            f"{'>=' if agreement.gates else '<'} {agreement.min_kappa:.2f}"
        )
    result.duration_s = time.perf_counter() - started
    return result


def progress_bar() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
