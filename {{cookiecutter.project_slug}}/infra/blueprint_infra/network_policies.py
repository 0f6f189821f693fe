"""NetworkPolicies: deny all ingress and all egress in the namespace, then open only the
paths the design needs.

Ingress: clients (the ingress controller, the evals job) -> gateway; gateway -> llm,
embedder, redis; the evals-key Job (and online-evals-key, with `evals.online`) -> redis;
services -> collector; collector -> every pod's metrics port.

Egress: every pod -> DNS (`network.dnsNamespace`); gateway -> llm, embedder, Redis
(in-cluster, or the external address), external upstreams over HTTPS when the stack has
upstream keys; evals (and online-evals) -> gateway; evals-key (and online-evals-key) ->
Redis; llm/embedder -> HTTPS on the
internet while `network.modelDownloads` (weights from the hub); telemetry -> the
collector or the export endpoint; collector -> the pods it scrapes and the Kubernetes API
(its pod discovery). "Internet" never includes private ranges or the cloud metadata
address (169.254.169.254), so a compromised pod cannot reach the node's credentials.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import pulumi_kubernetes as k8s

from blueprint_infra import kube
from blueprint_infra.context import AppContext
from blueprint_infra.evals_job import NAME as EVALS
from blueprint_infra.evals_key import NAME as EVALS_KEY
from blueprint_infra.evals_key import ONLINE_NAME as ONLINE_EVALS_KEY
from blueprint_infra.gateway import NAME as GATEWAY
from blueprint_infra.gateway import PORT as GATEWAY_PORT
from blueprint_infra.model_service import EMBEDDER, LLM
from blueprint_infra.observability import NAME as COLLECTOR
from blueprint_infra.observability import OTLP_GRPC, OTLP_HTTP
from blueprint_infra.online_evals import NAME as ONLINE_EVALS
from blueprint_infra.redis import NAME as REDIS
from blueprint_infra.redis import PORT as REDIS_PORT

NOT_INTERNET = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "169.254.0.0/16"]
INTERNET: dict[str, Any] = {"ip_block": {"cidr": "0.0.0.0/0", "except": NOT_INTERNET}}
HTTPS = 443
KUBE_API_PORTS = [443, 6443]


@dataclass(frozen=True)
class RedisEgress:
    """Where the app's Redis is, for the egress rules of its clients."""

    in_cluster: bool
    cidrs: tuple[str, ...] = ()
    port: int = REDIS_PORT

    def rule(self) -> dict[str, Any]:
        if self.in_cluster:
            return _rule(_pods(REDIS), [REDIS_PORT])
        return _rule([{"ip_block": {"cidr": cidr}} for cidr in self.cidrs], [self.port])


def _pods(*components: str) -> list[dict[str, Any]]:
    return [{"pod_selector": {"match_labels": kube.selector(name)}} for name in components]


def _rule(peers: list[dict[str, Any]] | None, ports: list[int], key: str = "to") -> dict[str, Any]:
    rule: dict[str, Any] = {"ports": [{"protocol": "TCP", "port": port} for port in ports]}
    if peers is not None:
        rule[key] = peers
    return rule


def _network_policy(
    ctx: AppContext, name: str, target: str | None, kind: str, rules: list[dict[str, Any]]
) -> k8s.networking.v1.NetworkPolicy:
    return k8s.networking.v1.NetworkPolicy(
        name,
        metadata=kube.metadata(name, ctx.namespace, kube.labels(name, ctx.part_of)),
        spec={
            "pod_selector": {"match_labels": kube.selector(target)} if target else {},
            "policy_types": [kind],
            kind.lower(): rules,
        },
        opts=ctx.opts,
    )


def _policy(
    ctx: AppContext,
    name: str,
    target: str | None,
    sources: list[dict[str, Any]] | None,
    ports: list[int],
) -> k8s.networking.v1.NetworkPolicy:
    return _network_policy(ctx, name, target, "Ingress", [_rule(sources, ports, key="from")])


def _deny_all(ctx: AppContext, kind: str) -> k8s.networking.v1.NetworkPolicy:
    name = f"default-deny-{kind.lower()}"
    return k8s.networking.v1.NetworkPolicy(
        name,
        metadata=kube.metadata(name, ctx.namespace, kube.labels("default-deny", ctx.part_of)),
        spec={"pod_selector": {}, "policy_types": [kind]},
        opts=ctx.opts,
    )


def _endpoint_port(endpoint: str) -> int:
    url = urlparse(endpoint)
    return url.port or (HTTPS if url.scheme == "https" else 80)


def telemetry_rules(ctx: AppContext) -> list[dict[str, Any]]:
    """Where the services send OTLP: the collector, a direct endpoint, or nowhere."""
    observability = ctx.config.observability
    if observability.collector:
        return [_rule(_pods(COLLECTOR), [OTLP_GRPC, OTLP_HTTP])]
    if observability.export_endpoint:
        anywhere: list[dict[str, Any]] = [
            {"ip_block": {"cidr": "0.0.0.0/0"}},
            {"namespace_selector": {}},
        ]
        return [_rule(anywhere, [_endpoint_port(observability.export_endpoint)])]
    return []


def _dns_rule(ctx: AppContext) -> dict[str, Any]:
    namespace = {"kubernetes.io/metadata.name": ctx.config.network.dns_namespace}
    return {
        "to": [{"namespace_selector": {"match_labels": namespace}}],
        "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
    }


def egress_rules(
    ctx: AppContext, redis: RedisEgress, external_upstreams: bool
) -> dict[str, list[dict[str, Any]]]:
    """Each component's allowed egress, DNS aside (every pod gets that)."""
    telemetry = telemetry_rules(ctx)
    gateway = [
        _rule(_pods(LLM.name), [LLM.port]),
        _rule(_pods(EMBEDDER.name), [EMBEDDER.port]),
        redis.rule(),
        *telemetry,
    ]
    if external_upstreams:  # an OpenAI-compatible provider as a fallback
        gateway.append(_rule([INTERNET], [HTTPS]))
    models = [*telemetry]
    if ctx.config.network.model_downloads:
        models.append(_rule([INTERNET], [HTTPS]))
    rules = {
        GATEWAY: gateway,
        LLM.name: models,
        EMBEDDER.name: models,
        EVALS: [_rule(_pods(GATEWAY), [GATEWAY_PORT]), *telemetry],
        EVALS_KEY: [redis.rule()],
    }
    if ctx.config.evals.online:
        rules[ONLINE_EVALS] = [_rule(_pods(GATEWAY), [GATEWAY_PORT]), *telemetry]
        rules[ONLINE_EVALS_KEY] = [redis.rule()]
    if ctx.config.observability.collector:
        scraped = [
            _rule(_pods(GATEWAY), [GATEWAY_PORT]),
            _rule(_pods(LLM.name), [LLM.port]),
            _rule(_pods(EMBEDDER.name), [EMBEDDER.port]),
            # Pod discovery: the API server's address differs per cluster.
            _rule([{"ip_block": {"cidr": "0.0.0.0/0"}}], KUBE_API_PORTS),
        ]
        endpoint = ctx.config.observability.export_endpoint
        if endpoint:
            scraped.append(_rule([{"ip_block": {"cidr": "0.0.0.0/0"}}], [_endpoint_port(endpoint)]))
        rules[COLLECTOR] = scraped
    return rules


def create_network_policies(
    ctx: AppContext, redis: RedisEgress, external_upstreams: bool = False
) -> list[k8s.networking.v1.NetworkPolicy]:
    collector = ctx.config.observability.collector
    scrapers = [COLLECTOR] if collector else []
    policies = [
        _deny_all(ctx, "Ingress"),
        _deny_all(ctx, "Egress"),
        _network_policy(ctx, "allow-dns-egress", None, "Egress", [_dns_rule(ctx)]),
        # The gateway is the public entry point (authenticated): clients, the ingress
        # controller and the evals job all reach it.
        _policy(ctx, "allow-gateway", GATEWAY, None, [GATEWAY_PORT]),
        _policy(ctx, "allow-llm", LLM.name, _pods(GATEWAY, *scrapers), [LLM.port]),
        _policy(ctx, "allow-embedder", EMBEDDER.name, _pods(GATEWAY, *scrapers), [EMBEDDER.port]),
    ]
    if redis.in_cluster:
        writers = [GATEWAY, EVALS_KEY, *([ONLINE_EVALS_KEY] if ctx.config.evals.online else [])]
        policies.append(_policy(ctx, "allow-redis", REDIS, _pods(*writers), [REDIS_PORT]))
    if collector:
        namespace_pods: list[dict[str, Any]] = [{"pod_selector": {}}]
        policies.append(
            _policy(ctx, "allow-otel-collector", COLLECTOR, namespace_pods, [OTLP_GRPC, OTLP_HTTP])
        )
    for component, rules in egress_rules(ctx, redis, external_upstreams).items():
        if rules:
            policies.append(
                _network_policy(ctx, f"allow-{component}-egress", component, "Egress", rules)
            )
    return policies
