"""The quality loop's evals side (docs/feedback.md): datasets from rated exchanges and
online scores of captured ones, both read from the gateway's `GET /admin/exchanges`.

`from_feedback` turns exchanges with feedback into dataset rows (the evals JSONL
format): the captured messages become the input, a correction the target, duplicates
of one input merge into one row with every request id in `metadata.request_ids`.
`OnlineScorer` scores captured answers as they were sent (no new generation) with a
suite's scorers and exports `evals_online_score{suite,metric}` and
`evals_online_samples_total{suite}` over OTLP, the path every service's metrics take.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx

from evals.client import Generation, OpenAIClient
from evals.datasets import Sample
from evals.scorers import ScorerConfigError, ScoringContext, build_scorer
from evals.scorers.judge import LLMJudge
from evals.settings import EvalsSettings
from evals.suites import Suite
from service_common.otlp import metric_exporter, service_name

log = logging.getLogger("evals.loop")


class GatewayUnavailable(RuntimeError):
    pass


def fetch_exchanges(settings: EvalsSettings, **filters: Any) -> list[dict[str, Any]]:
    """`GET /admin/exchanges` with the given filters (None values left out)."""
    params = {k: v for k, v in filters.items() if v is not None}
    url = f"{settings.gateway_root}/admin/exchanges"
    try:
        response = httpx.get(url, params=params, headers=settings.auth_headers(), timeout=60)
    except httpx.HTTPError as exc:
        raise GatewayUnavailable(f"{url}: {type(exc).__name__}: {exc}") from exc
    if response.status_code != 200:
        raise GatewayUnavailable(f"{url} answered {response.status_code}: {response.text[:300]}")
    data: list[dict[str, Any]] = response.json()["data"]
    return data


def _messages(captured: Any) -> str | list[dict[str, Any]]:
    """A captured input as a dataset input: a prompt string, or chat messages with text."""
    if isinstance(captured, str):
        return captured
    if isinstance(captured, list) and all(isinstance(m, dict) for m in captured):
        return [{**m, "content": _text_of(m.get("content"))} for m in captured]
    return json.dumps(captured)


def _text_of(content: Any) -> str:
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


def _correction(feedback: list[dict[str, Any]]) -> str | None:
    corrections = [f["correction"] for f in feedback if f.get("correction")]
    return corrections[-1] if corrections else None  # the latest one wins


def from_feedback(items: Iterable[dict[str, Any]]) -> list[Sample]:
    """Dataset rows from exchanges with feedback, one per distinct input."""
    rows: dict[str, Sample] = {}
    for item in items:
        content = item.get("content")
        if not content:
            continue  # rated but not captured: nothing to replay
        sample_input = _messages(content["input"])
        digest = hashlib.sha256(json.dumps(sample_input, sort_keys=True).encode()).hexdigest()
        feedback = item.get("feedback") or []
        row = rows.get(digest)
        if row is None:
            row = rows[digest] = Sample(
                id=f"fb-{digest[:16]}",
                input=sample_input,  # type: ignore[arg-type]
                target=_correction(feedback),
                label="comply",
                metadata={
                    "category": "feedback",
                    "request_ids": [],
                    "ratings": [],
                    "model": item.get("model"),
                    "answer": content.get("output"),
                },
            )
        row.metadata["request_ids"].append(item["request_id"])
        row.metadata["ratings"] += [f.get("rating") for f in feedback]
        comments = [f["comment"] for f in feedback if f.get("comment")]
        if comments:
            row.metadata.setdefault("comments", []).extend(comments)
        if row.target is None:
            row.target = _correction(feedback)
    return list(rows.values())


def write_dataset(samples: list[Sample], path: Any) -> None:
    lines = [s.model_dump_json(exclude_none=True) for s in samples]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


@dataclass
class OnlinePass:
    """What one pass scored: samples and the mean of each metric."""

    samples: int = 0
    means: dict[str, float] = field(default_factory=dict)


class OnlineMetrics:
    """The online job's instruments, exported over OTLP when an endpoint is set."""

    def __init__(self) -> None:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
        from opentelemetry.sdk.resources import Resource

        exporter = metric_exporter()  # the services' OTEL_* rules, for metrics
        readers = [PeriodicExportingMetricReader(exporter)] if exporter is not None else []
        resource = Resource.create({"service.name": service_name("evals-online")})
        self.provider = MeterProvider(metric_readers=readers, resource=resource)
        meter = self.provider.get_meter("evals.online")
        self.score = meter.create_gauge(
            "evals_online_score", description="Mean online score of the last pass, 0..1."
        )
        self.samples = meter.create_counter(
            "evals_online_samples", description="Captured exchanges scored online."
        )

    def record(self, suite: str, result: OnlinePass) -> None:
        self.samples.add(result.samples, {"suite": suite})
        for metric, value in result.means.items():
            self.score.set(value, {"suite": suite, "metric": metric})

    def flush(self) -> None:
        self.provider.force_flush()

    def shutdown(self) -> None:
        self.provider.shutdown()


def prometheus_series(registry: Any) -> None:
    """Declare, in a prometheus_client registry, the series the OTLP path turns the
    online metrics into (the collector adds `_total` to the counter), so dashboards
    can be checked against them (tests/test_dashboards.py)."""
    from prometheus_client import Counter, Gauge

    Gauge("evals_online_score", "Online score", ["suite", "metric"], registry=registry)
    Counter("evals_online_samples", "Scored online", ["suite"], registry=registry)


def _online_sample(item: dict[str, Any]) -> tuple[Sample, Generation] | None:
    content = item.get("content")
    if not content:
        return None
    sample = Sample(
        id=item["request_id"],
        input=_messages(content["input"]),  # type: ignore[arg-type]
        target=_correction(item.get("feedback") or []),
        label="comply",
    )
    return sample, Generation(text=content.get("output") or "")


class OnlineScorer:
    """Scores captured exchanges not scored before with the suite's scorers. The judge
    takes part only when the suite calibrates it (docs/evals.md)."""

    def __init__(self, suite: Suite, settings: EvalsSettings) -> None:
        self.suite, self.settings = suite, settings
        self.scorers = [build_scorer(spec) for spec in suite.scorers]
        if suite.judge_calibration is None:
            self.scorers = [s for s in self.scorers if not isinstance(s, LLMJudge)]
        self.seen: set[str] = set()

    async def score(self, items: list[dict[str, Any]], client: OpenAIClient) -> OnlinePass:
        ctx = ScoringContext(client, self.settings, self.suite.request.model_dump())
        values: dict[str, list[float]] = {s.name: [] for s in self.scorers}
        result = OnlinePass()
        self.seen &= {item["request_id"] for item in items}  # forget what left the window
        for item in items:
            pair = _online_sample(item)
            if pair is None or item["request_id"] in self.seen:
                continue
            self.seen.add(item["request_id"])
            result.samples += 1
            for scorer in self.scorers:
                try:
                    value = (await scorer.score(*pair, ctx)).value
                except ScorerConfigError as exc:
                    log.warning("scorer %s: %s", scorer.name, exc)
                    continue
                if value is not None:
                    values[scorer.name].append(value)
        result.means = {name: sum(v) / len(v) for name, v in values.items() if v}
        return result
