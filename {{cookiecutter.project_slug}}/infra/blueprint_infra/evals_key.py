"""The evals job's own gateway key: derived from the master key, registered by a Job.

The evals job never holds the master key. Its key is `sk-gw-` + HMAC-SHA256(master key,
"evals-api-key") unless the stack sets `evalsApiKey`: stable across `pulumi up` runs,
rotated with the master key, nothing to create by hand, and the master key cannot be
recovered from it. A short Job on the gateway image (it has the Redis client) writes the
key's record into Redis in the layout `gateway/gateway/keys.py` documents (the hash
`gw:key:<sha256>` and the index set `gw:keys`), scoped to the stack's models. That Job
sees the key's SHA-256 and the Redis URL, never the key; the evals pods see only the key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pulumi
import pulumi_kubernetes as k8s

from blueprint_infra import kube
from blueprint_infra.config import Secrets
from blueprint_infra.context import AppContext
from blueprint_infra.secrets import GATEWAY_SECRET

NAME = "evals-key"
KEY_NAME = "evals"
# The online evals job's key (docs/feedback.md): same derivation, its own purpose.
ONLINE_NAME = "online-evals-key"
ONLINE_KEY_NAME = "online-evals"
ONLINE_PURPOSE = b"online-evals-api-key"
KEY_PREFIX = "gw:key:"
INDEX_KEY = "gw:keys"

# Idempotent: the same key gets the same record on every run.
REGISTER_SCRIPT = f"""\
import os, time, redis
digest = os.environ["EVALS_KEY_SHA256"]
record = {{
    "hash": digest, "id": os.environ["EVALS_KEY_ID"], "name": os.environ["EVALS_KEY_NAME"],
    "models": os.environ["EVALS_KEY_MODELS"], "rpm": os.environ["EVALS_KEY_RPM"],
    "tpm": os.environ["EVALS_KEY_TPM"], "max_tokens": "", "expires_at": "",
    "created_at": repr(time.time()),
    # The RAG suite asks the stack's collections: this operator's job may read them all.
    "collections": '["*"]',
}}
client = redis.Redis.from_url(os.environ["GATEWAY_REDIS_URL"], socket_timeout=10)
with client.pipeline(transaction=True) as pipe:
    pipe.hset("{KEY_PREFIX}" + digest, mapping=record)
    pipe.sadd("{INDEX_KEY}", digest)
    pipe.execute()
print("registered gateway key", record["id"], "for", record["name"])
"""


def derive_evals_key(master_key: str, purpose: bytes = b"evals-api-key") -> str:
    mac = hmac.new(master_key.encode(), purpose, hashlib.sha256).digest()
    return "sk-gw-" + base64.urlsafe_b64encode(mac).decode().rstrip("=")


def evals_key(secrets: Secrets) -> str:
    return secrets.evals_api_key or derive_evals_key(secrets.master_key)


def key_hash(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


def online_evals_key(secrets: Secrets) -> str:
    return derive_evals_key(secrets.master_key, ONLINE_PURPOSE)


def key_env(ctx: AppContext, api_key: str, key_name: str = KEY_NAME) -> dict[str, str]:
    """What the registration Job writes: the key's hash and scope, never the key."""
    cfg = ctx.config
    models = [service.model for service in (cfg.llm, cfg.embedder) if service.enabled]
    digest = key_hash(api_key)
    return {
        "EVALS_KEY_SHA256": digest,
        "EVALS_KEY_ID": "key_" + digest[:12],
        "EVALS_KEY_NAME": key_name,
        "EVALS_KEY_MODELS": json.dumps(models),
        "EVALS_KEY_RPM": str(cfg.evals.key_rpm or ""),
        "EVALS_KEY_TPM": str(cfg.evals.key_tpm or ""),
        "HOME": "/tmp",
    }


def create_evals_key_job(
    ctx: AppContext,
    api_key: str,
    *after: pulumi.Resource,
    name: str = NAME,
    key_name: str = KEY_NAME,
) -> k8s.batch.v1.Job:
    labels = kube.labels(name, ctx.part_of)
    container = {
        "name": name,
        "image": ctx.images.gateway,
        "command": ["python", "-c", REGISTER_SCRIPT],
        "env": kube.env(key_env(ctx, api_key, key_name))
        + kube.secret_env({"GATEWAY_REDIS_URL": (GATEWAY_SECRET, "GATEWAY_REDIS_URL")}),
        "resources": {
            "requests": {"cpu": "50m", "memory": "64Mi"},
            "limits": {"cpu": "500m", "memory": "256Mi"},
        },
        "security_context": kube.container_security(),
        "volume_mounts": [{"name": "tmp", "mount_path": "/tmp"}],
    }
    return k8s.batch.v1.Job(
        name,
        metadata={"namespace": ctx.namespace, "labels": labels},
        spec={
            # Retries while Redis is still starting.
            "backoff_limit": 6,
            "active_deadline_seconds": 600,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "restart_policy": "Never",
                    "automount_service_account_token": False,
                    "security_context": kube.pod_security(),
                    "image_pull_secrets": ctx.pull_secrets,
                    "containers": [container],
                    "volumes": [kube.tmp_volume(size="64Mi")],
                },
            },
        },
        opts=ctx.child(*after),
    )
