"""Model service Deployments (`llm`, `embedder`): one OpenAI-compatible server each.

GPU instances run vLLM with `nvidia.com/gpu` limits, GPU tolerations and a memory-backed
`/dev/shm`; CPU instances run transformers. An init container downloads the weights into
the cache volume, and a startup probe sized to the load time keeps the kubelet from
killing the pod while the model loads (the most reported failure of LLM deployments).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from blueprint_infra import kube
from blueprint_infra.config import AdaptersConfig, ModelServiceConfig
from blueprint_infra.context import AppContext
from blueprint_infra.observability import otel_env
from blueprint_infra.secrets import MODEL_SECRET

MODELS_DIR = "/models"
ADAPTERS_DIR = "/adapters"
GPU_RESOURCE = "nvidia.com/gpu"
GPU_TOLERATION = {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}
STARTUP_PROBE_PERIOD_SECONDS = 10
COMMAND = ("python", "-m", "model_service")


@dataclass(frozen=True)
class ModelServiceSpec:
    name: str
    port: int
    task: str


LLM = ModelServiceSpec(name="llm", port=8000, task="generate")
EMBEDDER = ModelServiceSpec(name="embedder", port=8001, task="embed")


def model_env(spec: ModelServiceSpec, cfg: ModelServiceConfig) -> dict[str, str]:
    values = {
        "MODEL_SOURCE": cfg.model,
        "MODEL_SERVED_NAME": cfg.model,
        "MODEL_TASK": spec.task,
        "MODEL_BACKEND": cfg.effective_backend,
        "MODEL_DTYPE": cfg.dtype,
        "MODEL_HOST": "0.0.0.0",
        "MODEL_PORT": str(spec.port),
        "MODELS_DIR": MODELS_DIR,
        # The root filesystem is read-only: caches go to the writable volumes.
        "HF_HOME": f"{MODELS_DIR}/.hf",
        "HOME": "/tmp",
        "XDG_CACHE_HOME": "/tmp/.cache",
    }
    optional = {
        "MODEL_MAX_MODEL_LEN": cfg.max_model_len,
        "MODEL_MAX_NUM_SEQS": cfg.max_num_seqs,
        "MODEL_GPU_MEMORY_UTILIZATION": cfg.gpu_memory_utilization,
        "MODEL_QUANTIZATION": cfg.quantization,
        "MODEL_VLLM_EXTRA_ARGS": cfg.vllm_extra_args,
    }
    values.update({key: str(value) for key, value in optional.items() if value is not None})
    values.update(adapters_env(cfg.adapters))
    if cfg.accelerator == "gpu":
        values["MODEL_TENSOR_PARALLEL_SIZE"] = str(cfg.gpu_count)
    else:
        # The pod has its CPU limit to itself: torch gets all of it (the service's own
        # default keeps a core free, for hosts it shares with other processes).
        values["MODEL_NUM_THREADS"] = str(whole_cpus(cfg.effective_resources.cpu_limit))
    return values


def adapters_env(adapters: AdaptersConfig | None) -> dict[str, str]:
    """The LoRA settings of the model service (docs/adapters.md) from `llm.adapters`."""
    if adapters is None:
        return {}
    return {
        "MODEL_ADAPTERS_DIR": ADAPTERS_DIR,
        "MODEL_LORA_MODULES": ",".join(adapters.load),
        "MODEL_MAX_LORAS": str(adapters.max_loras),
        "MODEL_MAX_LORA_RANK": str(adapters.max_lora_rank),
        "MODEL_ALLOW_RUNTIME_LORA_UPDATING": str(adapters.allow_runtime_loading).lower(),
    }


def _adapters_volume(
    ctx: AppContext, spec: ModelServiceSpec, adapters: AdaptersConfig
) -> tuple[dict[str, Any], k8s.core.v1.PersistentVolumeClaim | None]:
    """The claim holding ADAPTERS_DIR: an existing one, or one created here."""
    if adapters.existing_claim:
        claim_name = adapters.existing_claim
        volume = {"name": "adapters", "persistent_volume_claim": {"claim_name": claim_name}}
        return volume, None
    claim_name = f"{spec.name}-adapters"
    claim_spec: dict[str, Any] = {
        "access_modes": [adapters.access_mode],
        "resources": {"requests": {"storage": adapters.size}},
    }
    if adapters.storage_class:
        claim_spec["storage_class_name"] = adapters.storage_class
    claim = k8s.core.v1.PersistentVolumeClaim(
        claim_name,
        metadata=kube.metadata(
            claim_name, ctx.namespace, kube.labels(spec.name, ctx.part_of), kube.SKIP_AWAIT
        ),
        spec=claim_spec,
        opts=ctx.opts,
    )
    volume = {"name": "adapters", "persistent_volume_claim": {"claim_name": claim_name}}
    return volume, claim


def whole_cpus(quantity: str) -> int:
    """A Kubernetes CPU quantity ("2", "1500m", "0.5") rounded up to whole CPUs, at least 1."""
    cpus = float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)
    return max(1, math.ceil(cpus))


def startup_failure_threshold(cfg: ModelServiceConfig) -> int:
    return math.ceil(cfg.effective_startup_minutes * 60 / STARTUP_PROBE_PERIOD_SECONDS)


def _cache_volume(
    ctx: AppContext, spec: ModelServiceSpec, cfg: ModelServiceConfig
) -> tuple[dict[str, Any], k8s.core.v1.PersistentVolumeClaim | None]:
    if cfg.cache.type == "emptyDir":
        return {"name": "models", "empty_dir": {"size_limit": cfg.cache.size}}, None
    claim_name = f"{spec.name}-models"
    claim_spec: dict[str, Any] = {
        "access_modes": [cfg.cache.access_mode],
        "resources": {"requests": {"storage": cfg.cache.size}},
    }
    if cfg.cache.storage_class:
        claim_spec["storage_class_name"] = cfg.cache.storage_class
    claim = k8s.core.v1.PersistentVolumeClaim(
        claim_name,
        metadata=kube.metadata(
            claim_name, ctx.namespace, kube.labels(spec.name, ctx.part_of), kube.SKIP_AWAIT
        ),
        spec=claim_spec,
        opts=ctx.opts,
    )
    return {"name": "models", "persistent_volume_claim": {"claim_name": claim_name}}, claim


def create_model_service(
    ctx: AppContext,
    spec: ModelServiceSpec,
    cfg: ModelServiceConfig,
    *,
    gpu_node_selector: dict[str, str],
    replicas_managed_elsewhere: bool = False,
) -> k8s.apps.v1.Deployment:
    gpu = cfg.accelerator == "gpu"
    labels = kube.labels(spec.name, ctx.part_of)
    image = ctx.images.model_gpu if gpu else ctx.images.model_cpu
    env = kube.env({**model_env(spec, cfg), **otel_env(ctx, spec.name)})
    env_from = [{"secret_ref": {"name": MODEL_SECRET, "optional": True}}]
    mounts: list[dict[str, Any]] = [
        {"name": "models", "mount_path": MODELS_DIR},
        {"name": "tmp", "mount_path": "/tmp"},
    ]
    cache_volume, claim = _cache_volume(ctx, spec, cfg)
    volumes: list[dict[str, Any]] = [cache_volume, kube.tmp_volume(size="4Gi")]
    claims = [claim] if claim is not None else []
    if cfg.adapters is not None:
        adapters_volume, adapters_claim = _adapters_volume(ctx, spec, cfg.adapters)
        volumes.append(adapters_volume)
        mounts.append({"name": "adapters", "mount_path": ADAPTERS_DIR, "read_only": True})
        claims += [adapters_claim] if adapters_claim is not None else []
    if gpu:
        # NCCL and PyTorch workers share tensors through /dev/shm; the default 64 MiB breaks them.
        volumes.append(
            {"name": "dshm", "empty_dir": {"medium": "Memory", "size_limit": cfg.shm_size}}
        )
        mounts.append({"name": "dshm", "mount_path": "/dev/shm"})
    extra_limits = {GPU_RESOURCE: str(cfg.gpu_count)} if gpu else {}
    resources = cfg.effective_resources.as_kubernetes(extra_limits)
    if gpu:
        resources["requests"][GPU_RESOURCE] = str(cfg.gpu_count)
    node_selector = {**(gpu_node_selector if gpu else {}), **cfg.node_selector}
    tolerations = ([GPU_TOLERATION] if gpu else []) + [
        t.model_dump(exclude_none=True) for t in cfg.tolerations
    ]
    health_port = "http"
    container: dict[str, Any] = {
        "name": "model",
        "image": image,
        "command": list(COMMAND),
        "args": ["serve"],
        "env": env,
        "env_from": env_from,
        "ports": [{"name": "http", "container_port": spec.port}],
        "resources": resources,
        "security_context": kube.container_security(),
        "startup_probe": kube.http_probe(
            "/health",
            health_port,
            period=STARTUP_PROBE_PERIOD_SECONDS,
            failures=startup_failure_threshold(cfg),
        ),
        "liveness_probe": kube.http_probe("/health", health_port, period=15, failures=4),
        "readiness_probe": kube.http_probe("/health", health_port, period=5, failures=3),
        "volume_mounts": mounts,
    }
    prepare: dict[str, Any] = {
        "name": "prepare-model",
        "image": image,
        "command": list(COMMAND),
        "args": ["prepare", cfg.model],
        "env": env,
        "env_from": env_from,
        "resources": cfg.effective_resources.as_kubernetes(),
        "security_context": kube.container_security(),
        "volume_mounts": mounts[:2],
    }
    pod_spec: dict[str, Any] = {
        "automount_service_account_token": False,
        "security_context": kube.pod_security(),
        "image_pull_secrets": ctx.pull_secrets,
        "init_containers": [prepare],
        "containers": [container],
        "volumes": volumes,
        "termination_grace_period_seconds": 60,
    }
    if node_selector:
        pod_spec["node_selector"] = node_selector
    if tolerations:
        pod_spec["tolerations"] = tolerations
    # On GPU nodes a surge pod would need a spare GPU: replace in place instead.
    strategy = (
        {"type": "RollingUpdate", "rolling_update": {"max_surge": 0, "max_unavailable": 1}}
        if gpu
        else {"type": "RollingUpdate", "rolling_update": {"max_surge": 1, "max_unavailable": 0}}
    )
    deployment_spec: dict[str, Any] = {
        "selector": {"match_labels": kube.selector(spec.name)},
        "strategy": strategy,
        "template": {
            "metadata": {
                "labels": labels,
                "annotations": {
                    "prometheus.io/scrape": "true",
                    "prometheus.io/port": str(spec.port),
                    "prometheus.io/path": "/metrics",
                },
            },
            "spec": pod_spec,
        },
    }
    if not replicas_managed_elsewhere:
        deployment_spec["replicas"] = cfg.replicas
    annotations = None if ctx.config.await_models else kube.SKIP_AWAIT
    # Pulumi waits 10 minutes for a Deployment by default; model loading can take longer.
    wait = f"{cfg.effective_startup_minutes + 15}m"
    dependencies: list[pulumi.Resource] = list(claims)
    opts = pulumi.ResourceOptions.merge(
        ctx.opts,
        pulumi.ResourceOptions(
            depends_on=dependencies,
            custom_timeouts=pulumi.CustomTimeouts(create=wait, update=wait),
            ignore_changes=["spec.replicas"] if replicas_managed_elsewhere else None,
        ),
    )
    deployment = k8s.apps.v1.Deployment(
        spec.name,
        metadata=kube.metadata(spec.name, ctx.namespace, labels, annotations),
        spec=deployment_spec,
        opts=opts,
    )
    k8s.core.v1.Service(
        spec.name,
        metadata=kube.metadata(spec.name, ctx.namespace, labels),
        spec={
            "selector": kube.selector(spec.name),
            "ports": [{"name": "http", "port": spec.port, "target_port": "http"}],
        },
        opts=ctx.opts,
    )
    k8s.policy.v1.PodDisruptionBudget(
        spec.name,
        metadata=kube.metadata(spec.name, ctx.namespace, labels),
        spec={"max_unavailable": 1, "selector": {"match_labels": kube.selector(spec.name)}},
        opts=ctx.opts,
    )
    return deployment
