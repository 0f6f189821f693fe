"""Policy rules for `pulumi preview/up --policy-pack infra/policy`.

Each validator is a plain function `(args, report_violation)`, so tests call them directly
(`PolicyPack()` itself blocks waiting for the engine). Properties arrive as the engine sees
them: camelCase Kubernetes objects, secrets already unwrapped.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
)

POD_TEMPLATE_PATHS: dict[str, tuple[str, ...]] = {
    "kubernetes:apps/v1:Deployment": ("spec", "template", "spec"),
    "kubernetes:apps/v1:StatefulSet": ("spec", "template", "spec"),
    "kubernetes:apps/v1:DaemonSet": ("spec", "template", "spec"),
    "kubernetes:apps/v1:ReplicaSet": ("spec", "template", "spec"),
    "kubernetes:batch/v1:Job": ("spec", "template", "spec"),
    "kubernetes:batch/v1:CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
    "kubernetes:core/v1:Pod": ("spec",),
}
SECRET_NAME = re.compile(r"(PASSWORD|PASSWD|SECRET|TOKEN|API_KEY|MASTER_KEY|CREDENTIALS?)$")
URL_WITH_PASSWORD = re.compile(r"^[a-z][a-z0-9+.-]*://[^/@\s]*:[^/@\s]+@")
TLS_ANNOTATIONS = (
    "service.beta.kubernetes.io/aws-load-balancer-ssl-cert",
    "service.beta.kubernetes.io/oci-load-balancer-ssl-ports",
    "cloud.google.com/app-protocols",
)
INTERNAL_ANNOTATIONS = {
    "service.beta.kubernetes.io/aws-load-balancer-internal": "true",
    "service.beta.kubernetes.io/aws-load-balancer-scheme": "internal",
    "networking.gke.io/load-balancer-type": "Internal",
    "service.beta.kubernetes.io/azure-load-balancer-internal": "true",
}
# Cluster add-ons (the NVIDIA device plugin) need host access and are reviewed separately.
SYSTEM_NAMESPACES = {"kube-system"}


def _dig(value: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def pod_spec(resource_type: str, props: Mapping[str, Any]) -> Mapping[str, Any] | None:
    path = POD_TEMPLATE_PATHS.get(resource_type)
    spec = _dig(props, path) if path else None
    return spec if isinstance(spec, Mapping) else None


def containers(spec: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    for key in ("initContainers", "containers"):
        yield from spec.get(key) or []


def _namespace(props: Mapping[str, Any]) -> str | None:
    namespace = _dig(props, ("metadata", "namespace"))
    return namespace if isinstance(namespace, str) else None


def require_resource_limits(args: ResourceValidationArgs, report: ReportViolation) -> None:
    spec = pod_spec(args.resource_type, args.props)
    if spec is None:
        return
    for container in containers(spec):
        resources = container.get("resources") or {}
        for section in ("requests", "limits"):
            missing = {"cpu", "memory"} - set(resources.get(section) or {})
            if missing:
                report(
                    f"container '{container.get('name')}' has no {section} for "
                    f"{', '.join(sorted(missing))}",
                    None,
                )


def forbid_plain_text_secret_env(args: ResourceValidationArgs, report: ReportViolation) -> None:
    spec = pod_spec(args.resource_type, args.props)
    if spec is None:
        return
    for container in containers(spec):
        for variable in container.get("env") or []:
            name, value = variable.get("name", ""), variable.get("value")
            if not isinstance(value, str) or not value:
                continue
            if SECRET_NAME.search(name) or URL_WITH_PASSWORD.match(value):
                report(
                    f"container '{container.get('name')}' sets {name} in plain text; "
                    "read it from a Secret (valueFrom.secretKeyRef)",
                    None,
                )


def forbid_public_endpoints_without_tls(
    args: ResourceValidationArgs, report: ReportViolation
) -> None:
    props = args.props
    annotations = _dig(props, ("metadata", "annotations")) or {}
    if args.resource_type == "kubernetes:core/v1:Service":
        if _dig(props, ("spec", "type")) != "LoadBalancer":
            return
        internal = any(annotations.get(k) == v for k, v in INTERNAL_ANNOTATIONS.items())
        if not internal and not any(key in annotations for key in TLS_ANNOTATIONS):
            report(
                "public LoadBalancer Service without TLS; add a certificate annotation "
                "(gateway.loadBalancerTlsCertificate) or use an Ingress with TLS",
                None,
            )
    elif args.resource_type == "kubernetes:networking.k8s.io/v1:Ingress" and not _dig(
        props, ("spec", "tls")
    ):
        report("Ingress without TLS; set gateway.ingress.tlsSecretName", None)


def require_non_root(args: ResourceValidationArgs, report: ReportViolation) -> None:
    spec = pod_spec(args.resource_type, args.props)
    if spec is None or _namespace(args.props) in SYSTEM_NAMESPACES:
        return
    pod_non_root = (spec.get("securityContext") or {}).get("runAsNonRoot") is True
    for container in containers(spec):
        security = container.get("securityContext") or {}
        if security.get("runAsNonRoot", pod_non_root) is not True:
            report(f"container '{container.get('name')}' may run as root (set runAsNonRoot)", None)
        if security.get("privileged") is True:
            report(f"container '{container.get('name')}' is privileged", None)


def require_gpu_startup_probe(args: ResourceValidationArgs, report: ReportViolation) -> None:
    spec = pod_spec(args.resource_type, args.props)
    if spec is None:
        return
    for container in spec.get("containers") or []:
        limits = (container.get("resources") or {}).get("limits") or {}
        if "nvidia.com/gpu" in limits and not container.get("startupProbe"):
            report(
                f"GPU container '{container.get('name')}' has no startupProbe; liveness "
                "probes would kill it while the model loads",
                None,
            )


def forbid_mutable_image_tags(args: ResourceValidationArgs, report: ReportViolation) -> None:
    spec = pod_spec(args.resource_type, args.props)
    if spec is None:
        return
    for container in containers(spec):
        image = str(container.get("image") or "")
        if "@sha256:" in image:
            continue
        tag = image.rsplit("/", 1)[-1].partition(":")[2]
        if tag in ("", "latest"):
            report(f"container '{container.get('name')}' uses a mutable image '{image}'", None)


POLICIES: list[ResourceValidationPolicy] = [
    ResourceValidationPolicy(
        name="containers-have-requests-and-limits",
        description="Every container declares CPU and memory requests and limits.",
        validate=require_resource_limits,
        enforcement_level=EnforcementLevel.MANDATORY,
    ),
    ResourceValidationPolicy(
        name="no-plain-text-secret-env",
        description="Secrets reach containers through Secret references, never env values.",
        validate=forbid_plain_text_secret_env,
        enforcement_level=EnforcementLevel.MANDATORY,
    ),
    ResourceValidationPolicy(
        name="no-public-endpoint-without-tls",
        description="Public LoadBalancers and Ingresses terminate TLS.",
        validate=forbid_public_endpoints_without_tls,
        enforcement_level=EnforcementLevel.MANDATORY,
    ),
    ResourceValidationPolicy(
        name="containers-run-as-non-root",
        description="Application containers run as a non-root user and are not privileged.",
        validate=require_non_root,
        enforcement_level=EnforcementLevel.MANDATORY,
    ),
    ResourceValidationPolicy(
        name="gpu-containers-have-startup-probes",
        description="GPU containers have a startup probe sized for model loading.",
        validate=require_gpu_startup_probe,
        enforcement_level=EnforcementLevel.MANDATORY,
    ),
    ResourceValidationPolicy(
        name="no-mutable-image-tags",
        description="Images are pinned by version or digest, not ':latest'.",
        validate=forbid_mutable_image_tags,
        enforcement_level=EnforcementLevel.ADVISORY,
    ),
]
