"""BlueprintApp for production on a GPU cluster: vLLM, KEDA, Ingress with TLS, external Redis."""

from __future__ import annotations

from typing import Any

import pytest

from blueprint_infra.program import run
from blueprint_infra.testing import (
    Captured,
    is_secret,
    policy_violations,
    run_program,
    schema_errors,
)

DEPLOYMENT = "kubernetes:apps/v1:Deployment"
CONFIG: dict[str, Any] = {
    "platform": "kubernetes",
    "namespace": "genai",
    "images": {"registry": "ghcr.io/acme/genai-app", "tag": "1.2.3", "pullSecret": "ghcr"},
    "llm": {
        "model": "Qwen/Qwen2.5-7B-Instruct",
        "accelerator": "gpu",
        "gpuCount": 2,
        "maxModelLen": 8192,
        "gpuMemoryUtilization": 0.9,
        "shmSize": "16Gi",
        "cache": {"type": "pvc", "size": "100Gi", "accessMode": "ReadWriteMany"},
        "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-L4"},
    },
    "gateway": {
        "replicas": 3,
        "maxReplicas": 10,
        "ingress": {"host": "llm.example.com", "className": "nginx", "tlsSecretName": "llm-tls"},
    },
    "redis": {"mode": "external"},
    "observability": {"collector": False, "exportEndpoint": "https://otlp.example.com"},
    "keda": {
        "enabled": True,
        "prometheusUrl": "http://prometheus.monitoring:9090",
        "maxReplicas": 4,
    },
    "evals": {"schedule": "0 3 * * *"},
    "awaitModels": False,
    "masterKey": "sk-prod-master-key-0123456789",
    "redisUrl": "rediss://:redis-secret-0123456789@redis.example.com:6380/0",
    "hfToken": "hf_token_0123456789",
    "upstreamApiKeys": {"OPENAI_API_KEY": "sk-openai-0123456789"},
}
SECRETS = ("masterKey", "redisUrl", "hfToken", "upstreamApiKeys")


@pytest.fixture(scope="module")
def stack() -> Captured:
    return run_program(run, CONFIG, secret_keys=SECRETS)


def llm_pod(stack: Captured) -> dict:
    return stack.one(DEPLOYMENT, "llm").manifest["spec"]["template"]["spec"]


def test_the_stack_meets_every_policy_of_the_pack(stack: Captured) -> None:
    assert policy_violations(stack, mandatory_only=False) == []


def test_every_kubernetes_object_passes_the_strict_schema(stack: Captured) -> None:
    assert schema_errors(stack) == []


def test_gpu_llm_requests_gpus_tolerates_taints_and_runs_vllm(stack: Captured) -> None:
    pod = llm_pod(stack)
    model = pod["containers"][0]
    assert model["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert model["resources"]["requests"]["nvidia.com/gpu"] == "2"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-L4"}
    env = {item["name"]: item.get("value") for item in model["env"]}
    assert env["MODEL_BACKEND"] == "vllm"
    assert env["MODEL_TENSOR_PARALLEL_SIZE"] == "2"
    assert env["MODEL_MAX_MODEL_LEN"] == "8192"
    assert env["MODEL_GPU_MEMORY_UTILIZATION"] == "0.9"
    assert model["image"] == "ghcr.io/acme/genai-app/model-gpu:1.2.3"
    assert pod["imagePullSecrets"] == [{"name": "ghcr"}]


def test_gpu_pod_has_memory_backed_shm_and_a_weight_cache_claim(stack: Captured) -> None:
    pod = llm_pod(stack)
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["dshm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "16Gi"}
    mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["dshm"] == "/dev/shm"
    assert mounts["models"] == "/models"
    assert volumes["models"]["persistentVolumeClaim"] == {"claimName": "llm-models"}
    claim = stack.one("kubernetes:core/v1:PersistentVolumeClaim", "llm-models").manifest
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "100Gi"


def test_gpu_startup_probe_budget_and_rollout_without_a_spare_gpu(stack: Captured) -> None:
    deployment = stack.one(DEPLOYMENT, "llm").manifest
    model = deployment["spec"]["template"]["spec"]["containers"][0]
    startup = model["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] == 10 * 60
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}
    assert deployment["metadata"]["annotations"]["pulumi.com/skipAwait"] == "true"


def test_embedder_stays_on_cpu(stack: Captured) -> None:
    pod = stack.one(DEPLOYMENT, "embedder").manifest["spec"]["template"]["spec"]
    assert "nvidia.com/gpu" not in pod["containers"][0]["resources"]["limits"]
    assert "tolerations" not in pod


def test_model_services_export_traces_directly(stack: Captured) -> None:
    for name in ("llm", "embedder"):
        container = stack.one(DEPLOYMENT, name).manifest["spec"]["template"]["spec"]["containers"][
            0
        ]
        env = {item["name"]: item.get("value") for item in container["env"]}
        assert env["OTEL_SERVICE_NAME"] == name
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "https://otlp.example.com"


def test_keda_scales_the_llm_on_queue_depth(stack: Captured) -> None:
    (scaled,) = stack.of_type("kubernetes:keda.sh/v1alpha1:ScaledObject")
    spec = scaled.manifest["spec"]
    assert spec["scaleTargetRef"] == {"name": "llm"}
    assert spec["maxReplicaCount"] == 4
    trigger = spec["triggers"][0]
    assert trigger["type"] == "prometheus"
    assert trigger["metadata"]["serverAddress"] == "http://prometheus.monitoring:9090"
    assert "vllm:num_requests_waiting" in trigger["metadata"]["query"]
    assert 'namespace="genai"' in trigger["metadata"]["query"]
    assert trigger["metadata"]["threshold"] == "5"
    # KEDA owns the replica count.
    assert "replicas" not in stack.one(DEPLOYMENT, "llm").manifest["spec"]


def test_ingress_terminates_tls_and_does_not_buffer_streams(stack: Captured) -> None:
    ingress = stack.one("kubernetes:networking.k8s.io/v1:Ingress", "gateway").manifest
    assert ingress["spec"]["tls"] == [{"hosts": ["llm.example.com"], "secretName": "llm-tls"}]
    assert ingress["spec"]["ingressClassName"] == "nginx"
    annotations = ingress["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"
    # Only the API is published: /metrics, /docs, /openapi.json, /admin and /ui match no
    # rule (Prefix matching is per path element, so /v1 never matches /v1x or /admin).
    (rule,) = ingress["spec"]["rules"]
    assert [(p["path"], p["pathType"]) for p in rule["http"]["paths"]] == [("/v1", "Prefix")]
    assert "defaultBackend" not in ingress["spec"]
    assert stack.outputs["gatewayUrl"] == "https://llm.example.com/v1"


def test_external_redis_and_no_in_cluster_redis(stack: Captured) -> None:
    assert not stack.of_type("kubernetes:apps/v1:StatefulSet")
    names = {r.name for r in stack.of_type("kubernetes:networking.k8s.io/v1:NetworkPolicy")}
    assert "allow-redis" not in names
    gateway_secret = stack.one("kubernetes:core/v1:Secret", "gateway-secrets")
    assert is_secret(gateway_secret.inputs["stringData"])
    data = gateway_secret.manifest["stringData"]
    assert data["GATEWAY_REDIS_URL"] == CONFIG["redisUrl"]
    assert data["OPENAI_API_KEY"] == "sk-openai-0123456789"
    model_secret = stack.one("kubernetes:core/v1:Secret", "model-secrets").manifest
    assert model_secret["stringData"] == {"HF_TOKEN": "hf_token_0123456789"}


def test_egress_reaches_the_external_redis_and_upstreams(stack: Captured) -> None:
    policies = {
        r.name: r.manifest["spec"]
        for r in stack.of_type("kubernetes:networking.k8s.io/v1:NetworkPolicy")
    }
    rules = policies["allow-gateway-egress"]["egress"]
    redis_rule = next(r for r in rules if r["ports"] == [{"protocol": "TCP", "port": 6380}])
    assert redis_rule["to"] == [{"ipBlock": {"cidr": "0.0.0.0/0"}}]  # from the redisUrl port
    https = [r for r in rules if r["ports"] == [{"protocol": "TCP", "port": 443}]]
    assert len(https) == 2  # the upstream provider, and the direct OTLP endpoint
    assert policies["allow-evals-key-egress"]["egress"] == [redis_rule]


def test_upstream_keys_reach_the_gateway_from_the_secret(stack: Captured) -> None:
    container = stack.one(DEPLOYMENT, "gateway").manifest["spec"]["template"]["spec"]["containers"][
        0
    ]
    env = {item["name"]: item for item in container["env"]}
    assert env["OPENAI_API_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "gateway-secrets",
        "key": "OPENAI_API_KEY",
    }
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"]["value"] == "https://otlp.example.com"


def test_no_collector_when_exporting_directly(stack: Captured) -> None:
    assert not [r for r in stack.resources if r.name == "otel-collector"]
    policies = {
        r.name: r.manifest["spec"]
        for r in stack.of_type("kubernetes:networking.k8s.io/v1:NetworkPolicy")
    }
    sources = policies["allow-llm"]["ingress"][0]["from"]
    assert sources == [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "gateway"}}}]


def test_scheduled_evals(stack: Captured) -> None:
    (cron,) = stack.of_type("kubernetes:batch/v1:CronJob")
    spec = cron.manifest["spec"]
    assert spec["schedule"] == "0 3 * * *"
    assert spec["concurrencyPolicy"] == "Forbid"
    container = spec["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["run", "--suite", "smoke"]


def test_gateway_hpa_follows_config(stack: Captured) -> None:
    hpa = stack.one("kubernetes:autoscaling/v2:HorizontalPodAutoscaler", "gateway").manifest
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 10)
