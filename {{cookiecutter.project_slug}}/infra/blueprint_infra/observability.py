"""OpenTelemetry collector: receives OTLP from the services and scrapes their `/metrics`.

Pods announce themselves with `prometheus.io/*` annotations; the collector discovers them
in its own namespace only (a namespaced Role, no cluster-wide read access).
"""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import yaml

from blueprint_infra import kube
from blueprint_infra.context import AppContext

NAME = "otel-collector"
OTLP_GRPC = 4317
OTLP_HTTP = 4318
HEALTH = 13133


def otel_env(ctx: AppContext, service_name: str) -> dict[str, str]:
    """The OTEL_* variables of a service: the in-cluster collector, a direct OTLP endpoint,
    or tracing off."""
    observability = ctx.config.observability
    if observability.collector:
        endpoint = f"http://{NAME}:{OTLP_HTTP}"
    elif observability.export_endpoint:
        endpoint = observability.export_endpoint
    else:
        return {"OTEL_SDK_DISABLED": "true", "OTEL_SERVICE_NAME": service_name}
    return {
        "OTEL_SDK_DISABLED": "false",
        "OTEL_SERVICE_NAME": service_name,
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
    }


def collector_config(namespace: str, export_endpoint: str | None) -> dict[str, Any]:
    exporters: dict[str, Any] = {"debug": {"verbosity": "basic"}}
    names = ["debug"]
    if export_endpoint:
        exporters["otlphttp"] = {"endpoint": export_endpoint}
        names = ["otlphttp"]
    scrape = {
        "job_name": "pods",
        "kubernetes_sd_configs": [{"role": "pod", "namespaces": {"names": [namespace]}}],
        "relabel_configs": [
            {
                "source_labels": ["__meta_kubernetes_pod_annotation_prometheus_io_scrape"],
                "action": "keep",
                "regex": "true",
            },
            {
                "source_labels": [
                    "__address__",
                    "__meta_kubernetes_pod_annotation_prometheus_io_port",
                ],
                "action": "replace",
                "regex": "([^:]+)(?::\\d+)?;(\\d+)",
                "replacement": "$$1:$$2",
                "target_label": "__address__",
            },
            {
                "source_labels": ["__meta_kubernetes_pod_label_app_kubernetes_io_name"],
                "target_label": "service",
            },
        ],
    }
    return {
        "extensions": {"health_check": {"endpoint": f"0.0.0.0:{HEALTH}"}},
        "receivers": {
            "otlp": {
                "protocols": {
                    "grpc": {"endpoint": f"0.0.0.0:{OTLP_GRPC}"},
                    "http": {"endpoint": f"0.0.0.0:{OTLP_HTTP}"},
                }
            },
            "prometheus": {"config": {"scrape_configs": [scrape]}},
        },
        "processors": {
            "batch": {},
            "memory_limiter": {"check_interval": "1s", "limit_percentage": 80},
        },
        "exporters": exporters,
        "service": {
            "extensions": ["health_check"],
            "pipelines": {
                "traces": {
                    "receivers": ["otlp"],
                    "processors": ["memory_limiter", "batch"],
                    "exporters": names,
                },
                "metrics": {
                    "receivers": ["otlp", "prometheus"],
                    "processors": ["memory_limiter", "batch"],
                    "exporters": names,
                },
                "logs": {
                    "receivers": ["otlp"],
                    "processors": ["memory_limiter", "batch"],
                    "exporters": names,
                },
            },
        },
    }


def create_collector(ctx: AppContext) -> k8s.apps.v1.Deployment:
    cfg = ctx.config.observability
    labels = kube.labels(NAME, ctx.part_of)
    meta = kube.metadata(NAME, ctx.namespace, labels)
    account = k8s.core.v1.ServiceAccount(NAME, metadata=meta, opts=ctx.opts)
    role = k8s.rbac.v1.Role(
        NAME,
        metadata=meta,
        rules=[{"api_groups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}],
        opts=ctx.opts,
    )
    binding = k8s.rbac.v1.RoleBinding(
        NAME,
        metadata=meta,
        role_ref={"api_group": "rbac.authorization.k8s.io", "kind": "Role", "name": NAME},
        subjects=[{"kind": "ServiceAccount", "name": NAME, "namespace": ctx.namespace}],
        opts=ctx.child(account, role),
    )
    config_text = pulumi.Output.from_input(ctx.namespace).apply(
        lambda ns: yaml.safe_dump(collector_config(ns, cfg.export_endpoint), sort_keys=False)
    )
    config_map = k8s.core.v1.ConfigMap(
        NAME, metadata=meta, data={"config.yaml": config_text}, opts=ctx.opts
    )
    deployment = k8s.apps.v1.Deployment(
        NAME,
        metadata=meta,
        spec={
            "replicas": 1,
            "selector": {"match_labels": kube.selector(NAME)},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "service_account_name": NAME,
                    "security_context": kube.pod_security(),
                    "containers": [
                        {
                            "name": NAME,
                            "image": cfg.image,
                            "args": ["--config=/conf/config.yaml"],
                            "ports": [
                                {"name": "otlp-grpc", "container_port": OTLP_GRPC},
                                {"name": "otlp-http", "container_port": OTLP_HTTP},
                                {"name": "health", "container_port": HEALTH},
                            ],
                            "resources": cfg.resources.as_kubernetes(),
                            "security_context": kube.container_security(),
                            "liveness_probe": kube.http_probe("/", "health", period=10, failures=3),
                            "readiness_probe": kube.http_probe("/", "health", period=5, failures=3),
                            "volume_mounts": [{"name": "conf", "mount_path": "/conf"}],
                        }
                    ],
                    "volumes": [{"name": "conf", "config_map": {"name": NAME}}],
                },
            },
        },
        opts=ctx.child(config_map, binding),
    )
    k8s.core.v1.Service(
        NAME,
        metadata=meta,
        spec={
            "selector": kube.selector(NAME),
            "ports": [
                {"name": "otlp-grpc", "port": OTLP_GRPC, "target_port": "otlp-grpc"},
                {"name": "otlp-http", "port": OTLP_HTTP, "target_port": "otlp-http"},
            ],
        },
        opts=ctx.opts,
    )
    return deployment
