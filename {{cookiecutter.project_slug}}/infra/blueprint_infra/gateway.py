"""Gateway: Deployment, Service, HorizontalPodAutoscaler, PodDisruptionBudget, Ingress.

The Ingress publishes only `ingress.publicPaths` (default `/v1`: the OpenAI API and RAG);
`/metrics`, `/docs`, `/openapi.json`, `/admin` and `/ui` are routed nowhere, so they stay
reachable only from inside the cluster (the collector scrapes the pods directly). A
`LoadBalancer` or `NodePort` Service is layer 4 and publishes every path: prefer the
Ingress (docs/security.md).
"""

from __future__ import annotations

import json
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from blueprint_infra import kube
from blueprint_infra.context import AppContext
from blueprint_infra.evals_key import ONLINE_KEY_NAME
from blueprint_infra.model_service import EMBEDDER, LLM
from blueprint_infra.observability import otel_env
from blueprint_infra.secrets import GATEWAY_SECRET

NAME = "gateway"
PORT = 8080
AWS_TLS_CERT = "service.beta.kubernetes.io/aws-load-balancer-ssl-cert"
# Streaming responses must not be buffered by the ingress, and may run for minutes.
NGINX_STREAMING = {
    "nginx.ingress.kubernetes.io/proxy-buffering": "off",
    "nginx.ingress.kubernetes.io/proxy-read-timeout": "3600",
    "nginx.ingress.kubernetes.io/proxy-send-timeout": "3600",
}


def upstreams(ctx: AppContext) -> list[dict[str, Any]]:
    services = [(LLM, ctx.config.llm), (EMBEDDER, ctx.config.embedder)]
    return [
        {
            "name": spec.name,
            "base_url": f"http://{spec.name}:{spec.port}",
            "models": [cfg.model],
            "weight": 1,
        }
        for spec, cfg in services
        if cfg.enabled
    ]


def gateway_env(ctx: AppContext) -> dict[str, str]:
    cfg = ctx.config
    return {
        "GATEWAY_HOST": "0.0.0.0",
        "GATEWAY_PORT": str(PORT),
        "GATEWAY_ENVIRONMENT": cfg.gateway.environment,
        "GATEWAY_UPSTREAMS": json.dumps(upstreams(ctx)),
        "GATEWAY_SEMANTIC_CACHE_ENABLED": str(cfg.gateway.semantic_cache).lower(),
        "GATEWAY_EMBEDDING_MODEL": cfg.embedder.model,
        "GATEWAY_CAPTURE_SAMPLE_RATE": str(cfg.gateway.capture_sample_rate),
        "HOME": "/tmp",
        **otel_env(ctx, NAME),
        **_online_reader(ctx),
    }


def _online_reader(ctx: AppContext) -> dict[str, str]:
    """The online evals job reads /admin/exchanges with its own key, not the master."""
    if not (ctx.config.evals.enabled and ctx.config.evals.online):
        return {}
    return {"GATEWAY_EXCHANGE_READER_KEYS": json.dumps([ONLINE_KEY_NAME])}


def create_gateway(
    ctx: AppContext, upstream_key_envs: tuple[str, ...], *depends_on: pulumi.Resource
) -> tuple[k8s.apps.v1.Deployment, k8s.core.v1.Service, k8s.networking.v1.Ingress | None]:
    cfg = ctx.config.gateway
    labels = kube.labels(NAME, ctx.part_of)
    secret_env = {"GATEWAY_MASTER_KEY": (GATEWAY_SECRET, "GATEWAY_MASTER_KEY")}
    secret_env["GATEWAY_REDIS_URL"] = (GATEWAY_SECRET, "GATEWAY_REDIS_URL")
    secret_env.update({name: (GATEWAY_SECRET, name) for name in upstream_key_envs})
    container = {
        "name": NAME,
        "image": ctx.images.gateway,
        "command": ["python", "-m", "gateway"],
        "args": ["serve"],
        "env": kube.env(gateway_env(ctx)) + kube.secret_env(secret_env),
        "ports": [{"name": "http", "container_port": PORT}],
        "resources": cfg.resources.as_kubernetes(),
        "security_context": kube.container_security(),
        "startup_probe": kube.http_probe("/healthz", "http", period=2, failures=60),
        "liveness_probe": kube.http_probe("/healthz", "http", period=10, failures=3),
        "readiness_probe": kube.http_probe("/readyz", "http", period=5, failures=2),
        "volume_mounts": [{"name": "tmp", "mount_path": "/tmp"}],
    }
    deployment = k8s.apps.v1.Deployment(
        NAME,
        metadata=kube.metadata(NAME, ctx.namespace, labels),
        spec={
            "replicas": cfg.replicas,
            "selector": {"match_labels": kube.selector(NAME)},
            "strategy": {
                "type": "RollingUpdate",
                "rolling_update": {"max_surge": 1, "max_unavailable": 0},
            },
            "template": {
                "metadata": {
                    "labels": labels,
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(PORT),
                        "prometheus.io/path": "/metrics",
                    },
                },
                "spec": {
                    "automount_service_account_token": False,
                    "security_context": kube.pod_security(),
                    "image_pull_secrets": ctx.pull_secrets,
                    "containers": [container],
                    "volumes": [kube.tmp_volume(size="256Mi")],
                    "topology_spread_constraints": [
                        {
                            "max_skew": 1,
                            "topology_key": "kubernetes.io/hostname",
                            "when_unsatisfiable": "ScheduleAnyway",
                            "label_selector": {"match_labels": kube.selector(NAME)},
                        }
                    ],
                },
            },
        },
        # The HPA owns the replica count once it exists.
        opts=pulumi.ResourceOptions.merge(
            ctx.child(*depends_on), pulumi.ResourceOptions(ignore_changes=["spec.replicas"])
        ),
    )
    service = _service(ctx, labels)
    k8s.autoscaling.v2.HorizontalPodAutoscaler(
        NAME,
        metadata=kube.metadata(NAME, ctx.namespace, labels),
        spec={
            "scale_target_ref": {"api_version": "apps/v1", "kind": "Deployment", "name": NAME},
            "min_replicas": cfg.replicas,
            "max_replicas": cfg.max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {
                            "type": "Utilization",
                            "average_utilization": cfg.target_cpu_utilization,
                        },
                    },
                }
            ],
        },
        opts=ctx.child(deployment),
    )
    k8s.policy.v1.PodDisruptionBudget(
        NAME,
        metadata=kube.metadata(NAME, ctx.namespace, labels),
        spec={"max_unavailable": 1, "selector": {"match_labels": kube.selector(NAME)}},
        opts=ctx.opts,
    )
    ingress = _ingress(ctx, labels, service) if cfg.ingress is not None else None
    return deployment, service, ingress


def _service(ctx: AppContext, labels: dict[str, str]) -> k8s.core.v1.Service:
    cfg = ctx.config.gateway
    annotations: dict[str, str] = {}
    port = PORT
    if cfg.service_type == "LoadBalancer" and cfg.load_balancer_tls_certificate:
        annotations[AWS_TLS_CERT] = cfg.load_balancer_tls_certificate
        annotations["service.beta.kubernetes.io/aws-load-balancer-ssl-ports"] = "443"
        annotations["service.beta.kubernetes.io/aws-load-balancer-type"] = "nlb"
        port = 443
    if cfg.service_type != "ClusterIP":
        pulumi.log.warn(
            f"gateway.serviceType {cfg.service_type} publishes every gateway path, /metrics, "
            "/docs and /admin included; gateway.ingress publishes only its publicPaths"
        )
    return k8s.core.v1.Service(
        NAME,
        metadata=kube.metadata(NAME, ctx.namespace, labels, annotations or None),
        spec={
            "type": cfg.service_type,
            "selector": kube.selector(NAME),
            "ports": [{"name": "http", "port": port, "target_port": "http"}],
        },
        opts=ctx.opts,
    )


def _ingress(
    ctx: AppContext, labels: dict[str, str], service: k8s.core.v1.Service
) -> k8s.networking.v1.Ingress:
    ingress = ctx.config.gateway.ingress
    assert ingress is not None
    annotations = dict(ingress.annotations)
    if ingress.class_name == "nginx":
        annotations = {**NGINX_STREAMING, **annotations}
    backend = {"service": {"name": NAME, "port": {"name": "http"}}}
    paths = [
        {"path": path, "path_type": "Prefix", "backend": backend} for path in ingress.public_paths
    ]
    spec: dict[str, Any] = {"rules": [{"host": ingress.host, "http": {"paths": paths}}]}
    if ingress.class_name:
        spec["ingress_class_name"] = ingress.class_name
    if ingress.tls_secret_name:
        spec["tls"] = [{"hosts": [ingress.host], "secret_name": ingress.tls_secret_name}]
    return k8s.networking.v1.Ingress(
        NAME,
        metadata=kube.metadata(NAME, ctx.namespace, labels, annotations or None),
        spec=spec,
        opts=ctx.child(service),
    )


def gateway_url(
    ctx: AppContext,
    service: k8s.core.v1.Service,
    namespace: pulumi.Input[str],
) -> pulumi.Output[str]:
    cfg = ctx.config.gateway
    if cfg.ingress is not None:
        scheme = "https" if cfg.ingress.tls_secret_name else "http"
        return pulumi.Output.from_input(f"{scheme}://{cfg.ingress.host}/v1")
    if cfg.service_type == "LoadBalancer":
        scheme = "https" if cfg.load_balancer_tls_certificate else "http"
        port = "" if cfg.load_balancer_tls_certificate else f":{PORT}"
        return service.status.apply(lambda status: f"{scheme}://{_address(status)}{port}/v1")
    return pulumi.Output.format("http://{0}.{1}.svc.cluster.local:{2}/v1", NAME, namespace, PORT)


def _address(status: Any) -> str:
    """The load balancer's hostname or IP, or "pending" until the cloud assigns one."""
    ingress = getattr(getattr(status, "load_balancer", None), "ingress", None) or []
    first = ingress[0] if ingress else None
    return getattr(first, "hostname", None) or getattr(first, "ip", None) or "pending"
