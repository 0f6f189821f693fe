"""Tracing setup from the standard OTEL_* variables: off unless an endpoint is set and the
SDK is enabled; on, spans reach a real OTLP/HTTP receiver under the service's name and
the SDK's sampler. Each enabled case runs in its own interpreter (a process installs its
tracer provider once)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from service_common import otlp
from service_common.tracing import configure_tracing, tracing_requested
from tests.support.otlp import OtlpReceiver, attributes_of, otlp_receiver

COMMON = Path(__file__).resolve().parents[1]
PROJECT = COMMON.parent
SCRIPT = textwrap.dedent(
    """
    import sys
    from service_common.tracing import configure_tracing, tracer
    on = configure_tracing("default-name", requires=sys.argv[1:])
    print("on" if on else "off", flush=True)
    if on:
        for _ in range(20):
            with tracer("test").start_as_current_span("work"):
                pass
        from opentelemetry import trace
        trace.get_tracer_provider().shutdown()  # flush before exit
    """
)


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with otlp_receiver() as running:
        yield running


def run(env: dict[str, str], *requires: str) -> str:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    clean["PYTHONPATH"] = os.pathsep.join([str(COMMON), str(PROJECT)])
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, *requires],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout.strip() + result.stderr


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:9/v1/traces"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318", "OTEL_SDK_DISABLED": "true"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318", "OTEL_SDK_DISABLED": " TRUE "}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318", "OTEL_SDK_DISABLED": "false"}, True),
        ({"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://x:4318/v1/metrics"}, False),
    ],
)
def test_traces_are_exported_only_with_an_endpoint_and_the_sdk_on(env, expected) -> None:
    assert tracing_requested(env) is expected


def test_each_signal_has_its_own_endpoint_and_protocol() -> None:
    env = {
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://x:4317",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "http/protobuf",
    }
    assert otlp.export_requested(env, "metrics") and not otlp.export_requested(env, "traces")
    assert otlp.otlp_protocol(env, "traces") == "grpc"
    assert otlp.otlp_protocol(env, "metrics") == "http/protobuf"
    assert otlp.otlp_protocol({}) == "http/protobuf"
    assert otlp.service_name("gateway", {"OTEL_SERVICE_NAME": ""}) == "gateway"
    assert otlp.service_name("gateway", {"OTEL_SERVICE_NAME": "edge"}) == "edge"


def test_without_an_endpoint_nothing_is_installed(monkeypatch) -> None:
    from opentelemetry import trace

    for name in [k for k in os.environ if k.startswith("OTEL_")]:
        monkeypatch.delenv(name)
    before = trace.get_tracer_provider()
    assert configure_tracing("anything") is False
    assert trace.get_tracer_provider() is before
    assert otlp.metric_exporter() is None


def test_spans_reach_the_receiver_under_the_service_name(receiver) -> None:
    output = run(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_SERVICE_NAME": "under-test"}
    )
    assert output.startswith("on"), output
    spans = receiver.wait_for(lambda s: s.name == "work", timeout=15)
    assert len(spans) == 20
    assert {receiver.services[s.span_id] for s in spans} == {"under-test"}


def test_the_default_name_and_the_sdk_sampler_apply(receiver) -> None:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_TRACES_SAMPLER": "traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0",
    }
    assert run(env).startswith("on")
    assert receiver.spans == []  # ratio 0: nothing sampled, nothing sent
    assert run({**env, "OTEL_TRACES_SAMPLER_ARG": "1"}).startswith("on")
    spans = receiver.wait_for(lambda s: s.name == "work", timeout=15)
    assert {receiver.services[s.span_id] for s in spans} == {"default-name"}
    assert len(spans) == 20 and attributes_of(spans[0]) == {}


def test_a_missing_instrumentation_leaves_tracing_off_with_a_warning(receiver) -> None:
    output = run({"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint}, "no_such_instrumentation")
    assert output.startswith("off")
    assert "OpenTelemetry is not installed here" in output
