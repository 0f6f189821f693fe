"""Grafana dashboards query only metrics the services export.

Each panel's PromQL is parsed (a syntax error fails too) and every metric name it reads
is compared with what the gateway and the model service register (fast), and with what
the running services serve on /metrics (e2e).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx
import promql_parser
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

from tests.support.project_files import PROJECT_ROOT

DASHBOARDS = sorted((PROJECT_ROOT / "observability" / "grafana" / "dashboards").glob("*.json"))
# Grafana replaces these before Prometheus sees the query.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}
SAMPLE_SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("_sum", "_count", ""),
}
# Labels Prometheus adds to every scraped series (see observability/prometheus.yml).
TARGET_LABELS = {"job", "instance", "service"}


def panel_queries(dashboard: Path) -> Iterator[tuple[str, str]]:
    def walk(panels: Iterable[dict[str, Any]]) -> Iterator[tuple[str, str]]:
        for panel in panels:
            for target in panel.get("targets", []):
                if target.get("expr"):
                    yield panel["title"], target["expr"]
            yield from walk(panel.get("panels", []))

    yield from walk(json.loads(dashboard.read_text())["panels"])


def parse(query: str) -> Any:
    for variable, value in GRAFANA_VARIABLES.items():
        query = query.replace(variable, value)
    return promql_parser.parse(query)


def selectors(node: Any) -> Iterator[Any]:
    """Every vector selector in a parsed PromQL expression."""
    if isinstance(node, promql_parser.VectorSelector):
        yield node
    elif isinstance(node, promql_parser.MatrixSelector):
        yield node.vector_selector
    elif isinstance(node, promql_parser.BinaryExpr):
        yield from selectors(node.lhs)
        yield from selectors(node.rhs)
    elif isinstance(node, promql_parser.Call):
        for arg in node.args:
            yield from selectors(arg)
    elif isinstance(node, promql_parser.AggregateExpr):
        yield from selectors(node.expr)
        if node.param is not None:
            yield from selectors(node.param)
    elif hasattr(node, "expr"):  # parens, unary minus, subqueries
        yield from selectors(node.expr)


def grouping_labels(node: Any) -> Iterator[str]:
    """Labels named in `by (...)` clauses."""
    if isinstance(node, promql_parser.AggregateExpr):
        if node.modifier is not None:
            yield from node.modifier.labels
        yield from grouping_labels(node.expr)
    elif isinstance(node, promql_parser.BinaryExpr):
        yield from grouping_labels(node.lhs)
        yield from grouping_labels(node.rhs)
    elif isinstance(node, promql_parser.Call):
        for arg in node.args:
            yield from grouping_labels(arg)
    elif hasattr(node, "expr"):
        yield from grouping_labels(node.expr)


def queried_metrics(dashboard: Path) -> dict[str, str]:
    """metric name -> title of a panel that reads it."""
    found: dict[str, str] = {}
    for title, query in panel_queries(dashboard):
        for selector in selectors(parse(query)):
            assert selector.name, f"{dashboard.name} / {title}: selector without a name"
            found.setdefault(selector.name, title)
    return found


def sample_names(families: Iterable[Any]) -> set[str]:
    """The series names a set of metric families puts in the exposition format."""
    names: set[str] = set()
    for family in families:
        suffixes = SAMPLE_SUFFIXES.get(family.type, ("",))
        names.update(family.name + suffix for suffix in suffixes)
        if family.type in ("gauge", "unknown", "untyped", "info", "stateset"):
            names.add(family.name)
    return names


def registries() -> list[CollectorRegistry]:
    from evals.loop import prometheus_series
    from gateway.exchange_log import LoopMetrics
    from gateway.metrics import GatewayMetrics
    from model_service.metrics import ServiceMetrics

    gateway = GatewayMetrics().registry
    LoopMetrics(gateway)  # the state registers the quality loop's metrics beside them
    online = CollectorRegistry()
    prometheus_series(online)  # the online evals job, through the collector
    return [gateway, ServiceMetrics("any-model").registry, online]


def online_job_series() -> set[str]:
    from evals.loop import prometheus_series

    online = CollectorRegistry()
    prometheus_series(online)
    return sample_names(online.collect())


def registered_names() -> set[str]:
    return set().union(*(sample_names(registry.collect()) for registry in registries()))


def registered_labels() -> dict[str, set[str]]:
    """Series name -> label names it can carry (declared labels, plus `le` on buckets)."""
    labels: dict[str, set[str]] = {}
    for registry in registries():
        # prometheus_client keeps declared label names on the metric objects only.
        for collector in list(registry._collector_to_names):
            declared = set(getattr(collector, "_labelnames", ()))
            for family in collector.collect():
                for name in sample_names([family]):
                    extra = {"le"} if name.endswith("_bucket") else set()
                    labels[name] = declared | extra
    return labels


def label_problems(query: str, labels: dict[str, set[str]]) -> list[str]:
    """Labels a query filters or groups on that none of its series carry."""
    expression = parse(query)
    found = list(selectors(expression))
    available = set(TARGET_LABELS).union(*(labels.get(s.name, set()) for s in found))
    problems = [f"by ({label})" for label in grouping_labels(expression) if label not in available]
    for selector in found:
        for matcher in selector.matchers.matchers:
            if matcher.name not in labels.get(selector.name, set()) | TARGET_LABELS:
                problems.append(selector.name + "{" + matcher.name + "}")
    return problems


def test_there_are_dashboards_for_the_gateway_and_the_model_service() -> None:
    assert {path.stem for path in DASHBOARDS} >= {"gateway", "model-service"}
    for dashboard in DASHBOARDS:
        document = json.loads(dashboard.read_text())
        assert document["uid"] and document["title"] and document["panels"]
        for _, query in panel_queries(dashboard):
            assert "prometheus" in json.dumps(document["panels"])  # the provisioned uid
            parse(query)  # valid PromQL


def test_gateway_dashboard_covers_the_design_metrics() -> None:
    queried = set(queried_metrics(PROJECT_ROOT / "observability/grafana/dashboards/gateway.json"))
    for metric in (
        "gateway_requests_total",
        "gateway_request_duration_seconds_bucket",
        "gateway_overhead_seconds_bucket",
        "gateway_time_to_first_token_seconds_bucket",
        "gateway_cache_requests_total",
        "gateway_rate_limited_total",
        "gateway_upstream_errors_total",
        "gateway_in_flight_requests",
        "gateway_tokens_total",
    ):
        assert metric in queried, metric


def test_quality_loop_dashboard_shows_feedback_and_online_scores() -> None:
    dashboard = PROJECT_ROOT / "observability/grafana/dashboards/quality-loop.json"
    queried = set(queried_metrics(dashboard))
    for metric in ("gateway_feedback_total", "evals_online_score", "evals_online_samples_total"):
        assert metric in queried, metric


def test_model_dashboard_uses_vllm_names() -> None:
    dashboard = PROJECT_ROOT / "observability/grafana/dashboards/model-service.json"
    queried = set(queried_metrics(dashboard))
    for metric in (
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:time_to_first_token_seconds_bucket",
        "vllm:e2e_request_latency_seconds_bucket",
        "vllm:generation_tokens_total",
    ):
        assert metric in queried, metric


@pytest.mark.parametrize("dashboard", DASHBOARDS, ids=lambda path: path.stem)
def test_every_queried_metric_is_registered_by_a_service(dashboard: Path) -> None:
    registered = registered_names()
    missing = {m: title for m, title in queried_metrics(dashboard).items() if m not in registered}
    assert missing == {}


@pytest.mark.parametrize("dashboard", DASHBOARDS, ids=lambda path: path.stem)
def test_every_label_a_panel_uses_is_one_its_series_carry(dashboard: Path) -> None:
    labels = registered_labels()
    problems = {
        f"{title}: {query}": found
        for title, query in panel_queries(dashboard)
        if (found := label_problems(query, labels))
    }
    assert problems == {}


def test_the_label_check_notices_a_wrong_label() -> None:
    labels = registered_labels()
    assert label_problems("sum by (route) (rate(gateway_tokens_total[5m]))", labels) == [
        "by (route)"
    ]
    assert label_problems('gateway_in_flight_requests{model="x"}', labels) == [
        "gateway_in_flight_requests{model}"
    ]
    assert label_problems("sum by (service, model) (rate(gateway_tokens_total[5m]))", labels) == []


def test_the_check_notices_an_unknown_metric(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    panel = {"title": "typo", "targets": [{"expr": "sum(rate(gateway_request_total[5m]))"}]}
    broken.write_text(json.dumps({"panels": [panel]}))
    assert set(queried_metrics(broken)) - registered_names() == {"gateway_request_total"}


@pytest.mark.e2e
def test_every_queried_metric_is_served_by_the_running_services(
    gateway_server: Any, llm_server: Any, embedder_server: Any
) -> None:
    headers = {"authorization": f"Bearer {gateway_server.master_key}"}
    chat = {
        "model": llm_server.model,
        "messages": [{"role": "user", "content": "Say hi."}],
        "max_tokens": 4,
    }
    # Traffic first, so labelled series exist.
    for _ in range(2):
        response = httpx.post(
            f"{gateway_server.base_url}/v1/chat/completions",
            json=chat,
            headers=headers,
            timeout=120,
        )
        assert response.status_code == 200, response.text
    served: set[str] = set()
    for server in (gateway_server, llm_server, embedder_server):
        text = httpx.get(f"{server.base_url}/metrics", timeout=10).text
        served |= sample_names(text_string_to_metric_families(text))
    # The online evals job is no server: it pushes its series through the collector, and
    # evals/tests/test_evals_loop.py checks that they arrive there.
    served |= online_job_series()
    for dashboard in DASHBOARDS:
        missing = {m: t for m, t in queried_metrics(dashboard).items() if m not in served}
        assert missing == {}, dashboard.name
