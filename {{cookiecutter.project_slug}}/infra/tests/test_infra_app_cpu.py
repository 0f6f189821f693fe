"""BlueprintApp on an existing cluster, CPU model services (the dev stack), under Pulumi mocks."""

from __future__ import annotations

import json
from typing import Any

import pytest

from blueprint_infra.model_service import whole_cpus
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
    "namespace": "genai-dev",
    "images": {"registry": "registry.example.com/acme", "tag": "0.1.0"},
    "masterKey": "sk-test-master-key-0123456789",
    "redisPassword": "redis-password-0123456789",
}
SECRETS = ("masterKey", "redisPassword")


@pytest.fixture(scope="module")
def stack() -> Captured:
    return run_program(run, CONFIG, secret_keys=SECRETS)


def containers(stack: Captured, type_: str, name: str) -> list[dict]:
    pod = stack.one(type_, name).manifest["spec"]["template"]["spec"]
    return pod.get("initContainers", []) + pod["containers"]


def test_the_stack_meets_every_policy_of_the_pack(stack: Captured) -> None:
    assert policy_violations(stack, mandatory_only=False) == []


def test_every_kubernetes_object_passes_the_strict_schema(stack: Captured) -> None:
    assert len(list(stack.kubernetes_objects())) > 20
    assert schema_errors(stack) == []


def test_schema_check_catches_a_wrong_field(stack: Captured) -> None:
    # Guards the guard: a misspelt field must fail the strict schema.
    broken = stack.one(DEPLOYMENT, "gateway")
    broken.inputs["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    try:
        assert len(schema_errors(Captured([broken]))) == 2
    finally:
        del broken.inputs["spec"]["template"]["spec"]["containers"][0]["livenesProbe"]


def test_service_names_match_the_design(stack: Captured) -> None:
    services = {r.name for r in stack.of_type("kubernetes:core/v1:Service")}
    assert services == {"gateway", "llm", "embedder", "redis", "otel-collector"}
    ports = {
        r.name: r.manifest["spec"]["ports"][0]["port"]
        for r in stack.of_type("kubernetes:core/v1:Service")
    }
    assert ports == {
        "gateway": 8080,
        "llm": 8000,
        "embedder": 8001,
        "redis": 6379,
        "otel-collector": 4317,
    }


@pytest.mark.parametrize(
    ("type_", "name"),
    [
        (DEPLOYMENT, "gateway"),
        (DEPLOYMENT, "llm"),
        (DEPLOYMENT, "embedder"),
        (DEPLOYMENT, "otel-collector"),
        ("kubernetes:apps/v1:StatefulSet", "redis"),
        ("kubernetes:batch/v1:Job", "evals-smoke"),
    ],
)
def test_workloads_are_non_root_read_only_and_limited(
    stack: Captured, type_: str, name: str
) -> None:
    pod = stack.one(type_, name).manifest["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for container in containers(stack, type_, name):
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"] == {"drop": ["ALL"]}
        resources = container["resources"]
        assert set(resources["requests"]) >= {"cpu", "memory"}
        assert set(resources["limits"]) >= {"cpu", "memory"}


def test_cpu_model_services_run_transformers_with_a_long_startup_probe(stack: Captured) -> None:
    for name, port, task in (("llm", 8000, "generate"), ("embedder", 8001, "embed")):
        deployment = stack.one(DEPLOYMENT, name).manifest
        pod = deployment["spec"]["template"]["spec"]
        model = pod["containers"][0]
        env = {item["name"]: item.get("value") for item in model["env"]}
        assert env["MODEL_BACKEND"] == "transformers"
        assert env["MODEL_TASK"] == task
        assert env["MODEL_PORT"] == str(port)
        assert env["MODEL_NUM_THREADS"] == "2"  # the default CPU limit, all of it
        assert "nvidia.com/gpu" not in model["resources"]["limits"]
        assert "tolerations" not in pod
        assert not any(v.get("emptyDir", {}).get("medium") == "Memory" for v in pod["volumes"])
        startup = model["startupProbe"]
        assert startup["httpGet"]["path"] == "/health"
        # The CPU budget is an hour of loading before the kubelet gives up.
        assert startup["periodSeconds"] * startup["failureThreshold"] >= 60 * 60
        assert model["livenessProbe"]["httpGet"]["path"] == "/health"
        assert model["readinessProbe"]["httpGet"]["path"] == "/health"
        assert pod["initContainers"][0]["args"][0] == "prepare"
        assert deployment["metadata"].get("annotations", {}).get("pulumi.com/skipAwait") is None


def test_every_service_traces_to_the_collector_under_its_own_name(stack: Captured) -> None:
    for name in ("gateway", "llm", "embedder"):
        container = stack.one(DEPLOYMENT, name).manifest["spec"]["template"]["spec"]["containers"][
            0
        ]
        env = {item["name"]: item.get("value") for item in container["env"]}
        assert env["OTEL_SERVICE_NAME"] == name
        assert env["OTEL_SDK_DISABLED"] == "false"
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4318"
        assert env["OTEL_EXPORTER_OTLP_PROTOCOL"] == "http/protobuf"


def test_gateway_points_at_the_in_cluster_services(stack: Captured) -> None:
    gateway = stack.one(DEPLOYMENT, "gateway").manifest
    container = gateway["spec"]["template"]["spec"]["containers"][0]
    env = {item["name"]: item for item in container["env"]}
    upstreams = json.loads(env["GATEWAY_UPSTREAMS"]["value"])
    assert [(u["name"], u["base_url"]) for u in upstreams] == [
        ("llm", "http://llm:8000"),
        ("embedder", "http://embedder:8001"),
    ]
    assert env["GATEWAY_PORT"]["value"] == "8080"
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"]["value"] == "http://otel-collector:4318"
    for secret_env in ("GATEWAY_MASTER_KEY", "GATEWAY_REDIS_URL"):
        assert "value" not in env[secret_env]
        assert env[secret_env]["valueFrom"]["secretKeyRef"]["name"] == "gateway-secrets"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["image"] == "registry.example.com/acme/gateway:0.1.0"


def test_gateway_scales_and_survives_drains(stack: Captured) -> None:
    hpa = stack.one("kubernetes:autoscaling/v2:HorizontalPodAutoscaler", "gateway").manifest
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "gateway",
    }
    assert hpa["spec"]["minReplicas"] == 2
    assert hpa["spec"]["maxReplicas"] == 6
    pdb = stack.one("kubernetes:policy/v1:PodDisruptionBudget", "gateway").manifest
    assert pdb["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": "gateway"}
    assert pdb["spec"]["maxUnavailable"] == 1


def test_secrets_are_pulumi_secrets_and_never_plain_env(stack: Captured) -> None:
    for secret in stack.of_type("kubernetes:core/v1:Secret"):
        assert is_secret(secret.inputs["stringData"]), secret.name
    gateway_secret = stack.one("kubernetes:core/v1:Secret", "gateway-secrets").manifest
    assert gateway_secret["stringData"]["GATEWAY_MASTER_KEY"] == CONFIG["masterKey"]
    assert gateway_secret["stringData"]["GATEWAY_REDIS_URL"] == (
        f"redis://:{CONFIG['redisPassword']}@redis:6379/0"
    )
    for resource in stack.resources:
        if resource.type == "kubernetes:core/v1:Secret":
            continue
        text = json.dumps(resource.manifest)
        assert CONFIG["masterKey"] not in text, resource.name
        assert CONFIG["redisPassword"] not in text, resource.name


def test_redis_is_persistent_password_protected_and_evicts_only_ttl_keys(stack: Captured) -> None:
    redis = stack.one("kubernetes:apps/v1:StatefulSet", "redis").manifest
    container = redis["spec"]["template"]["spec"]["containers"][0]
    assert container["image"].startswith("redis:8.")
    args = container["args"]
    assert args[args.index("--maxmemory-policy") + 1] == "volatile-lru"
    assert args[args.index("--requirepass") + 1] == "$(REDIS_PASSWORD)"
    password = next(e for e in container["env"] if e["name"] == "REDIS_PASSWORD")
    assert password["valueFrom"]["secretKeyRef"] == {"name": "redis-auth", "key": "password"}
    claim = redis["spec"]["volumeClaimTemplates"][0]
    assert claim["spec"]["resources"]["requests"]["storage"] == "5Gi"


def test_network_policies_let_only_the_gateway_reach_models_and_redis(stack: Captured) -> None:
    policies = {
        r.name: r.manifest["spec"]
        for r in stack.of_type("kubernetes:networking.k8s.io/v1:NetworkPolicy")
    }
    assert policies["default-deny-ingress"] == {"podSelector": {}, "policyTypes": ["Ingress"]}

    def sources(name: str) -> list[str]:
        return [
            peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"]
            for peer in policies[name]["ingress"][0]["from"]
        ]

    assert policies["allow-llm"]["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "llm"}
    assert sources("allow-llm") == ["gateway", "otel-collector"]
    assert sources("allow-embedder") == ["gateway", "otel-collector"]
    # The gateway, and the Job that registers the evals key (below).
    assert sources("allow-redis") == ["gateway", "evals-key"]
    assert policies["allow-redis"]["ingress"][0]["ports"] == [{"protocol": "TCP", "port": 6379}]
    # The gateway is the entry point: clients and the evals job reach it on 8080.
    assert "from" not in policies["allow-gateway"]["ingress"][0]


def egress(stack: Captured) -> dict[str, dict]:
    return {
        r.name: r.manifest["spec"]
        for r in stack.of_type("kubernetes:networking.k8s.io/v1:NetworkPolicy")
        if "Egress" in r.manifest["spec"]["policyTypes"]
    }


def allowed(rules: list[dict]) -> set[tuple[str, int]]:
    """(peer, port) pairs of egress rules: a component name, an ipBlock CIDR or a namespace."""
    pairs = set()
    for rule in rules:
        for peer in rule["to"]:
            if "podSelector" in peer:
                name = peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"]
            elif "ipBlock" in peer:
                name = peer["ipBlock"]["cidr"]
            else:
                name = "namespace:" + str(peer["namespaceSelector"].get("matchLabels"))
            pairs |= {(name, port["port"]) for port in rule["ports"]}
    return pairs


def test_egress_is_denied_by_default_and_opened_per_component(stack: Captured) -> None:
    policies = egress(stack)
    assert policies["default-deny-egress"] == {"podSelector": {}, "policyTypes": ["Egress"]}
    dns = policies["allow-dns-egress"]
    assert dns["podSelector"] == {}
    assert dns["egress"][0]["to"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}}
    ]
    assert {p["protocol"] for p in dns["egress"][0]["ports"]} == {"UDP", "TCP"}

    def of(name: str) -> set[tuple[str, int]]:
        return allowed(policies[f"allow-{name}-egress"]["egress"])

    collector = {("otel-collector", 4317), ("otel-collector", 4318)}
    # No upstream keys in this stack: the gateway reaches nothing outside the namespace.
    assert of("gateway") == {("llm", 8000), ("embedder", 8001), ("redis", 6379)} | collector
    assert of("evals") == {("gateway", 8080)} | collector
    assert of("evals-key") == {("redis", 6379)}
    # Weights come from the hub over HTTPS; "internet" excludes the cloud metadata address.
    assert of("llm") == of("embedder") == {("0.0.0.0/0", 443)} | collector
    internet = next(
        peer
        for rule in policies["allow-llm-egress"]["egress"]
        for peer in rule["to"]
        if "ipBlock" in peer
    )
    assert "169.254.0.0/16" in internet["ipBlock"]["except"]
    assert "10.0.0.0/8" in internet["ipBlock"]["except"]
    assert ("gateway", 8080) in of("otel-collector")  # it scrapes /metrics
    assert "allow-redis-egress" not in policies  # Redis talks to no one


def test_evals_job_gets_its_own_key_never_the_master_key(stack: Captured) -> None:
    from blueprint_infra.evals_key import derive_evals_key, key_hash

    evals_secret = stack.one("kubernetes:core/v1:Secret", "evals-secrets").manifest
    key = evals_secret["stringData"]["EVALS_API_KEY"]
    assert key == derive_evals_key(CONFIG["masterKey"]) != CONFIG["masterKey"]
    assert key.startswith("sk-gw-") and len(key) > 40
    assert derive_evals_key("another-master-key-0123456789") != key  # rotates with it
    register = stack.one("kubernetes:batch/v1:Job", "evals-key").manifest
    (container,) = register["spec"]["template"]["spec"]["containers"]
    env = {item["name"]: item for item in container["env"]}
    assert env["EVALS_KEY_SHA256"]["value"] == key_hash(key)
    assert json.loads(env["EVALS_KEY_MODELS"]["value"]) == [
        "HuggingFaceTB/SmolLM2-135M-Instruct",
        "sentence-transformers/all-MiniLM-L6-v2",
    ]
    assert env["GATEWAY_REDIS_URL"]["valueFrom"]["secretKeyRef"]["name"] == "gateway-secrets"
    for name in ("evals-key", "evals-smoke"):
        text = json.dumps(stack.one("kubernetes:batch/v1:Job", name).manifest)
        assert key not in text and CONFIG["masterKey"] not in text, name
        assert "GATEWAY_MASTER_KEY" not in text, name


def run_key_registration(stack: Captured, redis_url: str) -> None:
    """The evals-key Job's container command, as the pod runs it, against `redis_url`."""
    import subprocess
    import sys

    register = stack.one("kubernetes:batch/v1:Job", "evals-key").manifest
    (container,) = register["spec"]["template"]["spec"]["containers"]
    env = {item["name"]: item["value"] for item in container["env"] if "value" in item}
    env["GATEWAY_REDIS_URL"] = redis_url
    assert container["command"][:2] == ["python", "-c"]
    argv = [sys.executable, *container["command"][1:]]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


async def test_the_registered_evals_key_is_accepted_by_the_gateway_with_its_scope(
    stack: Captured, redis_server: Any
) -> None:
    """The Job's own script, run against a real Redis; the gateway's KeyStore then accepts
    the evals key, scoped to the stack's models, and not as the master key."""
    from gateway.keys import KeyStore
    from gateway.redis_store import RedisStore
    from gateway.settings import Settings

    for _ in range(2):  # idempotent: a re-run (a replaced Job) changes nothing
        run_key_registration(stack, redis_server.url)
    key = stack.one("kubernetes:core/v1:Secret", "evals-secrets").manifest["stringData"][
        "EVALS_API_KEY"
    ]
    store = RedisStore(Settings(_env_file=None, redis_url=redis_server.url))  # type: ignore[call-arg]
    try:
        keys = KeyStore(store, CONFIG["masterKey"], 0)
        record = await keys.verify(key)
        assert record is not None and not record.is_master
        assert record.name == "evals"
        assert record.allows_model("HuggingFaceTB/SmolLM2-135M-Instruct")
        assert not record.allows_model("some-other-model")
        assert record.allows_collection("docs")  # the RAG suite's collection
        assert await keys.verify(key + "x") is None
        assert [r.name for r in await keys.list_records()].count("evals") == 1
    finally:
        await store.close()


def test_evals_job_runs_the_smoke_suite_against_the_gateway(stack: Captured) -> None:
    job = stack.one("kubernetes:batch/v1:Job", "evals-smoke").manifest
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] + container["args"] == [
        "python",
        "-m",
        "evals",
        "run",
        "--suite",
        "smoke",
    ]
    env = {item["name"]: item for item in container["env"]}
    assert env["EVALS_BASE_URL"]["value"] == "http://gateway:8080/v1"
    assert env["EVALS_API_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "evals-secrets"
    assert not stack.of_type("kubernetes:batch/v1:CronJob")


def test_keda_is_absent_when_disabled(stack: Captured) -> None:
    assert not [r for r in stack.resources if "CustomResource" in r.type or "keda" in r.type]
    assert stack.one(DEPLOYMENT, "llm").manifest["spec"]["replicas"] == 1


def test_namespace_enforces_restricted_pod_security(stack: Captured) -> None:
    namespace = stack.one("kubernetes:core/v1:Namespace", "genai-dev").manifest
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    namespaces = {
        r.manifest["metadata"].get("namespace")
        for r in stack.kubernetes_objects()
        if r.type != "kubernetes:core/v1:Namespace"
    }
    assert namespaces == {"genai-dev"}


def test_stack_outputs(stack: Captured) -> None:
    assert stack.outputs["namespace"] == "genai-dev"
    assert stack.outputs["gatewayUrl"] == "http://gateway.genai-dev.svc.cluster.local:8080/v1"
    assert stack.outputs["redisEndpoint"] == "redis.genai-dev.svc.cluster.local:6379"
    assert stack.outputs["images"]["modelCpu"] == "registry.example.com/acme/model-cpu:0.1.0"
    assert "kubeconfig" not in stack.outputs
    assert CONFIG["redisPassword"] not in json.dumps(stack.outputs)


@pytest.mark.parametrize(
    ("quantity", "cpus"), [("2", 2), ("1500m", 2), ("500m", 1), ("0.5", 1), ("8", 8)]
)
def test_torch_threads_follow_the_cpu_limit(quantity: str, cpus: int) -> None:
    assert whole_cpus(quantity) == cpus
