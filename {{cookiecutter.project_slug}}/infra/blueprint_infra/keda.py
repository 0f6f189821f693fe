"""KEDA ScaledObject: scale the LLM service on vLLM's queue depth.

Both model backends export `vllm:num_requests_waiting`, so one rule serves GPU and CPU.
Needs KEDA (its CRDs) and a Prometheus that scrapes the model pods.
"""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s

from blueprint_infra import kube
from blueprint_infra.context import AppContext
from blueprint_infra.model_service import LLM


def queue_query(namespace: str) -> str:
    selector = f'namespace="{namespace}",service="{LLM.name}"'
    return "sum(vllm:num_requests_waiting{" + selector + "})"


def create_scaled_object(
    ctx: AppContext, deployment: k8s.apps.v1.Deployment
) -> k8s.apiextensions.CustomResource:
    cfg = ctx.config.keda
    assert cfg.prometheus_url is not None  # checked by the config model
    query: pulumi.Input[str] = cfg.query or pulumi.Output.from_input(ctx.namespace).apply(
        queue_query
    )
    return k8s.apiextensions.CustomResource(
        f"{LLM.name}-queue",
        api_version="keda.sh/v1alpha1",
        kind="ScaledObject",
        metadata=kube.metadata(
            f"{LLM.name}-queue", ctx.namespace, kube.labels(LLM.name, ctx.part_of)
        ),
        spec={
            "scaleTargetRef": {"name": LLM.name},
            "minReplicaCount": cfg.min_replicas,
            "maxReplicaCount": cfg.max_replicas,
            # A new replica loads the model for minutes: do not flap.
            "cooldownPeriod": 600,
            "triggers": [
                {
                    "type": "prometheus",
                    "metadata": {
                        "serverAddress": cfg.prometheus_url,
                        "query": query,
                        "threshold": str(cfg.queue_threshold),
                    },
                }
            ],
        },
        opts=ctx.child(deployment),
    )
