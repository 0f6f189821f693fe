"""The services share one telemetry/errors package (`common/`, `service_common`) instead of
copies (docs/architecture.md, "Shared package"): their modules build on it, no service
grows its own copy again, and every way of running a service puts it on the path."""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

from devstack.services import PACKAGE_DIRS
from tests.support import project_files

ROOT = Path(__file__).resolve().parents[1]
SERVICE_PACKAGES = ["gateway/gateway", "services/model/model_service", "evals/evals"]
# What only service_common may build: the tracer provider, the OTLP exporters, a log
# formatter and the error envelope. A service that needs one asks service_common.
SHARED_CALLS = {"TracerProvider", "OTLPSpanExporter", "OTLPMetricExporter"}
ENVELOPE = {"message", "type", "param", "code"}


def service_modules() -> list[tuple[Path, ast.Module]]:
    paths = [p for package in SERVICE_PACKAGES for p in sorted((ROOT / package).rglob("*.py"))]
    return [(path, ast.parse(path.read_text())) for path in paths]


def copies_in(tree: ast.Module) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
            if name in SHARED_CALLS:
                found.append(f"{node.lineno} {name}()")
        elif isinstance(node, ast.ClassDef):
            bases = {ast.unparse(base) for base in node.bases}
            if bases & {"logging.Formatter", "Formatter"}:
                found.append(f"{node.lineno} class {node.name}(Formatter)")
        elif isinstance(node, ast.Dict):
            keys = {k.value for k in node.keys if isinstance(k, ast.Constant)}
            if keys >= ENVELOPE:
                found.append(f"{node.lineno} an error envelope")
        elif isinstance(node, ast.Constant) and node.value == "OTEL_SDK_DISABLED":
            found.append(f"{node.lineno} reads OTEL_SDK_DISABLED")
    return found


def test_no_service_keeps_its_own_copy_of_the_shared_parts() -> None:
    modules = service_modules()
    copies = [
        f"{path.relative_to(ROOT)}:{where}" for path, tree in modules for where in copies_in(tree)
    ]
    assert modules and not copies, copies


def test_the_service_modules_build_on_the_shared_package() -> None:
    from gateway.errors import GatewayError
    from gateway.logs import configure_logging
    from model_service.errors import APIError
    from service_common.errors import ServiceError

    assert issubclass(GatewayError, ServiceError) and issubclass(APIError, ServiceError)
    assert GatewayError(429, "slow").body()["error"]["type"] == "rate_limit_error"
    assert APIError(400, "bad").body()["error"] == {
        "message": "bad", "type": "BadRequestError", "param": None, "code": 400,
    }  # fmt: skip
    assert configure_logging.__module__ == "gateway.logs"
    for module in ("gateway/gateway/tracing.py", "services/model/model_service/tracing.py"):
        assert "from service_common import tracing as shared" in (ROOT / module).read_text()
    for module in ("gateway/gateway/genai_spans.py", "services/model/model_service/genai_spans.py"):
        assert "from service_common.genai_spans import" in (ROOT / module).read_text()
    assert "from service_common.otlp import" in (ROOT / "evals/evals/loop.py").read_text()


def test_every_image_of_a_service_builds_from_the_root_and_installs_common() -> None:
    compose = project_files.compose()  # rendered, as a bake writes it
    # The fine-tuning job has no telemetry and builds from its own folder.
    builds = {
        name: service["build"]
        for name, service in compose["services"].items()
        if "build" in service and name != "finetune"
    }
    assert {"gateway", "llm", "evals"} <= set(builds), sorted(builds)
    for name, build in builds.items():
        assert build["context"] == ".", name
        dockerfile = (ROOT / build["dockerfile"]).read_text()
        assert "COPY common/service_common ./common/service_common" in dockerfile, name
        assert re.search(r"pip install [^\n]*\./common \.", dockerfile), name
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert ignored[ignored.index("*") + 1 :][:1] == ["!common/"]


def test_every_way_of_running_a_service_has_common_on_its_path() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]
    assert "common" in pyproject["pytest"]["ini_options"]["pythonpath"]
    assert "common" in pyproject["mypy"]["mypy_path"].split(":")
    assert "common" in PACKAGE_DIRS  # make dev's subprocesses
    makefile = project_files.text("Makefile")
    assert "$(CURDIR)/common:" in makefile and "-e ./common" in makefile
    assert "common/service_common" in makefile.split("PACKAGES :=")[1].splitlines()[0]
