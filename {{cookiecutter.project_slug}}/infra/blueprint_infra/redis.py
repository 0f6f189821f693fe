"""In-cluster Redis: the official Redis 8 image (query engine with vector search included).

One replica with a persistent volume; keys and rate limits live beside the cache, so it
runs with `maxmemory-policy volatile-lru` (only entries with a TTL are ever evicted).
"""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s

from blueprint_infra import kube
from blueprint_infra.context import AppContext
from blueprint_infra.secrets import REDIS_SECRET

NAME = "redis"
PORT = 6379
REDIS_UID = 999  # the `redis` user of the official image


def create_redis(ctx: AppContext, password_secret: k8s.core.v1.Secret) -> k8s.apps.v1.StatefulSet:
    cfg = ctx.config.redis
    labels = kube.labels(NAME, ctx.part_of)
    service = k8s.core.v1.Service(
        NAME,
        metadata=kube.metadata(NAME, ctx.namespace, labels),
        spec={
            "selector": kube.selector(NAME),
            "ports": [{"name": "redis", "port": PORT, "target_port": "redis"}],
        },
        opts=ctx.opts,
    )
    password_env = kube.secret_env(
        {"REDIS_PASSWORD": (REDIS_SECRET, "password"), "REDISCLI_AUTH": (REDIS_SECRET, "password")}
    )
    ping = {"exec": {"command": ["sh", "-c", "redis-cli -p 6379 ping | grep -q PONG"]}}
    claim: dict[str, object] = {
        "access_modes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": cfg.storage_size}},
    }
    if cfg.storage_class:
        claim["storage_class_name"] = cfg.storage_class
    return k8s.apps.v1.StatefulSet(
        NAME,
        metadata=kube.metadata(NAME, ctx.namespace, labels),
        spec={
            "service_name": NAME,
            "replicas": 1,
            "selector": {"match_labels": kube.selector(NAME)},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "automount_service_account_token": False,
                    "security_context": kube.pod_security(REDIS_UID),
                    "containers": [
                        {
                            "name": "redis",
                            "image": cfg.image,
                            "args": [
                                "redis-server",
                                "--requirepass",
                                "$(REDIS_PASSWORD)",
                                "--maxmemory",
                                cfg.maxmemory,
                                "--maxmemory-policy",
                                "volatile-lru",
                                "--appendonly",
                                "yes",
                                "--dir",
                                "/data",
                            ],
                            "env": password_env,
                            "ports": [{"name": "redis", "container_port": PORT}],
                            "resources": cfg.resources.as_kubernetes(),
                            "security_context": kube.container_security(),
                            "readiness_probe": {**ping, "period_seconds": 5},
                            "liveness_probe": {
                                **ping,
                                "period_seconds": 10,
                                "failure_threshold": 6,
                            },
                            "volume_mounts": [
                                {"name": "data", "mount_path": "/data"},
                                {"name": "tmp", "mount_path": "/tmp"},
                            ],
                        }
                    ],
                    "volumes": [kube.tmp_volume(size="64Mi")],
                },
            },
            "volume_claim_templates": [{"metadata": {"name": "data"}, "spec": claim}],
        },
        opts=pulumi.ResourceOptions.merge(
            ctx.opts, pulumi.ResourceOptions(depends_on=[service, password_secret])
        ),
    )
