"""NetworkPolicies: deny all ingress in the namespace, then open only the paths the design needs.

gateway -> llm, embedder, redis; evals (and any client) -> gateway; services -> collector;
collector -> every pod's metrics port. Egress stays open (weights are downloaded at start).
"""

from __future__ import annotations

from typing import Any

import pulumi_kubernetes as k8s

from blueprint_infra import kube
from blueprint_infra.context import AppContext
from blueprint_infra.gateway import NAME as GATEWAY
from blueprint_infra.gateway import PORT as GATEWAY_PORT
from blueprint_infra.model_service import EMBEDDER, LLM
from blueprint_infra.observability import NAME as COLLECTOR
from blueprint_infra.observability import OTLP_GRPC, OTLP_HTTP
from blueprint_infra.redis import NAME as REDIS
from blueprint_infra.redis import PORT as REDIS_PORT


def _from(*components: str) -> list[dict[str, Any]]:
    return [{"pod_selector": {"match_labels": kube.selector(name)}} for name in components]


def _policy(
    ctx: AppContext,
    name: str,
    target: str | None,
    sources: list[dict[str, Any]] | None,
    ports: list[int],
) -> k8s.networking.v1.NetworkPolicy:
    rule: dict[str, Any] = {"ports": [{"protocol": "TCP", "port": port} for port in ports]}
    if sources is not None:
        rule["from"] = sources
    return k8s.networking.v1.NetworkPolicy(
        name,
        metadata=kube.metadata(name, ctx.namespace, kube.labels(name, ctx.part_of)),
        spec={
            "pod_selector": {"match_labels": kube.selector(target)} if target else {},
            "policy_types": ["Ingress"],
            "ingress": [rule],
        },
        opts=ctx.opts,
    )


def create_network_policies(ctx: AppContext) -> list[k8s.networking.v1.NetworkPolicy]:
    collector = ctx.config.observability.collector
    scrapers = [COLLECTOR] if collector else []
    policies = [
        k8s.networking.v1.NetworkPolicy(
            "default-deny-ingress",
            metadata=kube.metadata(
                "default-deny-ingress", ctx.namespace, kube.labels("default-deny", ctx.part_of)
            ),
            spec={"pod_selector": {}, "policy_types": ["Ingress"]},
            opts=ctx.opts,
        ),
        # The gateway is the public entry point (authenticated): clients, the ingress
        # controller and the evals job all reach it.
        _policy(ctx, "allow-gateway", GATEWAY, None, [GATEWAY_PORT]),
        _policy(ctx, "allow-llm", LLM.name, _from(GATEWAY, *scrapers), [LLM.port]),
        _policy(ctx, "allow-embedder", EMBEDDER.name, _from(GATEWAY, *scrapers), [EMBEDDER.port]),
    ]
    if ctx.config.platform == "kubernetes" and ctx.config.redis.mode == "in-cluster":
        policies.append(_policy(ctx, "allow-redis", REDIS, _from(GATEWAY), [REDIS_PORT]))
    if collector:
        namespace_pods: list[dict[str, Any]] = [{"pod_selector": {}}]
        policies.append(
            _policy(ctx, "allow-otel-collector", COLLECTOR, namespace_pods, [OTLP_GRPC, OTLP_HTTP])
        )
    return policies
