"""The policy pack's validators, called directly on violating and compliant resources."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
from pulumi_policy import ReportViolation, ResourceValidationArgs

from blueprint_infra import policies

Validator = Callable[[ResourceValidationArgs, ReportViolation], None]
DEPLOYMENT = "kubernetes:apps/v1:Deployment"


def deployment(**container: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "app",
        "image": "registry.example.com/app:1.0.0",
        "resources": {
            "requests": {"cpu": "100m", "memory": "128Mi"},
            "limits": {"cpu": "1", "memory": "256Mi"},
        },
        "securityContext": {"runAsNonRoot": True},
    }
    base.update(container)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "app", "namespace": "genai"},
        "spec": {"template": {"spec": {"containers": [base]}}},
    }


def violations(validator: Validator, resource_type: str, props: dict[str, Any]) -> list[str]:
    found: list[str] = []
    args = ResourceValidationArgs(
        resource_type=resource_type,
        props=props,
        urn=f"urn:pulumi:test::genai-app::{resource_type}::x",
        name="x",
        opts=None,  # type: ignore[arg-type]
        provider=None,
    )

    def report(message: str, urn: str | None = None) -> None:
        found.append(message)

    validator(args, report)
    return found


def without(props: dict[str, Any], *path: str | int) -> dict[str, Any]:
    changed = copy.deepcopy(props)
    target: Any = changed
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    return changed


CONTAINER = ("spec", "template", "spec", "containers", 0)


def test_limits_rule() -> None:
    rule = policies.require_resource_limits
    assert violations(rule, DEPLOYMENT, deployment()) == []
    found = violations(rule, DEPLOYMENT, without(deployment(), *CONTAINER, "resources", "limits"))
    assert found == ["container 'app' has no limits for cpu, memory"]
    cron = {
        "spec": {
            "jobTemplate": {"spec": {"template": {"spec": {"initContainers": [{"name": "init"}]}}}}
        }
    }
    assert len(violations(rule, "kubernetes:batch/v1:CronJob", cron)) == 2
    assert violations(rule, "kubernetes:core/v1:Service", {"spec": {}}) == []


@pytest.mark.parametrize(
    "env",
    [
        {"name": "GATEWAY_MASTER_KEY", "value": "sk-123"},
        {"name": "REDIS_PASSWORD", "value": "pw"},
        {"name": "HF_TOKEN", "value": "hf_abc"},
        {"name": "GATEWAY_REDIS_URL", "value": "rediss://:hunter2@cache:6379/0"},
    ],
)
def test_plain_text_secret_env_is_flagged(env: dict[str, str]) -> None:
    found = violations(policies.forbid_plain_text_secret_env, DEPLOYMENT, deployment(env=[env]))
    assert len(found) == 1
    assert env["name"] in found[0]


def test_secret_references_and_ordinary_env_pass() -> None:
    env = [
        {"name": "GATEWAY_MASTER_KEY", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
        {"name": "GATEWAY_UPSTREAMS", "value": '[{"base_url": "http://llm:8000"}]'},
        {"name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": "http://otel-collector:4318"},
        {"name": "MODEL_MAX_NUM_SEQS", "value": "16"},
    ]
    assert violations(policies.forbid_plain_text_secret_env, DEPLOYMENT, deployment(env=env)) == []


def service(annotations: dict[str, str] | None, type_: str = "LoadBalancer") -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": "gateway"}
    if annotations is not None:
        metadata["annotations"] = annotations
    return {"metadata": metadata, "spec": {"type": type_}}


def test_public_load_balancer_without_tls_is_flagged() -> None:
    rule = policies.forbid_public_endpoints_without_tls
    svc = "kubernetes:core/v1:Service"
    assert len(violations(rule, svc, service(None))) == 1
    tls = {"service.beta.kubernetes.io/aws-load-balancer-ssl-cert": "arn:aws:acm:cert"}
    assert violations(rule, svc, service(tls)) == []
    internal = {"service.beta.kubernetes.io/aws-load-balancer-scheme": "internal"}
    assert violations(rule, svc, service(internal)) == []
    assert violations(rule, svc, service(None, "ClusterIP")) == []


def test_ingress_without_tls_is_flagged() -> None:
    rule = policies.forbid_public_endpoints_without_tls
    ingress = "kubernetes:networking.k8s.io/v1:Ingress"
    plain = {"spec": {"rules": [{"host": "llm.example.com"}]}}
    assert len(violations(rule, ingress, plain)) == 1
    secured = {**plain, "spec": {**plain["spec"], "tls": [{"secretName": "tls"}]}}
    assert violations(rule, ingress, secured) == []


def test_root_and_privileged_containers_are_flagged() -> None:
    rule = policies.require_non_root
    assert violations(rule, DEPLOYMENT, deployment()) == []
    assert len(violations(rule, DEPLOYMENT, deployment(securityContext={}))) == 1
    privileged = deployment(securityContext={"runAsNonRoot": True, "privileged": True})
    assert violations(rule, DEPLOYMENT, privileged) == ["container 'app' is privileged"]
    # Pod-level runAsNonRoot covers containers that do not override it.
    pod_level = deployment(securityContext={})
    pod_level["spec"]["template"]["spec"]["securityContext"] = {"runAsNonRoot": True}
    assert violations(rule, DEPLOYMENT, pod_level) == []
    system = deployment(securityContext={})
    system["metadata"]["namespace"] = "kube-system"
    assert violations(rule, DEPLOYMENT, system) == []


def test_gpu_container_without_startup_probe_is_flagged() -> None:
    rule = policies.require_gpu_startup_probe
    resources = {
        "requests": {"cpu": "1", "memory": "1Gi"},
        "limits": {"cpu": "1", "memory": "1Gi", "nvidia.com/gpu": "1"},
    }
    assert len(violations(rule, DEPLOYMENT, deployment(resources=resources))) == 1
    probed = deployment(resources=resources, startupProbe={"httpGet": {"path": "/health"}})
    assert violations(rule, DEPLOYMENT, probed) == []
    assert violations(rule, DEPLOYMENT, deployment()) == []


@pytest.mark.parametrize(
    ("image", "flagged"),
    [
        ("registry.example.com/app", True),
        ("registry.example.com/app:latest", True),
        ("localhost:5000/app", True),
        ("registry.example.com/app:1.0.0", False),
        ("localhost:5000/app:1.0.0", False),
        (f"registry.example.com/app@sha256:{'0' * 64}", False),
    ],
)
def test_mutable_image_tags_are_flagged(image: str, flagged: bool) -> None:
    found = violations(policies.forbid_mutable_image_tags, DEPLOYMENT, deployment(image=image))
    assert bool(found) is flagged


def test_every_policy_has_a_unique_name_and_a_validator() -> None:
    names = [policy.name for policy in policies.POLICIES]
    assert len(names) == len(set(names)) == 6
    assert all(callable(policy.validate) for policy in policies.POLICIES)
