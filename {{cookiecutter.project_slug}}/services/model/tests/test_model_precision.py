"""The numeric-format rule (MODEL_DTYPE / MODEL_QUANTIZATION = auto) and that each
quantisation really replaces the linear weights it names (the whole contract in each
format is in test_model_conformance.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from model_service import precision

AVX2_ONLY = frozenset({"sse4_2", "avx", "avx2", "fma"})
SAPPHIRE_RAPIDS = AVX2_ONLY | {"avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}


def test_auto_is_float32_on_a_cpu_without_native_bfloat16() -> None:
    chosen = precision.choose("auto", "auto", cuda=False, flags=AVX2_ONLY)
    assert (chosen.dtype, chosen.quantization) == (torch.float32, None)
    assert "no native bfloat16" in chosen.reason


def test_auto_is_bfloat16_where_the_cpu_computes_it() -> None:
    chosen = precision.choose("auto", None, cuda=False, flags=SAPPHIRE_RAPIDS)
    assert chosen.dtype == torch.bfloat16
    assert "amx_bf16" in chosen.reason and "avx512_bf16" in chosen.reason


def test_auto_is_float16_on_a_gpu_and_a_set_value_is_kept() -> None:
    assert precision.choose("auto", None, cuda=True, flags=frozenset()).dtype == torch.float16
    chosen = precision.choose("bfloat16", "int4", cuda=False, flags=AVX2_ONLY)
    assert (chosen.dtype, chosen.quantization) == (torch.bfloat16, "int4")
    assert "(set)" in chosen.reason


@pytest.mark.parametrize("method", ["awq", "int3", "INT8"])
def test_an_unknown_method_names_the_variable(method: str) -> None:
    with pytest.raises(ValueError, match="MODEL_QUANTIZATION"):
        precision.choose("auto", method, cuda=False, flags=AVX2_ONLY)


def test_dynamic_int8_is_refused_on_a_gpu() -> None:
    with pytest.raises(ValueError, match="CPU only"):
        precision.choose("auto", "int8-dynamic", cuda=True, flags=frozenset())


def test_cpu_flags_reads_proc_cpuinfo(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse4_2 avx2 avx512_bf16\n\n")
    assert precision.cpu_flags(cpuinfo) == {"fpu", "sse4_2", "avx2", "avx512_bf16"}
    assert precision.cpu_flags(tmp_path / "missing") == frozenset()


@pytest.mark.parametrize("method", precision.QUANTIZATION_METHODS)
def test_each_method_replaces_the_linear_weights(method: str) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 8))
    x = torch.randn(4, 64)
    before = model(x)
    precision.quantize(model, method)
    for layer in (model[0], model[2]):
        assert type(layer.weight.data) is not torch.Tensor, f"{method} left {layer} in float"
    after = model(x)
    # A quantised layer approximates the float one: close, but not bit-identical.
    assert after.shape == before.shape and not torch.equal(after, before)
    assert torch.nn.functional.cosine_similarity(after.flatten(), before.flatten(), dim=0) > 0.9


def test_int4_leaves_layers_whose_width_is_not_a_whole_group() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(48, 32))  # 48 is not a multiple of 32
    precision.quantize(model, "int4")
    assert type(model[0].weight.data) is torch.Tensor
