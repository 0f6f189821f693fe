"""Which backend serves: `auto` picks vLLM only where it is the better engine.

vLLM is chosen when (1) it imports in the interpreter named by MODEL_VLLM_PYTHON,
(2) a GPU it supports is present, and (3) every architecture in the model's config is
in vLLM's supported list. Otherwise transformers serves (vLLM-CPU works, but on small
CPU machines its gain does not pay for its startup time; ask for it explicitly).
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from model_service.settings import ModelSettings

# Runs inside the vLLM interpreter; prints one JSON line.
PROBE = """
import json, sys
report = {"vllm": None, "gpu": False, "archs": []}
try:
    import vllm, torch
    from vllm.model_executor.models import ModelRegistry
    report["vllm"] = vllm.__version__
    report["gpu"] = bool(torch.cuda.is_available())
    report["archs"] = sorted(ModelRegistry.get_supported_archs())
except Exception as error:
    report["error"] = f"{type(error).__name__}: {error}"
print(json.dumps(report))
"""
PROBE_TIMEOUT_SECONDS = 180


class BackendUnavailable(RuntimeError):
    """MODEL_BACKEND=vllm was asked for but vLLM cannot serve here."""


@dataclass(frozen=True)
class VllmProbe:
    version: str | None
    gpu: bool
    archs: frozenset[str] = field(default_factory=frozenset)
    error: str | None = None


@dataclass(frozen=True)
class Decision:
    backend: str
    reason: str
    gpu: bool = False


def probe_vllm(python: str) -> VllmProbe:
    try:
        done = subprocess.run(
            [python, "-c", PROBE],
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT_SECONDS,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return VllmProbe(None, False, error=f"cannot run {python}: {error}")
    lines = done.stdout.strip().splitlines()
    try:
        report = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        return VllmProbe(None, False, error=(done.stderr.strip()[-500:] or "no output"))
    return VllmProbe(
        report.get("vllm"), bool(report.get("gpu")), frozenset(report["archs"]), report.get("error")
    )


def model_architectures(model_dir: Path) -> list[str]:
    config = json.loads((model_dir / "config.json").read_text())
    return list(config.get("architectures") or [])


def decide(settings: ModelSettings, model_dir: Path, probe: VllmProbe | None = None) -> Decision:
    """Pick the backend and say why; raises BackendUnavailable for an impossible `vllm`."""
    if settings.backend == "transformers":
        return Decision("transformers", "MODEL_BACKEND=transformers")
    probe = probe or probe_vllm(settings.vllm_python)
    archs = model_architectures(model_dir)
    unsupported = [a for a in archs if a not in probe.archs]
    if settings.backend == "vllm":
        if probe.version is None:
            raise BackendUnavailable(
                f"MODEL_BACKEND=vllm, but {settings.vllm_python} cannot import vllm "
                f"({probe.error}). Build the vLLM environment (`make vllm-venv`) and point "
                "MODEL_VLLM_PYTHON at its python, or use MODEL_BACKEND=transformers."
            )
        if unsupported or not archs:
            raise BackendUnavailable(
                f"MODEL_BACKEND=vllm, but vLLM {probe.version} does not support "
                f"{', '.join(unsupported) or 'a model without architectures'} "
                f"({model_dir}). Use MODEL_BACKEND=transformers."
            )
        device = "GPU" if probe.gpu else "CPU"
        return Decision("vllm", f"MODEL_BACKEND=vllm (vLLM {probe.version} on {device})", probe.gpu)
    if probe.version is None:
        return Decision("transformers", f"auto: vLLM is not importable ({probe.error})")
    if not probe.gpu:
        return Decision(
            "transformers",
            f"auto: no GPU for vLLM {probe.version} (set MODEL_BACKEND=vllm to use vLLM-CPU)",
        )
    if unsupported or not archs:
        return Decision(
            "transformers",
            f"auto: vLLM {probe.version} does not support {', '.join(unsupported) or archs}",
        )
    return Decision(
        "vllm", f"auto: GPU present and vLLM {probe.version} supports {archs[0]}", gpu=True
    )
