"""The online evals job (docs/feedback.md): `python -m evals online` as a one-replica
Deployment that scores captured exchanges and exports `evals_online_*` over OTLP.

It reads `/admin/exchanges` with its own gateway key (derived like the evals job's,
blueprint_infra.evals_key, registered by its own Job and named in the gateway's
GATEWAY_EXCHANGE_READER_KEYS), never the master key. Off unless `evals.online` is set:
it has something to score only while the gateway captures content
(`gateway.captureSampleRate` > 0).
"""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s

from blueprint_infra import kube
from blueprint_infra.context import AppContext
from blueprint_infra.gateway import NAME as GATEWAY
from blueprint_infra.gateway import PORT as GATEWAY_PORT
from blueprint_infra.observability import otel_env
from blueprint_infra.secrets import EVALS_SECRET

NAME = "online-evals"


def create_online_evals(ctx: AppContext, *after: pulumi.Resource) -> k8s.apps.v1.Deployment:
    cfg = ctx.config
    labels = kube.labels(NAME, ctx.part_of)
    env = {
        "EVALS_BASE_URL": f"http://{GATEWAY}:{GATEWAY_PORT}/v1",
        "EVALS_MODEL": cfg.llm.model,
        "EVALS_EMBEDDING_MODEL": cfg.embedder.model,
        "EVALS_ONLINE_INTERVAL_S": str(cfg.evals.online_interval_seconds),
        "HOME": "/tmp",
        **otel_env(ctx, NAME),
    }
    container = {
        "name": NAME,
        "image": ctx.images.evals,
        "command": ["python", "-m", "evals"],
        "args": ["online"],
        "env": kube.env(env)
        + kube.secret_env({"EVALS_API_KEY": (EVALS_SECRET, "ONLINE_EVALS_API_KEY")}),
        "resources": cfg.evals.resources.as_kubernetes(),
        "security_context": kube.container_security(),
        "volume_mounts": [{"name": "tmp", "mount_path": "/tmp"}],
    }
    return k8s.apps.v1.Deployment(
        NAME,
        metadata={"namespace": ctx.namespace, "labels": labels},
        spec={
            "replicas": 1,  # one scorer: each exchange is scored once
            "selector": {"match_labels": kube.selector(NAME)},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "automount_service_account_token": False,
                    "security_context": kube.pod_security(),
                    "image_pull_secrets": ctx.pull_secrets,
                    "containers": [container],
                    "volumes": [kube.tmp_volume(size="256Mi")],
                },
            },
        },
        opts=ctx.child(*after),
    )
