"""`BlueprintApp`: the whole application on any Kubernetes cluster."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlparse

import pulumi
import pulumi_kubernetes as k8s

from blueprint_infra import kube
from blueprint_infra.config import Secrets, StackConfig
from blueprint_infra.context import AppContext, Images
from blueprint_infra.evals_job import create_evals
from blueprint_infra.evals_key import (
    ONLINE_KEY_NAME,
    ONLINE_NAME,
    create_evals_key_job,
    evals_key,
    online_evals_key,
)
from blueprint_infra.gateway import create_gateway, gateway_url
from blueprint_infra.keda import create_scaled_object
from blueprint_infra.model_service import EMBEDDER, LLM, create_model_service
from blueprint_infra.network_policies import RedisEgress, create_network_policies
from blueprint_infra.observability import create_collector
from blueprint_infra.online_evals import create_online_evals
from blueprint_infra.redis import NAME as REDIS
from blueprint_infra.redis import PORT as REDIS_PORT
from blueprint_infra.redis import create_redis
from blueprint_infra.secrets import create_secrets, redis_url


@dataclass(frozen=True)
class ExternalRedis:
    """A Redis the app does not run itself (ElastiCache, or a URL from config)."""

    url: pulumi.Input[str]  # secret: holds the password
    endpoint: pulumi.Input[str]  # host:port, no password
    cidrs: tuple[str, ...] = ("0.0.0.0/0",)  # where it is, for the egress policies
    port: int = REDIS_PORT


@dataclass(frozen=True)
class BlueprintAppArgs:
    config: StackConfig
    secrets: Secrets
    images: Images
    external_redis: ExternalRedis | None = None
    gpu_node_selector: dict[str, str] = field(default_factory=dict)


def redis_egress(config: StackConfig, args: BlueprintAppArgs) -> RedisEgress:
    """Where the gateway and the evals-key Job may connect to reach Redis."""
    if args.external_redis is not None:
        external = args.external_redis
        return RedisEgress(in_cluster=False, cidrs=external.cidrs, port=external.port)
    if config.redis.mode == "external":
        assert args.secrets.redis_url is not None  # checked by load_stack_config
        port = urlparse(args.secrets.redis_url).port or REDIS_PORT
        return RedisEgress(False, tuple(config.network.external_redis_cidrs), port)
    return RedisEgress(in_cluster=True)


class BlueprintApp(pulumi.ComponentResource):
    """Namespace, secrets, Redis, model services, gateway, telemetry, policies, evals."""

    namespace: pulumi.Output[str]
    gateway_url: pulumi.Output[str]
    redis_endpoint: pulumi.Output[str]

    def __init__(
        self, name: str, args: BlueprintAppArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("blueprint:index:BlueprintApp", name, None, opts)
        config = args.config
        part_of = pulumi.get_project()
        child = pulumi.ResourceOptions(parent=self)

        namespace_name: pulumi.Input[str] = config.namespace
        if config.create_namespace:
            namespace = k8s.core.v1.Namespace(
                config.namespace,
                metadata={
                    "name": config.namespace,
                    "labels": {
                        **kube.labels("namespace", part_of),
                        # Every workload here meets the restricted Pod Security Standard.
                        "pod-security.kubernetes.io/enforce": "restricted",
                        "pod-security.kubernetes.io/warn": "restricted",
                    },
                },
                opts=child,
            )
            namespace_name = namespace.metadata.apply(lambda meta: meta.name)
        ctx = AppContext(
            config=config,
            namespace=namespace_name,
            part_of=part_of,
            images=args.images,
            opts=child,
        )

        if args.external_redis is not None:
            gateway_redis_url: pulumi.Input[str] = args.external_redis.url
            endpoint: pulumi.Input[str] = args.external_redis.endpoint
        elif config.redis.mode == "external":
            assert args.secrets.redis_url is not None  # checked by load_stack_config
            gateway_redis_url = args.secrets.redis_url
            endpoint = "external (redisUrl secret)"
        else:
            assert args.secrets.redis_password is not None
            gateway_redis_url = redis_url(args.secrets.redis_password, REDIS, tls=False)
            endpoint = pulumi.Output.format(
                "{0}.{1}.svc.cluster.local:{2}", REDIS, namespace_name, REDIS_PORT
            )

        evals_api_key = evals_key(args.secrets)
        online = config.evals.enabled and config.evals.online
        online_api_key = online_evals_key(args.secrets) if online else None
        secrets = create_secrets(
            ctx, args.secrets, gateway_redis_url, evals_api_key, online_api_key
        )
        create_network_policies(
            ctx, redis_egress(config, args), external_upstreams=bool(args.secrets.upstream_api_keys)
        )
        backends: list[pulumi.Resource] = [secrets.gateway]
        if secrets.redis is not None:
            backends.append(create_redis(ctx, secrets.redis))
        if config.observability.collector:
            backends.append(create_collector(ctx))

        models: list[pulumi.Resource] = []
        for spec, service_cfg in ((LLM, config.llm), (EMBEDDER, config.embedder)):
            if not service_cfg.enabled:
                continue
            keda_managed = spec is LLM and config.keda.enabled
            deployment = create_model_service(
                ctx,
                spec,
                service_cfg,
                gpu_node_selector=args.gpu_node_selector,
                replicas_managed_elsewhere=keda_managed,
            )
            models.append(deployment)
            if keda_managed:
                create_scaled_object(ctx, deployment)

        gateway, service, _ = create_gateway(ctx, secrets.upstream_key_envs, *backends)
        if config.evals.enabled:
            key_job = create_evals_key_job(ctx, evals_api_key, *backends)
            create_evals(ctx, gateway, secrets.evals, key_job, *models)
        if online_api_key is not None:
            online_key_job = create_evals_key_job(
                ctx, online_api_key, *backends, name=ONLINE_NAME, key_name=ONLINE_KEY_NAME
            )
            create_online_evals(ctx, gateway, secrets.evals, online_key_job)

        self.namespace = pulumi.Output.from_input(namespace_name)
        self.gateway_url = gateway_url(ctx, service, namespace_name)
        self.redis_endpoint = pulumi.Output.from_input(endpoint)
        self.register_outputs(
            {
                "namespace": self.namespace,
                "gatewayUrl": self.gateway_url,
                "redisEndpoint": self.redis_endpoint,
            }
        )
