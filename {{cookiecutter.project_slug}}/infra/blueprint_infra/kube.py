"""Shared Kubernetes building blocks: labels, security contexts, probes, env helpers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pulumi

# The images run as this unprivileged user (their Dockerfiles create it).
APP_UID = 10001
SKIP_AWAIT = {"pulumi.com/skipAwait": "true"}


def labels(component: str, part_of: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": component,
        "app.kubernetes.io/part-of": part_of,
        "app.kubernetes.io/managed-by": "pulumi",
    }


def selector(component: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": component}


def pod_security(uid: int = APP_UID) -> dict[str, Any]:
    return {
        "run_as_non_root": True,
        "run_as_user": uid,
        "run_as_group": uid,
        "fs_group": uid,
        "seccomp_profile": {"type": "RuntimeDefault"},
    }


def container_security(read_only_root: bool = True) -> dict[str, Any]:
    return {
        "run_as_non_root": True,
        "allow_privilege_escalation": False,
        "read_only_root_filesystem": read_only_root,
        "capabilities": {"drop": ["ALL"]},
        "seccomp_profile": {"type": "RuntimeDefault"},
    }


def http_probe(
    path: str, port: str | int, *, period: int, failures: int, timeout: int = 5
) -> dict[str, Any]:
    return {
        "http_get": {"path": path, "port": port},
        "period_seconds": period,
        "failure_threshold": failures,
        "timeout_seconds": timeout,
    }


def env(values: Mapping[str, str]) -> list[dict[str, Any]]:
    return [{"name": name, "value": value} for name, value in values.items()]


def secret_env(names: Mapping[str, tuple[pulumi.Input[str], str]]) -> list[dict[str, Any]]:
    """Env vars read from Secrets: `{ENV: (secret_name, key)}`."""
    return [
        {"name": name, "value_from": {"secret_key_ref": {"name": secret, "key": key}}}
        for name, (secret, key) in names.items()
    ]


def tmp_volume(name: str = "tmp", size: str = "1Gi") -> dict[str, Any]:
    return {"name": name, "empty_dir": {"size_limit": size}}


def metadata(
    name: str,
    namespace: pulumi.Input[str],
    component_labels: Mapping[str, str],
    annotations: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "labels": dict(component_labels)}
    if annotations:
        meta["annotations"] = dict(annotations)
    return meta
