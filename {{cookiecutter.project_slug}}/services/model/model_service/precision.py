"""The transformers backend's numeric format: dtype and weight quantisation, and why.

`MODEL_DTYPE=auto` and `MODEL_QUANTIZATION=auto` resolve here, once at start, and the
service logs the choice with its reason. The rule (docs/model-service.md has the
measurements behind it):

- GPU: float16, no quantisation.
- CPU: bfloat16 only where the CPU computes it natively (AMX or AVX-512 BF16); on an
  AVX2-only CPU bfloat16 is emulated and measured about 2x slower than float32.
- Quantisation stays off under `auto`: no method was measured faster at equal quality
  here yet. A user picks one explicitly (`int8`, `int8-dynamic`, `int4`, all from torchao).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger("model_service.precision")

CPUINFO = Path("/proc/cpuinfo")
NATIVE_BF16_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})
#: what `MODEL_QUANTIZATION` accepts on the transformers backend (besides auto / empty)
QUANTIZATION_METHODS = ("int8", "int8-dynamic", "int4")
INT4_GROUP_SIZE = 32


@dataclass(frozen=True)
class Precision:
    dtype: torch.dtype
    quantization: str | None
    reason: str


def cpu_flags(cpuinfo: Path = CPUINFO) -> frozenset[str]:
    """The instruction-set flags of the first CPU in /proc/cpuinfo (empty if unreadable)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


def choose(dtype: str, quantization: str | None, cuda: bool, flags: frozenset[str]) -> Precision:
    """The dtype and quantisation to load with, resolving `auto` by the rule above."""
    chosen_dtype, dtype_reason = _choose_dtype(dtype, cuda, flags)
    method, method_reason = _choose_quantization(quantization, cuda)
    return Precision(chosen_dtype, method, f"{dtype_reason}; {method_reason}")


def _choose_dtype(requested: str, cuda: bool, flags: frozenset[str]) -> tuple[torch.dtype, str]:
    if requested != "auto":
        dtype = getattr(torch, requested)
        assert isinstance(dtype, torch.dtype)
        return dtype, f"dtype {requested} (set)"
    if cuda:
        return torch.float16, "dtype float16 (auto: GPU)"
    native = sorted(NATIVE_BF16_FLAGS & flags)
    if native:
        return torch.bfloat16, f"dtype bfloat16 (auto: the CPU has {', '.join(native)})"
    return torch.float32, "dtype float32 (auto: no native bfloat16 on this CPU, AVX2 emulates it)"


def _choose_quantization(requested: str | None, cuda: bool) -> tuple[str | None, str]:
    if requested in (None, "none"):
        return None, "no quantisation (set)"
    if requested == "auto":
        return None, "no quantisation (auto: none measured faster at equal quality)"
    if requested not in QUANTIZATION_METHODS:
        raise ValueError(
            f"MODEL_QUANTIZATION={requested!r} is not a transformers-backend method; "
            f"use one of {', '.join(QUANTIZATION_METHODS)}, auto or none."
        )
    if cuda and requested == "int8-dynamic":
        raise ValueError("MODEL_QUANTIZATION=int8-dynamic runs on CPU only; use int8 or int4.")
    return requested, f"{requested} weights (set)"


def quantize(model: Any, method: str | None) -> Any:
    """Quantise the model's linear layers in place with torchao (returns the model)."""
    if method is None:
        return model
    from torchao.quantization import quantize_

    quantize_(model, _torchao_config(method), filter_fn=_quantizable(method))
    return model


def _torchao_config(method: str) -> Any:
    from torchao.quantization import (
        Int8DynamicActivationInt8WeightConfig,
        Int8WeightOnlyConfig,
        IntxWeightOnlyConfig,
        PerGroup,
    )

    if method == "int8":
        return Int8WeightOnlyConfig()
    if method == "int8-dynamic":
        return Int8DynamicActivationInt8WeightConfig()
    int4 = torch.int4  # type: ignore[attr-defined]  # missing from torch's stubs
    return IntxWeightOnlyConfig(weight_dtype=int4, granularity=PerGroup(INT4_GROUP_SIZE))


def _quantizable(method: str) -> Any:
    """Linear layers only; int4 groups need in_features to be a multiple of the group."""

    def keep(module: torch.nn.Module, _fqn: str) -> bool:
        if not isinstance(module, torch.nn.Linear):
            return False
        return method != "int4" or module.in_features % INT4_GROUP_SIZE == 0

    return keep


def log_choice(precision: Precision) -> None:
    log.info("numeric format: %s", precision.reason)
