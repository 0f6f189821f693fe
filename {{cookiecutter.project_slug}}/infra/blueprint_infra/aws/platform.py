"""`AwsPlatform`: everything AWS provides to the app, then `BlueprintApp` on top of it."""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from blueprint_infra.app import BlueprintApp, BlueprintAppArgs, ExternalRedis
from blueprint_infra.aws.cache import PORT as CACHE_PORT
from blueprint_infra.aws.cache import create_cache
from blueprint_infra.aws.cluster import create_cluster
from blueprint_infra.aws.device_plugin import create_device_plugin
from blueprint_infra.aws.network import create_vpc
from blueprint_infra.aws.registry import build_images
from blueprint_infra.config import Secrets, StackConfig
from blueprint_infra.secrets import redis_url


class AwsPlatform(pulumi.ComponentResource):
    """VPC (awsx), EKS (system + GPU node groups), NVIDIA device plugin, Valkey, ECR images."""

    provider: k8s.Provider
    kubeconfig: pulumi.Output[Any]
    redis: ExternalRedis
    redis_endpoint: pulumi.Output[str]
    gpu_node_selector: dict[str, str]

    def __init__(
        self,
        name: str,
        config: StackConfig,
        secrets: Secrets,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("blueprint:index:AwsPlatform", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        assert secrets.redis_password is not None  # checked by load_stack_config

        vpc = create_vpc(name, config.aws, child)
        cluster = create_cluster(name, config.aws, vpc, child)
        self.kubeconfig = pulumi.Output.secret(cluster.cluster.kubeconfig_json)
        self.provider = k8s.Provider(
            f"{name}-k8s",
            kubeconfig=self.kubeconfig,
            enable_server_side_apply=True,
            opts=pulumi.ResourceOptions(parent=self),
        )
        if cluster.gpu_nodes is not None:
            create_device_plugin(
                pulumi.ResourceOptions(
                    parent=self, provider=self.provider, depends_on=[cluster.gpu_nodes]
                )
            )
        cache = create_cache(name, config.aws, vpc, secrets.redis_password, child)
        self.redis_endpoint = pulumi.Output.format("{0}:{1}", cache.host, CACHE_PORT)
        self.redis = ExternalRedis(
            url=redis_url(secrets.redis_password, cache.host, tls=True),
            endpoint=self.redis_endpoint,
            cidrs=(config.aws.vpc_cidr,),  # ElastiCache lives in the cluster's VPC
            port=CACHE_PORT,
        )
        self.images = build_images(name, config, child)
        self.gpu_node_selector = cluster.gpu_node_selector
        self.register_outputs({"kubeconfig": self.kubeconfig, "redisEndpoint": self.redis_endpoint})


def deploy_on_aws(config: StackConfig, secrets: Secrets) -> dict[str, Any]:
    name = pulumi.get_project()
    platform = AwsPlatform(name, config, secrets)
    app = BlueprintApp(
        "app",
        BlueprintAppArgs(
            config=config,
            secrets=secrets,
            images=platform.images,
            external_redis=platform.redis,
            gpu_node_selector=platform.gpu_node_selector,
        ),
        pulumi.ResourceOptions(providers=[platform.provider]),
    )
    return {
        "platform": config.platform,
        "namespace": app.namespace,
        "gatewayUrl": app.gateway_url,
        "redisEndpoint": platform.redis_endpoint,
        "kubeconfig": platform.kubeconfig,
        "images": platform.images.as_outputs(),
    }
