"""Run the program under Pulumi mocks and capture what it would create (used by infra/tests).

No CLI, no provider plugins, no cluster: every resource registration is recorded with its
inputs, so tests can assert on the exact objects, and Kubernetes objects can be
schema-validated offline.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pulumi
from pulumi.runtime import config as runtime_config
from pulumi.runtime.mocks import MockMonitor
from pulumi.runtime.proto import resource_pb2

SECRET_SIGNATURE = "4dabf18193072939515e22adb298388d"
PROJECT = "genai-app"


@dataclass
class Registered:
    type: str
    name: str
    inputs: dict[str, Any]

    @property
    def is_kubernetes(self) -> bool:
        return (
            self.type.startswith("kubernetes:")
            and not self.type.startswith("kubernetes:helm")
            and self.type != "pulumi:providers:kubernetes"
        )

    @property
    def manifest(self) -> dict[str, Any]:
        """The object as the cluster would receive it: secrets unwrapped, numbers as JSON."""
        return unwrap_secrets(normalize_numbers(self.inputs))


def is_secret(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and value.get(SECRET_SIGNATURE) == "1b47061264138c4ac30d75fd1eb44270"
    )


def unwrap_secrets(value: Any) -> Any:
    if is_secret(value):
        return unwrap_secrets(value["value"])
    if isinstance(value, dict):
        return {key: unwrap_secrets(item) for key, item in value.items()}
    if isinstance(value, list):
        return [unwrap_secrets(item) for item in value]
    return value


def normalize_numbers(value: Any) -> Any:
    # The wire protocol carries every number as a double.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: normalize_numbers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [normalize_numbers(item) for item in value]
    return value


class RecordingMocks(pulumi.runtime.Mocks):
    """Records registrations; `outputs` supplies what remote components would return."""

    def __init__(
        self,
        outputs: Mapping[str, Callable[[pulumi.runtime.MockResourceArgs], dict[str, Any]]],
        calls: Mapping[str, Callable[[pulumi.runtime.MockCallArgs], dict[str, Any]]],
    ) -> None:
        self.resources: list[Registered] = []
        self._outputs = outputs
        self._calls = calls

    def new_resource(
        self, args: pulumi.runtime.MockResourceArgs
    ) -> tuple[str | None, dict[str, Any]]:
        self.resources.append(Registered(args.typ, args.name, dict(args.inputs)))
        extra = self._outputs[args.typ](args) if args.typ in self._outputs else {}
        if not args.custom:
            # A remote component (awsx, eks) returns its declared outputs, not its inputs.
            return None, extra
        return f"{args.name}-id", {**args.inputs, **extra}

    def call(
        self, args: pulumi.runtime.MockCallArgs
    ) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
        handler = self._calls.get(args.token)
        if handler is None:
            raise AssertionError(f"unexpected invoke {args.token}")
        return handler(args), []


class _PlainReferenceMonitor(MockMonitor):
    """Resources passed as inputs (a cluster to its node groups) arrive as ids, not references.

    Deserializing a resource reference inside the mock monitor's worker thread schedules a
    lookup on that thread's event loop, which the program's loop then waits on: slow at best,
    "attached to a different loop" at worst.
    """

    def SupportsFeature(self, request: Any) -> Any:
        if request.id == "resourceReferences":
            return type("SupportsFeatureResponse", (), {"hasSupport": False})
        return super().SupportsFeature(request)

    def GetDeploymentInfo(self, request: Any) -> Any:
        info = super().GetDeploymentInfo(request)
        features = [
            feature
            for feature in info.supportedFeatures
            if feature != resource_pb2.RESOURCE_MONITOR_FEATURE_RESOURCE_REFERENCES
        ]
        return resource_pb2.DeploymentInfo(supportedFeatures=features)


@dataclass
class Captured:
    resources: list[Registered]
    outputs: dict[str, Any] = field(default_factory=dict)
    secret_outputs: set[str] = field(default_factory=set)

    def of_type(self, type_: str) -> list[Registered]:
        return [r for r in self.resources if r.type == type_]

    def one(self, type_: str, name: str) -> Registered:
        found = [r for r in self.resources if r.type == type_ and r.name == name]
        if len(found) != 1:
            raise AssertionError(f"expected one {type_} named {name}, found {len(found)}")
        return found[0]

    def kubernetes_objects(self) -> Iterator[Registered]:
        return (r for r in self.resources if r.is_kubernetes)


def stack_config(values: Mapping[str, Any], project: str = PROJECT) -> dict[str, str]:
    """Stack config as the engine hands it over: `project:key` -> text (JSON for objects)."""
    return {
        f"{project}:{key}": value if isinstance(value, str) else json.dumps(value)
        for key, value in values.items()
    }


def run_program(
    program: Callable[[], Mapping[str, Any]],
    config: Mapping[str, Any],
    *,
    secret_keys: tuple[str, ...] = (),
    outputs: Mapping[str, Callable[[pulumi.runtime.MockResourceArgs], dict[str, Any]]]
    | None = None,
    calls: Mapping[str, Callable[[pulumi.runtime.MockCallArgs], dict[str, Any]]] | None = None,
    stack: str = "test",
    project: str = PROJECT,
) -> Captured:
    """Run `program` once under fresh mocks and capture everything it registers.

    The run happens in a worker thread with its own event loop and context, so the Pulumi
    runtime's global state and loop never touch the caller's (pytest-asyncio's loop included).
    """
    mocks = RecordingMocks(outputs or {}, calls or {})
    captured = Captured(mocks.resources)

    def in_worker() -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            pulumi.runtime.set_mocks(
                mocks,
                project=project,
                stack=stack,
                preview=False,
                monitor=_PlainReferenceMonitor(mocks),
            )
            runtime_config.set_all_config(
                stack_config(config, project), [f"{project}:{key}" for key in secret_keys]
            )

            @pulumi.runtime.test
            def run() -> pulumi.Output[Any]:
                result = program()

                def keep(values: list[Any]) -> None:
                    captured.outputs.update(zip(result.keys(), values, strict=True))

                async def secrets() -> None:
                    for key, value in result.items():
                        if isinstance(value, pulumi.Output) and await value.is_secret():
                            captured.secret_outputs.add(key)

                return (
                    pulumi.Output.all(*result.values())
                    .apply(keep)
                    .apply(lambda _: asyncio.ensure_future(secrets()))
                )

            run()
        finally:
            runtime_config.set_all_config({}, [])
            loop.close()
            asyncio.set_event_loop(None)

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="pulumi-mocks") as worker:
        worker.submit(in_worker).result()
    return captured


# --- What the mocked providers return -------------------------------------------------------

ACCOUNT = "123456789012"
REGION = "eu-west-1"

AWS_OUTPUTS: dict[str, Callable[[pulumi.runtime.MockResourceArgs], dict[str, Any]]] = {
    "awsx:ec2:Vpc": lambda args: {
        "vpcId": "vpc-0123",
        "publicSubnetIds": ["subnet-public-a", "subnet-public-b"],
        "privateSubnetIds": ["subnet-private-a", "subnet-private-b"],
    },
    "eks:index:Cluster": lambda args: {
        "kubeconfigJson": json.dumps({"apiVersion": "v1", "kind": "Config", "clusters": []}),
        "kubeconfig": {"apiVersion": "v1", "kind": "Config"},
    },
    "aws:elasticache/replicationGroup:ReplicationGroup": lambda args: {
        "primaryEndpointAddress": "master.genai-app-cache.abc123.euw1.cache.amazonaws.com",
    },
    "aws:ecr/repository:Repository": lambda args: {
        "repositoryUrl": f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/{args.inputs['name']}",
        "registryId": ACCOUNT,
    },
    "docker-build:index:Image": lambda args: {
        "ref": f"{args.inputs['tags'][0]}@sha256:{'0' * 64}",
    },
}

AWS_CALLS: dict[str, Callable[[pulumi.runtime.MockCallArgs], dict[str, Any]]] = {
    "aws:ecr/getAuthorizationToken:getAuthorizationToken": lambda args: {
        "userName": "AWS",
        "password": "ecr-token",
        "authorizationToken": "ecr-token",
        "proxyEndpoint": f"https://{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com",
        "registryId": ACCOUNT,
        "expiresAt": "2030-01-01T00:00:00Z",
        "id": REGION,
    },
}


# --- Offline schema validation ---------------------------------------------------------------

KUBERNETES_VERSIONS = ("1.33", "1.37")
CUSTOM_KINDS = {("keda.sh/v1alpha1", "ScaledObject")}


def schema_errors(captured: Captured, versions: tuple[str, ...] = KUBERNETES_VERSIONS) -> list[str]:
    """Every captured Kubernetes object checked against the strict upstream schemas."""
    import kubernetes_validate

    errors = []
    for resource in captured.kubernetes_objects():
        manifest = resource.manifest
        if (manifest.get("apiVersion"), manifest.get("kind")) in CUSTOM_KINDS:
            continue
        for version in versions:
            try:
                kubernetes_validate.validate(manifest, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                path = "/".join(str(part) for part in exc.path)
                errors.append(f"{resource.type} {resource.name} ({version}) {path}: {exc.message}")
    return errors


# --- Policy pack, applied to captured resources ----------------------------------------------


def policy_violations(captured: Captured, *, mandatory_only: bool = True) -> list[str]:
    """Run every policy of the pack on every captured resource, as `pulumi up` would."""
    from pulumi_policy import EnforcementLevel, ResourceValidationArgs

    from blueprint_infra.policies import POLICIES

    found: list[str] = []
    for resource in captured.resources:
        args = ResourceValidationArgs(
            resource_type=resource.type,
            props=resource.manifest,
            urn=f"urn:pulumi:test::{PROJECT}::{resource.type}::{resource.name}",
            name=resource.name,
            opts=None,  # type: ignore[arg-type]
            provider=None,
        )
        for policy in POLICIES:
            if mandatory_only and policy.enforcement_level != EnforcementLevel.MANDATORY:
                continue
            validate = policy.validate
            assert callable(validate)

            where = f"{policy.name}: {resource.type} {resource.name}"

            def report(message: str, urn: str | None = None, *, _where: str = where) -> None:
                found.append(f"{_where}: {message}")

            validate(args, report)
    return found
