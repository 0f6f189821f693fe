"""Print the pinned requirements of every service in the template, one per line.

The template's test environment serves every bake (package names are fixed), so it
installs the union of the services' own pins instead of a second hand-kept list.
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

TEMPLATE = Path(__file__).resolve().parent.parent / "{{cookiecutter.project_slug}}"
SERVICES = ["common", "gateway", "services/model", "evals", "finetune", "infra"]
# vLLM lives in its own environment (MODEL_VLLM_PYTHON), built by build-vllm-venv.sh.
SEPARATE_ENV_EXTRAS = {"vllm", "gpu"}
OWN_PACKAGES = {"service-common", "gateway", "model-service", "evals", "finetune"}


def service_requirements(service_dir: Path) -> list[str]:
    pyproject = service_dir / "pyproject.toml"
    if pyproject.exists():
        project = tomllib.loads(pyproject.read_text())["project"]
        reqs = list(project.get("dependencies", []))
        for name, extra in project.get("optional-dependencies", {}).items():
            if name not in SEPARATE_ENV_EXTRAS:
                reqs.extend(extra)
        return reqs
    requirements = service_dir / "requirements.txt"
    if requirements.exists():
        lines = (line.split("#", 1)[0].strip() for line in requirements.read_text().splitlines())
        return [line for line in lines if line and not line.startswith("-")]
    return []


def main() -> int:
    seen: dict[str, str] = {}
    for service in SERVICES:
        for req in service_requirements(TEMPLATE / service):
            # Extras of our own packages (e.g. "gateway[rag]") are not on PyPI.
            if req.split("[")[0].split("=")[0].strip() in OWN_PACKAGES:
                continue
            seen.setdefault(req, service)
    for req in sorted(seen, key=str.lower):
        print(req)
    return 0


if __name__ == "__main__":
    sys.exit(main())
