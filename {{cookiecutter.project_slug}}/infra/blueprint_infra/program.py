"""The Pulumi program: pick the platform from stack config and deploy the app on it."""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from blueprint_infra.app import BlueprintApp, BlueprintAppArgs
from blueprint_infra.config import ConfigError, Secrets, StackConfig, load_stack_config
from blueprint_infra.context import Images


def deploy_on_kubernetes(config: StackConfig, secrets: Secrets) -> dict[str, Any]:
    """An existing cluster from the current kubeconfig (or `kubeconfigContext`)."""
    opts = None
    if config.kubeconfig_context:
        provider = k8s.Provider("cluster", context=config.kubeconfig_context)
        opts = pulumi.ResourceOptions(providers=[provider])
    images = Images.from_registry(config)
    app = BlueprintApp("app", BlueprintAppArgs(config=config, secrets=secrets, images=images), opts)
    return {
        "platform": config.platform,
        "namespace": app.namespace,
        "gatewayUrl": app.gateway_url,
        "redisEndpoint": app.redis_endpoint,
        "images": images.as_outputs(),
    }


def deploy_on_aws(config: StackConfig, secrets: Secrets) -> dict[str, Any]:
    try:
        from blueprint_infra.aws import deploy_on_aws as deploy
    except ImportError as exc:
        raise ConfigError(
            "platform 'aws-eks' needs blueprint_infra/aws/, which this project was generated "
            "without (deploy_target=kubernetes); set platform to kubernetes"
        ) from exc
    return deploy(config, secrets)


def run() -> dict[str, Any]:
    """Build every resource of the current stack; returns the stack outputs."""
    config, secrets = load_stack_config()
    if config.platform == "aws-eks":
        return deploy_on_aws(config, secrets)
    return deploy_on_kubernetes(config, secrets)
