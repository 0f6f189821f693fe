"""Settings, sources, the backend decision and the vLLM command line (fast)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from model_service.backend import BackendUnavailable, VllmProbe, decide
from model_service.embedding import encode_vector
from model_service.sampling import SamplingParams, sample_token
from model_service.settings import ModelSettings
from model_service.sources import (
    SourceError,
    drop_quantization_config,
    folder_name,
    prepare,
    prepared_dir,
    resolve,
)
from model_service.text_stream import TextStream
from model_service.vllm_server import otlp_traces_endpoint, vllm_argv, vllm_env

CPU_VLLM = VllmProbe("0.32.0", gpu=False, archs=frozenset({"LlamaForCausalLM", "BertModel"}))
GPU_VLLM = VllmProbe("0.32.0", gpu=True, archs=frozenset({"LlamaForCausalLM", "BertModel"}))
NO_VLLM = VllmProbe(None, gpu=False, error="ModuleNotFoundError: No module named 'vllm'")


def model_dir(tmp_path: Path, arch: str = "LlamaForCausalLM") -> Path:
    path = tmp_path / "org--model"
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps({"architectures": [arch]}))
    return path


def settings(**values: object) -> ModelSettings:
    return ModelSettings(**values)  # type: ignore[arg-type]


def test_model_id_maps_to_folder_and_served_name(tmp_path: Path) -> None:
    assert (
        folder_name("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB--SmolLM2-135M-Instruct"
    )
    assert prepared_dir(tmp_path, "org/name") == tmp_path / "org--name"
    assert prepared_dir(tmp_path, "/data/smol.Q4.gguf") == tmp_path / "smol.Q4"
    assert settings(source="org/name").model_name == "org/name"
    assert settings(source="org/name", served_name="alias").model_name == "alias"


def test_resolve_prefers_local_then_prepared(tmp_path: Path) -> None:
    local = model_dir(tmp_path)
    assert resolve(str(local), tmp_path / "models") == local
    prepared = model_dir(tmp_path / "models")
    assert resolve("org/model", tmp_path / "models") == prepared
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match=r"config\.json"):
        resolve(str(tmp_path / "empty"), tmp_path / "models")
    with pytest.raises(SourceError, match="neither"):
        resolve("not-a-hub-id", tmp_path / "models")


def test_prepare_copies_a_local_directory_atomically(tmp_path: Path) -> None:
    source = model_dir(tmp_path / "src")
    target = prepare(str(source), tmp_path / "models")
    assert (target / "config.json").read_text() == (source / "config.json").read_text()
    assert [p.name for p in (tmp_path / "models").iterdir()] == [target.name]  # no staging left


def test_offline_prepare_rejects_unknown_models(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="No offline package"):
        prepare("org/unknown", tmp_path, offline=True)


def test_quantization_config_is_dropped(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"model_type": "llama", "quantization_config": {"q": "gguf"}}))
    drop_quantization_config(config)
    assert json.loads(config.read_text()) == {"model_type": "llama"}


def test_auto_picks_vllm_only_with_a_gpu_and_a_supported_model(tmp_path: Path) -> None:
    path = model_dir(tmp_path)
    auto = settings(backend="auto")
    assert decide(auto, path, GPU_VLLM).backend == "vllm"
    cpu = decide(auto, path, CPU_VLLM)
    assert cpu.backend == "transformers" and "no GPU" in cpu.reason
    missing = decide(auto, path, NO_VLLM)
    assert missing.backend == "transformers" and "not importable" in missing.reason
    odd = decide(auto, model_dir(tmp_path, "MysteryForCausalLM"), GPU_VLLM)
    assert odd.backend == "transformers" and "MysteryForCausalLM" in odd.reason


def test_explicit_backends(tmp_path: Path) -> None:
    path = model_dir(tmp_path)
    assert decide(settings(backend="transformers"), path, NO_VLLM).backend == "transformers"
    assert decide(settings(backend="vllm"), path, CPU_VLLM).backend == "vllm"
    with pytest.raises(BackendUnavailable, match="make vllm-venv"):
        decide(settings(backend="vllm"), path, NO_VLLM)
    with pytest.raises(BackendUnavailable, match="MysteryForCausalLM"):
        decide(settings(backend="vllm"), model_dir(tmp_path, "MysteryForCausalLM"), GPU_VLLM)


def test_vllm_command_line_follows_the_settings(tmp_path: Path) -> None:
    s = settings(
        source="org/model",
        port=8001,
        max_model_len=4096,
        quantization="awq",
        vllm_extra_args="--enforce-eager --seed 3",
        vllm_python="/venv/bin/python",
    )
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
    }
    cpu = vllm_argv(s, tmp_path, gpu=False, env=env)
    assert cpu[:3] == ["/venv/bin/python", "-m", "vllm.entrypoints.openai.api_server"]
    pairs = dict(zip(cpu[3::2], cpu[4::2], strict=False))
    assert pairs["--served-model-name"] == "org/model"
    assert pairs["--dtype"] == "float32"  # vLLM's CPU bf16 default is unsafe
    assert pairs["--max-model-len"] == "4096" and pairs["--quantization"] == "awq"
    assert pairs["--otlp-traces-endpoint"] == "http://collector:4317"
    assert "--gpu-memory-utilization" not in cpu
    assert cpu[-3:] == ["--enforce-eager", "--seed", "3"]
    gpu = vllm_argv(s, tmp_path, gpu=True, env={})
    assert "--gpu-memory-utilization" in gpu and "--otlp-traces-endpoint" not in gpu
    assert gpu[gpu.index("--dtype") + 1] == "auto"
    embed = vllm_argv(settings(task="embed"), tmp_path, gpu=False, env={})
    assert embed[embed.index("--runner") + 1] == "pooling"


def test_vllm_env_and_otel_switch() -> None:
    assert vllm_env(settings(vllm_cpu_kvcache_space=3), {})["VLLM_CPU_KVCACHE_SPACE"] == "3"
    assert vllm_env(settings(), {"VLLM_CPU_KVCACHE_SPACE": "8"})["VLLM_CPU_KVCACHE_SPACE"] == "8"
    on = {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://a:4317"}
    assert otlp_traces_endpoint(on) == "http://a:4317"
    assert otlp_traces_endpoint({**on, "OTEL_SDK_DISABLED": "true"}) is None
    assert otlp_traces_endpoint({**on, "OTEL_SDK_DISABLED": "TRUE"}) is None
    assert otlp_traces_endpoint({"OTEL_EXPORTER_OTLP_ENDPOINT": ""}) is None
    assert "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL" not in vllm_env(settings(), {})


def test_vllm_gets_the_otlp_endpoint_and_protocol_the_sdk_would_use() -> None:
    """vLLM passes the endpoint to its exporter unchanged and reads only the traces
    protocol variable (default grpc); the launcher resolves both as the SDK does."""
    base = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/"}
    # OpenTelemetry's default protocol is http/protobuf: the signal path is appended.
    assert otlp_traces_endpoint(base) == "http://collector:4318/v1/traces"
    assert vllm_env(settings(), base)["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"] == "http/protobuf"
    grpc = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
    }
    assert otlp_traces_endpoint(grpc) == "http://collector:4317"
    assert vllm_env(settings(), grpc)["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"] == "grpc"
    # The traces-specific variables win and are used as they are.
    specific = {
        **grpc,
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://traces:4318/custom",
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
    }
    assert otlp_traces_endpoint(specific) == "http://traces:4318/custom"
    assert vllm_env(settings(), specific)["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"] == "http/protobuf"


def test_seeded_sampling_is_reproducible_and_top_k_one_is_argmax() -> None:
    logits = torch.randn(50, generator=torch.Generator().manual_seed(0))
    params = SamplingParams(max_tokens=1, temperature=1.0, seed=7)
    draws = [
        [sample_token(logits, params, torch.Generator().manual_seed(7)) for _ in range(1)]
        for _ in range(3)
    ]
    assert draws[0] == draws[1] == draws[2]
    top1 = SamplingParams(max_tokens=1, temperature=1.0, top_k=1)
    assert sample_token(logits, top1, torch.Generator()) == int(torch.argmax(logits))
    tight = SamplingParams(max_tokens=1, temperature=1.0, top_p=1e-6)
    assert sample_token(logits, tight, torch.Generator()) == int(torch.argmax(logits))


def test_text_stream_holds_back_a_possible_stop_string(tiny_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    ids = tokenizer("Hello! How can I help you today?")["input_ids"]
    plain = TextStream(tokenizer._tokenizer)
    whole = "".join(plain.push(i).text for i in ids) + plain.flush()
    assert whole == "Hello! How can I help you today?"
    stopping = TextStream(tokenizer._tokenizer, stop=("help",))
    emitted = []
    for token in ids:
        piece = stopping.push(token)
        emitted.append(piece.text)
        if piece.stopped:
            break
    assert piece.stopped and "".join(emitted) == "Hello! How can I "


def test_embeddings_base64_is_little_endian_float32() -> None:
    import base64

    import numpy as np

    vector = np.array([0.5, -1.25, 3.0], dtype=np.float32)
    decoded = np.frombuffer(base64.b64decode(encode_vector(vector, "base64")), dtype="<f4")
    assert decoded.tolist() == [0.5, -1.25, 3.0]
    assert encode_vector(vector, "float") == [0.5, -1.25, 3.0]


def test_torch_threads_leave_a_core_to_the_server_within_the_cgroup_quota(
    tmp_path: Path,
) -> None:
    import os

    from model_service.generation import cgroup_cpu_limit, compute_threads

    usable = len(os.sched_getaffinity(0))
    cpu_max = tmp_path / "cpu.max"
    assert cgroup_cpu_limit(tmp_path / "absent") is None
    cpu_max.write_text("max 100000\n")
    assert cgroup_cpu_limit(cpu_max) is None
    assert compute_threads(0, cpu_max) == max(1, usable - 1)
    cpu_max.write_text("150000 100000\n")  # 1.5 CPUs: torch gets 2 - 1
    assert cgroup_cpu_limit(cpu_max) == 2
    assert compute_threads(0, cpu_max) == max(1, min(usable, 2) - 1)
    cpu_max.write_text("50000 100000\n")
    assert cgroup_cpu_limit(cpu_max) == 1
    assert compute_threads(0, cpu_max) == 1
    assert compute_threads(3, cpu_max) == 3


PIN = re.compile(r'"([A-Za-z0-9_.-]+)==([^"]+)"')


def test_gpu_image_adds_packages_at_the_project_pins() -> None:
    """Dockerfile.gpu installs what vLLM's image lacks by hand: the same pins as pyproject."""
    service = Path(__file__).resolve().parents[1]
    pins = dict(PIN.findall((service / "pyproject.toml").read_text()))
    installed = PIN.findall((service / "Dockerfile.gpu").read_text())
    assert len(installed) >= 5
    mismatched = [
        (name, version, pins.get(name)) for name, version in installed if pins.get(name) != version
    ]
    assert mismatched == []


def test_vllm_tool_args_give_template_less_models_the_hermes_fallback(tmp_path: Path) -> None:
    from model_service.vllm_tools import tool_args

    model, work = tmp_path / "model", tmp_path / "work"
    model.mkdir()
    work.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "llama"}))
    plain = (Path(__file__).parent / "chat_template.jinja").read_text()  # ChatML, no tools
    (model / "chat_template.jinja").write_text(plain)
    args = tool_args(settings(), model, work)
    assert args[-5:] == [
        "--enable-auto-tool-choice",
        "--tool-call-parser",
        "hermes",
        "--tool-strict-level",
        "parameter",
    ]
    written = Path(args[args.index("--chat-template") + 1]).read_text()
    assert "<tool_call>" in written and plain in written
    (model / "chat_template.jinja").write_text("{{ tools }}{{ messages }}")
    (model / "config.json").write_text(json.dumps({"model_type": "mistral"}))
    own = tool_args(settings(), model, work)
    assert "--chat-template" not in own and own[own.index("--tool-call-parser") + 1] == "mistral"
    assert tool_args(settings(tool_call_parser="none"), model, work) == []
    assert tool_args(settings(task="embed"), model, work) == []
    chosen = tool_args(settings(tool_call_parser="llama3_json"), model, work)
    assert chosen[chosen.index("--tool-call-parser") + 1] == "llama3_json"


def test_schema_bounds_no_generation_could_meet_are_refused() -> None:
    import pytest

    from model_service import grammar

    hostile = {"type": "object", "properties": {"x": {"type": "array", "minItems": 10**9}}}
    with pytest.raises(grammar.GrammarError, match="minItems"):
        grammar.json_schema_grammar(hostile, "response_format")
    fine = {"type": "object", "properties": {"x": {"type": "array", "maxItems": 3}}}
    assert grammar.json_schema_grammar(fine, "response_format")  # compiles to a grammar


def test_lora_modules_setting_parses_names_and_paths(tmp_path: Path) -> None:
    s = settings(adapters_dir=tmp_path, lora_modules="a, b=/srv/adapters/b  c")
    assert [(m.name, m.path) for m in s.adapters_at_start] == [
        ("a", tmp_path / "a"),
        ("b", Path("/srv/adapters/b")),
        ("c", tmp_path / "c"),
    ]
    assert s.lora_enabled and not settings().lora_enabled
    assert settings(allow_runtime_lora_updating=True).lora_enabled
    for bad, message in [
        ("a=", "not `name` or `name=path`"),
        ("=p", "not `name`"),
        ("a a", "more than once"),
    ]:
        with pytest.raises(ValueError, match=message):
            settings(lora_modules=bad)


def test_vllm_gets_the_lora_flags_and_the_runtime_switch(tmp_path: Path) -> None:
    assert "--enable-lora" not in vllm_argv(settings(), tmp_path, gpu=False, env={})
    s = settings(
        adapters_dir=tmp_path,
        lora_modules="codeword,other=/srv/other",
        max_loras=3,
        max_lora_rank=32,
    )
    argv = vllm_argv(s, tmp_path, gpu=False, env={})
    start = argv.index("--enable-lora")
    assert argv[start : start + 8] == [
        "--enable-lora",
        "--max-loras",
        "3",
        "--max-lora-rank",
        "32",
        "--lora-modules",
        f"codeword={(tmp_path / 'codeword').resolve()}",
        "other=/srv/other",
    ]
    assert "VLLM_ALLOW_RUNTIME_LORA_UPDATING" not in vllm_env(s, {})
    runtime = settings(allow_runtime_lora_updating=True)
    assert "--enable-lora" in vllm_argv(runtime, tmp_path, gpu=False, env={})
    assert "--lora-modules" not in vllm_argv(runtime, tmp_path, gpu=False, env={})
    assert vllm_env(runtime, {})["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    embed = settings(task="embed", allow_runtime_lora_updating=True)
    assert "--enable-lora" not in vllm_argv(embed, tmp_path, gpu=False, env={})
