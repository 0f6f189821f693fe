"""Kubernetes Secrets built from `pulumi config --secret` values.

Every value is wrapped in `pulumi.Output.secret`, so it is encrypted in the state and
never printed; the workloads read them through `secretKeyRef`.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

import pulumi
import pulumi_kubernetes as k8s

from blueprint_infra import kube
from blueprint_infra.config import Secrets
from blueprint_infra.context import AppContext

GATEWAY_SECRET = "gateway-secrets"
REDIS_SECRET = "redis-auth"
MODEL_SECRET = "model-secrets"
EVALS_SECRET = "evals-secrets"


@dataclass(frozen=True)
class SecretRefs:
    gateway: k8s.core.v1.Secret
    redis: k8s.core.v1.Secret | None
    model: k8s.core.v1.Secret | None
    evals: k8s.core.v1.Secret
    upstream_key_envs: tuple[str, ...]


def redis_url(password: pulumi.Input[str], host: pulumi.Input[str], *, tls: bool) -> pulumi.Output:
    scheme = "rediss" if tls else "redis"
    return pulumi.Output.secret(
        pulumi.Output.format(
            "{0}://:{1}@{2}:6379/0",
            scheme,
            pulumi.Output.from_input(password).apply(lambda value: quote(value, safe="")),
            host,
        )
    )


def _secret(ctx: AppContext, name: str, data: dict[str, pulumi.Input[str]]) -> k8s.core.v1.Secret:
    return k8s.core.v1.Secret(
        name,
        metadata=kube.metadata(name, ctx.namespace, kube.labels(name, ctx.part_of)),
        type="Opaque",
        string_data={key: pulumi.Output.secret(value) for key, value in data.items()},
        opts=ctx.opts,
    )


def create_secrets(
    ctx: AppContext,
    secrets: Secrets,
    gateway_redis_url: pulumi.Input[str],
    evals_api_key: str,
    online_evals_api_key: str | None = None,
) -> SecretRefs:
    """`evals_api_key` is the evals job's own key (blueprint_infra.evals_key), never the
    master key."""
    gateway_data: dict[str, pulumi.Input[str]] = {
        "GATEWAY_MASTER_KEY": secrets.master_key,
        "GATEWAY_REDIS_URL": gateway_redis_url,
        **secrets.upstream_api_keys,
    }
    redis = None
    if ctx.config.platform == "kubernetes" and ctx.config.redis.mode == "in-cluster":
        assert secrets.redis_password is not None  # checked by load_stack_config
        redis = _secret(ctx, REDIS_SECRET, {"password": secrets.redis_password})
    model = _secret(ctx, MODEL_SECRET, {"HF_TOKEN": secrets.hf_token}) if secrets.hf_token else None
    evals_data = {"EVALS_API_KEY": evals_api_key}
    if online_evals_api_key is not None:  # the online evals job's own key
        evals_data["ONLINE_EVALS_API_KEY"] = online_evals_api_key
    evals = _secret(ctx, EVALS_SECRET, dict(evals_data))
    return SecretRefs(
        gateway=_secret(ctx, GATEWAY_SECRET, gateway_data),
        redis=redis,
        model=model,
        evals=evals,
        upstream_key_envs=tuple(secrets.upstream_api_keys),
    )
