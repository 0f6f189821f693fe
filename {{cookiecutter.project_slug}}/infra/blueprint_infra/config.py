"""Typed stack configuration.

Every value a stack can set is a field here, with a default that deploys the dev stack.
`load_stack_config` reads the Pulumi config of the current project and turns any mistake
(an unknown key, a wrong type, a secret stored in plain text, a missing registry) into a
`ConfigError` whose message names the key and the command that fixes it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Literal

import pulumi
from pulumi.runtime import config as runtime_config
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel

# Kubernetes resource quantities, e.g. "500m", "2", "8Gi", "1.5G".
Quantity = Annotated[str, Field(pattern=r"^[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti)?$")]
# DNS-1123 labels: Kubernetes object and namespace names.
DnsLabel = Annotated[str, Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63)]


class ConfigError(Exception):
    """A stack configuration mistake, reported with the key to fix."""


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )


class Resources(_Model):
    cpu_request: Quantity
    memory_request: Quantity
    cpu_limit: Quantity
    memory_limit: Quantity

    def as_kubernetes(self, extra_limits: Mapping[str, str] | None = None) -> dict[str, Any]:
        limits = {"cpu": self.cpu_limit, "memory": self.memory_limit, **(extra_limits or {})}
        return {
            "requests": {"cpu": self.cpu_request, "memory": self.memory_request},
            "limits": limits,
        }


class Toleration(_Model):
    key: str
    operator: Literal["Equal", "Exists"] = "Exists"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = "NoSchedule"


class ImagesConfig(_Model):
    """Where the cluster pulls the service images from (`platform: kubernetes`).

    On `aws-eks` the images are built and pushed to ECR and `registry` is ignored.
    """

    registry: str = ""
    tag: str = "latest"
    gateway: str = "gateway"
    model_cpu: str = "model-cpu"
    model_gpu: str = "model-gpu"
    evals: str = "evals"
    pull_secret: DnsLabel | None = None

    def reference(self, name: str) -> str:
        return f"{self.registry.rstrip('/')}/{name}:{self.tag}"


class ModelCache(_Model):
    """Volume holding the downloaded weights (`MODELS_DIR`)."""

    type: Literal["emptyDir", "pvc"] = "emptyDir"
    size: Quantity = "20Gi"
    storage_class: str | None = None
    access_mode: Literal["ReadWriteOnce", "ReadWriteMany"] = "ReadWriteOnce"


# Adapter names become served model names and folder names (the finetune job's rule).
AdapterName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]


class AdaptersConfig(_Model):
    """LoRA adapters served by the `llm` instance (docs/adapters.md), read-only from a
    volume at ADAPTERS_DIR=/adapters holding one folder per adapter (what `make finetune`
    or the finetune job writes)."""

    # An existing claim (filled by the finetune job or a copy step); unset: one is created.
    existing_claim: DnsLabel | None = None
    size: Quantity = "5Gi"
    storage_class: str | None = None
    access_mode: Literal["ReadWriteOnce", "ReadWriteMany", "ReadOnlyMany"] = "ReadWriteOnce"
    load: list[AdapterName] = []  # loaded at start: MODEL_LORA_MODULES
    max_loras: int = Field(default=4, ge=1, le=64)
    max_lora_rank: int = Field(default=16, ge=1, le=512)
    # POST /v1/load_lora_adapter on the pod (never published by the gateway): off by default.
    allow_runtime_loading: bool = False


class ModelServiceConfig(_Model):
    """One model service instance (`llm` or `embedder`)."""

    enabled: bool = True
    model: str
    accelerator: Literal["cpu", "gpu"] = "cpu"
    backend: Literal["auto", "vllm", "transformers"] | None = None
    replicas: int = Field(default=1, ge=0, le=64)
    gpu_count: int = Field(default=1, ge=1, le=16)
    dtype: str = "auto"
    max_model_len: int | None = Field(default=None, ge=16)
    max_num_seqs: int | None = Field(default=None, ge=1)
    gpu_memory_utilization: float | None = Field(default=None, gt=0, le=1)
    # auto: the model service's rule (services/model/model_service/precision.py).
    quantization: str | None = "auto"
    vllm_extra_args: str | None = None
    resources: Resources | None = None
    shm_size: Quantity = "2Gi"
    cache: ModelCache = ModelCache()
    adapters: AdaptersConfig | None = None
    startup_timeout_minutes: int | None = Field(default=None, ge=1, le=240)
    node_selector: dict[str, str] = {}
    tolerations: list[Toleration] = []

    @property
    def effective_backend(self) -> str:
        if self.backend is not None:
            return self.backend
        return "vllm" if self.accelerator == "gpu" else "transformers"

    @property
    def effective_startup_minutes(self) -> int:
        # vLLM's production stack sizes these budgets: ~10 min on GPU, ~60 min on CPU.
        if self.startup_timeout_minutes is not None:
            return self.startup_timeout_minutes
        return 10 if self.accelerator == "gpu" else 60

    @property
    def effective_resources(self) -> Resources:
        if self.resources is not None:
            return self.resources
        if self.accelerator == "gpu":
            return Resources(
                cpu_request="4", memory_request="16Gi", cpu_limit="8", memory_limit="32Gi"
            )
        return Resources(cpu_request="1", memory_request="2Gi", cpu_limit="2", memory_limit="4Gi")


# Gateway paths that are never published: operators reach them with `kubectl
# port-forward` (or from inside the cluster); /ui is the future web console.
INTERNAL_PATHS = ("/metrics", "/docs", "/redoc", "/openapi.json", "/admin", "/ui")


class IngressConfig(_Model):
    host: str
    class_name: str | None = None
    tls_secret_name: DnsLabel | None = None
    annotations: dict[str, str] = {}
    # Path prefixes the Ingress routes to the gateway; nothing else is reachable.
    public_paths: list[str] = Field(default=["/v1"], min_length=1)

    @model_validator(mode="after")
    def _no_internal_paths(self) -> IngressConfig:
        for path in self.public_paths:
            if not path.startswith("/") or path.rstrip("/") == "":
                raise ValueError(f"publicPaths: {path!r} must be a path prefix such as /v1")
            internal = [p for p in INTERNAL_PATHS if p.startswith(path.rstrip("/") + "/")]
            if path.rstrip("/") in INTERNAL_PATHS or internal:
                raise ValueError(
                    f"publicPaths: {path!r} would publish {', '.join(internal) or path}, which "
                    "stay internal (kubectl port-forward svc/gateway 8080)"
                )
        return self


class GatewayConfig(_Model):
    replicas: int = Field(default=2, ge=1)
    max_replicas: int = Field(default=6, ge=1)
    target_cpu_utilization: int = Field(default=70, ge=10, le=100)
    resources: Resources = Resources(
        cpu_request="250m", memory_request="256Mi", cpu_limit="1", memory_limit="512Mi"
    )
    semantic_cache: bool = False
    service_type: Literal["ClusterIP", "LoadBalancer", "NodePort"] = "ClusterIP"
    load_balancer_tls_certificate: str | None = None
    ingress: IngressConfig | None = None
    environment: Literal["development", "production"] = "production"
    # Share of requests whose content is captured for the quality loop (docs/feedback.md).
    capture_sample_rate: float = Field(default=0.0, ge=0, le=1)

    @model_validator(mode="after")
    def _replicas_fit(self) -> GatewayConfig:
        if self.max_replicas < self.replicas:
            raise ValueError("maxReplicas must be at least replicas")
        return self


class RedisConfig(_Model):
    """In-cluster Redis (official image with the query engine) or an external URL."""

    mode: Literal["in-cluster", "external"] = "in-cluster"
    image: str = "redis:8.2.3"
    storage_size: Quantity = "5Gi"
    storage_class: str | None = None
    maxmemory: str = "768mb"
    resources: Resources = Resources(
        cpu_request="100m", memory_request="1Gi", cpu_limit="1", memory_limit="1Gi"
    )


class ObservabilityConfig(_Model):
    collector: bool = True
    image: str = "otel/opentelemetry-collector-contrib:0.139.0"
    export_endpoint: str | None = None
    resources: Resources = Resources(
        cpu_request="100m", memory_request="256Mi", cpu_limit="500m", memory_limit="512Mi"
    )


class KedaConfig(_Model):
    enabled: bool = False
    prometheus_url: str | None = None
    # PromQL for the queue depth; the default assumes a `service` label naming the Service.
    query: str | None = None
    queue_threshold: int = Field(default=5, ge=1)
    min_replicas: int = Field(default=1, ge=0)
    max_replicas: int = Field(default=4, ge=1)

    @model_validator(mode="after")
    def _needs_prometheus(self) -> KedaConfig:
        if self.enabled and not self.prometheus_url:
            raise ValueError("prometheusUrl is required when KEDA autoscaling is enabled")
        if self.max_replicas < self.min_replicas:
            raise ValueError("maxReplicas must be at least minReplicas")
        return self


class EvalsConfig(_Model):
    enabled: bool = True
    suite: str = "smoke"
    schedule: str | None = None
    await_completion: bool = True
    # Limits of the evals job's own gateway key (none by default: the perf suite loads).
    key_rpm: int | None = Field(default=None, ge=1)
    key_tpm: int | None = Field(default=None, ge=1)
    resources: Resources = Resources(
        cpu_request="100m", memory_request="256Mi", cpu_limit="1", memory_limit="1Gi"
    )
    # The online evals Deployment (docs/feedback.md), with its own gateway key.
    online: bool = False
    online_interval_seconds: float = Field(default=60.0, gt=0)


class NetworkConfig(_Model):
    """Egress is denied to every pod of the namespace except what the app needs: DNS, the
    paths between its services, and these."""

    dns_namespace: DnsLabel = "kube-system"
    # llm/embedder download weights from the Hugging Face hub (HTTPS) when they start.
    model_downloads: bool = True
    # Where an external Redis (redis.mode external) lives; narrow it to its address.
    external_redis_cidrs: list[str] = ["0.0.0.0/0"]


class NodeGroupConfig(_Model):
    instance_type: str
    min_size: int = Field(ge=0)
    desired_size: int = Field(ge=0)
    max_size: int = Field(ge=1)
    disk_size_gb: int = Field(default=50, ge=20)

    @model_validator(mode="after")
    def _sizes_ordered(self) -> NodeGroupConfig:
        if not self.min_size <= self.desired_size <= self.max_size:
            raise ValueError("node group sizes must satisfy minSize <= desiredSize <= maxSize")
        return self


class AwsConfig(_Model):
    vpc_cidr: str = "10.0.0.0/16"
    availability_zones: int = Field(default=2, ge=2, le=4)
    nat_gateways: Literal["Single", "OnePerAz"] = "Single"
    kubernetes_version: str = "1.33"
    system_nodes: NodeGroupConfig = NodeGroupConfig(
        instance_type="m7i.large", min_size=2, desired_size=2, max_size=4
    )
    gpu_nodes: NodeGroupConfig | None = NodeGroupConfig(
        instance_type="g6.xlarge", min_size=1, desired_size=1, max_size=2, disk_size_gb=200
    )
    cache_node_type: str = "cache.r7g.large"
    cache_engine_version: str = "8.2"
    cache_replicas: int = Field(default=2, ge=1, le=6)
    force_delete_images: bool = False
    build_platform: str = "linux/amd64"
    torch_index_url: str | None = None

    @model_validator(mode="after")
    def _valkey_with_vector_search(self) -> AwsConfig:
        major, _, minor = self.cache_engine_version.partition(".")
        if (int(major), int(minor or 0)) < (8, 2):
            raise ValueError(
                "cacheEngineVersion must be 8.2 or later (Valkey vector search for RAG and "
                "the semantic cache)"
            )
        return self


class Secrets(_Model):
    """Values read with `pulumi config set --secret`; each stays a Pulumi secret."""

    master_key: str = Field(min_length=16)
    redis_password: str | None = Field(default=None, min_length=16, max_length=128)
    redis_url: str | None = None
    hf_token: str | None = None
    evals_api_key: str | None = None
    upstream_api_keys: dict[str, str] = {}

    @model_validator(mode="after")
    def _auth_token_charset(self) -> Secrets:
        # ElastiCache refuses these in auth tokens; refusing them everywhere keeps a stack
        # portable between in-cluster Redis and AWS.
        if self.redis_password is not None and set(self.redis_password) & set('/"@ '):
            raise ValueError("redisPassword must not contain '/', '\"', '@' or spaces")
        return self


class StackConfig(_Model):
    platform: Literal["kubernetes", "aws-eks"] = "kubernetes"
    namespace: DnsLabel = "genai"
    create_namespace: bool = True
    kubeconfig_context: str | None = None
    images: ImagesConfig = ImagesConfig()
    llm: ModelServiceConfig = ModelServiceConfig(model="HuggingFaceTB/SmolLM2-135M-Instruct")
    embedder: ModelServiceConfig = ModelServiceConfig(
        model="sentence-transformers/all-MiniLM-L6-v2"
    )
    gateway: GatewayConfig = GatewayConfig()
    redis: RedisConfig = RedisConfig()
    observability: ObservabilityConfig = ObservabilityConfig()
    keda: KedaConfig = KedaConfig()
    evals: EvalsConfig = EvalsConfig()
    network: NetworkConfig = NetworkConfig()
    aws: AwsConfig = AwsConfig()
    await_models: bool = True

    @model_validator(mode="after")
    def _platform_rules(self) -> StackConfig:
        if self.platform == "kubernetes" and not self.images.registry:
            raise ValueError(
                "images.registry is required on platform kubernetes "
                "(the registry your cluster pulls the service images from)"
            )
        for name, service in (("llm", self.llm), ("embedder", self.embedder)):
            scales_out = service.replicas > 1 or (
                name == "llm" and self.keda.enabled and self.keda.max_replicas > 1
            )
            cache = service.cache
            if cache.type == "pvc" and cache.access_mode == "ReadWriteOnce" and scales_out:
                raise ValueError(
                    f"{name}.cache.accessMode ReadWriteOnce cannot be shared by several "
                    "replicas; use ReadWriteMany, emptyDir, or one replica"
                )
            self._check_adapters(name, service, scales_out)
        return self

    @staticmethod
    def _check_adapters(name: str, service: ModelServiceConfig, scales_out: bool) -> None:
        adapters = service.adapters
        if adapters is None:
            return
        if name != "llm":
            raise ValueError(f"{name}.adapters: LoRA adapters are served by llm only")
        shared = adapters.existing_claim or adapters.access_mode != "ReadWriteOnce"
        if scales_out and not shared:
            raise ValueError(
                "llm.adapters.accessMode ReadWriteOnce cannot be shared by several replicas; "
                "use ReadWriteMany or ReadOnlyMany, an existingClaim, or one replica"
            )
        if len(adapters.load) > adapters.max_loras:
            raise ValueError(
                f"llm.adapters.load lists {len(adapters.load)} adapters, more than "
                f"llm.adapters.maxLoras ({adapters.max_loras})"
            )
        if len(set(adapters.load)) != len(adapters.load):
            raise ValueError("llm.adapters.load names an adapter more than once")


# Keys whose values must be stored encrypted (`pulumi config set --secret KEY`).
SECRET_KEYS = {to_camel(name): name for name in Secrets.model_fields}


def _decode(raw: str) -> Any:
    """Structured config arrives as JSON text; scalars stay text for pydantic to coerce."""
    text = raw.strip()
    if text.startswith(("{", "[")):
        return json.loads(text)
    return raw


def _location(namespace: str, loc: Iterable[int | str]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return f"{namespace}:{path}" if path else namespace


def _format_errors(namespace: str, error: ValidationError, *, secret: bool) -> str:
    lines = []
    first_key = ""
    for item in error.errors():
        key = _location(namespace, item["loc"])
        first_key = first_key or key
        message = item["msg"].removeprefix("Value error, ")
        shown = item.get("input")
        if not secret and item["loc"] and not isinstance(shown, dict | list):
            message += f" (got {shown!r})"
        lines.append(f"  {key}: {message}")
    path = first_key.partition(":")[2] or "<key>"
    hint = (
        f"Set secrets with: pulumi config set --secret {path} <value>"
        if secret
        else f"Fix it with: pulumi config set --path '{path}' <value> (see docs/deploy.md)"
    )
    return "Invalid stack config:\n" + "\n".join(lines) + "\n" + hint


def project_config_keys(namespace: str) -> dict[str, Any]:
    """Every config value set under `namespace:` in this stack, by key."""
    merged = {**runtime_config.get_config_env(), **runtime_config.CONFIG.get()}
    prefix = f"{namespace}:"
    return {key[len(prefix) :]: value for key, value in merged.items() if key.startswith(prefix)}


def load_stack_config(namespace: str | None = None) -> tuple[StackConfig, Secrets]:
    """Read and validate the current stack's config; raise ConfigError naming the key."""
    namespace = namespace or pulumi.get_project()
    values = project_config_keys(namespace)

    plain: dict[str, Any] = {}
    secret: dict[str, Any] = {}
    known = set(StackConfig.model_fields) | set(SECRET_KEYS)
    known_aliases = {to_camel(name) for name in StackConfig.model_fields} | set(SECRET_KEYS)
    for key, raw in sorted(values.items()):
        if key not in known_aliases and key not in known:
            raise ConfigError(
                f"Unknown stack config key '{namespace}:{key}'. "
                f"Known keys: {', '.join(sorted(known_aliases))}."
            )
        try:
            value = _decode(str(raw))
        except json.JSONDecodeError as exc:
            raise ConfigError(f"Stack config '{namespace}:{key}' is not valid JSON: {exc}") from exc
        if key in SECRET_KEYS:
            if not runtime_config.is_config_secret(f"{namespace}:{key}"):
                raise ConfigError(
                    f"Stack config '{namespace}:{key}' must be a secret; "
                    f"set it with: pulumi config set --secret {key} <value>"
                )
            secret[key] = value
        else:
            plain[key] = value

    try:
        stack = StackConfig.model_validate(plain)
    except ValidationError as exc:
        raise ConfigError(_format_errors(namespace, exc, secret=False)) from None
    try:
        secrets = Secrets.model_validate(secret)
    except ValidationError as exc:
        raise ConfigError(_format_errors(namespace, exc, secret=True)) from None
    _check_secret_needs(namespace, stack, secrets)
    return stack, secrets


def _check_secret_needs(namespace: str, stack: StackConfig, secrets: Secrets) -> None:
    needs_password = stack.platform == "aws-eks" or stack.redis.mode == "in-cluster"
    if needs_password and secrets.redis_password is None:
        raise ConfigError(
            f"Stack config '{namespace}:redisPassword' is required (16+ characters) for "
            f"{'the ElastiCache auth token' if stack.platform == 'aws-eks' else 'Redis'}; "
            "set it with: pulumi config set --secret redisPassword <value>"
        )
    if stack.platform == "kubernetes" and stack.redis.mode == "external" and not secrets.redis_url:
        raise ConfigError(
            f"Stack config '{namespace}:redisUrl' is required when redis.mode is external; "
            "set it with: pulumi config set --secret redisUrl rediss://:PASSWORD@HOST:6379/0"
        )
