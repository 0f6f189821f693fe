"""`make dev` (python -m devstack): preflight messages, dependency gates, settings
precedence, and a stack of real processes that Ctrl-C (SIGINT) stops without leftovers."""

from __future__ import annotations

import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from devstack.services import base_env, llm_env, plan
from devstack.settings import load_settings
from tests.support import project_files
from tests.support.processes import free_port

ROOT = project_files.PROJECT_ROOT
PORT_VARIABLES = ("DEV_REDIS_PORT", "LLM_PORT", "EMBEDDER_PORT", "GATEWAY_PORT")
# What .env gives every run of these tests (they read an empty env file instead).
SECRETS = {"GATEWAY_MASTER_KEY": "sk-test-" + secrets.token_hex(16), "REDIS_PASSWORD": "pw-test"}


def marked_processes(marker: str) -> list[int]:
    """Live processes whose environment carries `DEVSTACK_TEST_RUN=marker` (children
    inherit it, so this finds every descendant of a run, however deep)."""
    needle = f"DEVSTACK_TEST_RUN={marker}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if needle in environ.split(b"\0") and state != "Z":
            found.append(int(entry.name))
    return found


def wait_gone(marker: str, timeout: float = 30.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while (left := marked_processes(marker)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


@pytest.fixture
def free_ports() -> dict[str, str]:
    return {variable: str(free_port()) for variable in PORT_VARIABLES}


@pytest.fixture
def prepared_models_dir(tmp_path: Path) -> Path:
    """A MODELS_DIR in which both default model folders look prepared to the preflight."""
    for folder in (
        "HuggingFaceTB--SmolLM2-135M-Instruct",
        "sentence-transformers--all-MiniLM-L6-v2",
    ):
        (tmp_path / "models" / folder).mkdir(parents=True)
        (tmp_path / "models" / folder / "config.json").write_text("{}")
    return tmp_path / "models"


def devstack(*args: str, env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    empty_env_file = tmp_path / "empty.env"
    empty_env_file.touch()
    return subprocess.run(
        [sys.executable, "-m", "devstack", *args, "--env-file", str(empty_env_file)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200", **SECRETS, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_passes_with_free_ports_and_prepared_models(
    free_ports: dict[str, str], prepared_models_dir: Path, tmp_path: Path
) -> None:
    result = devstack(
        "check", env={**free_ports, "MODELS_DIR": str(prepared_models_dir)}, tmp_path=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert "ready to start" in result.stderr


@pytest.mark.parametrize("variable", PORT_VARIABLES)
def test_a_busy_port_stops_make_dev_naming_its_variable(
    variable: str, free_ports: dict[str, str], prepared_models_dir: Path, tmp_path: Path
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        ports = {**free_ports, variable: str(busy.getsockname()[1])}
        result = devstack(
            "up", env={**ports, "MODELS_DIR": str(prepared_models_dir)}, tmp_path=tmp_path
        )
    assert result.returncode == 1
    assert f"set {variable} to a free port" in result.stderr
    others = set(PORT_VARIABLES) - {variable}
    assert not any(f"set {other} " in result.stderr for other in others)


def test_two_services_on_one_port_are_refused(
    free_ports: dict[str, str], prepared_models_dir: Path, tmp_path: Path
) -> None:
    ports = {**free_ports, "EMBEDDER_PORT": free_ports["LLM_PORT"]}
    result = devstack(
        "check", env={**ports, "MODELS_DIR": str(prepared_models_dir)}, tmp_path=tmp_path
    )
    assert result.returncode == 1
    assert "LLM_PORT" in result.stderr and "EMBEDDER_PORT" in result.stderr


def test_missing_models_fail_fast_naming_make_models_offline(
    free_ports: dict[str, str], tmp_path: Path
) -> None:
    started = time.monotonic()
    result = devstack(
        "up", env={**free_ports, "MODELS_DIR": str(tmp_path / "none")}, tmp_path=tmp_path
    )
    assert result.returncode == 1
    message = " ".join(result.stderr.split())
    assert "make models OFFLINE=1" in message
    assert "LLM_MODEL=HuggingFaceTB/SmolLM2-135M-Instruct" in message
    assert "EMBEDDING_MODEL=sentence-transformers/all-MiniLM-L6-v2" in message
    assert time.monotonic() - started < 60  # nothing was started or waited on


def test_shell_beats_env_file_beats_defaults_and_env_example_is_not_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable in ("LLM_PORT", "GATEWAY_PORT", "MODELS_DIR", "GATEWAY_MASTER_KEY"):
        monkeypatch.delenv(variable, raising=False)
    # Compose reads only .env; so does make dev (documentation is not configuration).
    (tmp_path / ".env.example").write_text("LLM_PORT=1111\nGATEWAY_MASTER_KEY=sk-from-docs\n")
    settings = load_settings(tmp_path)
    assert (settings.llm_port, settings.gateway_master_key) == (8000, "")
    (tmp_path / ".env").write_text("LLM_PORT=2222\nMODELS_DIR=./m\n")
    settings = load_settings(tmp_path)
    assert (settings.llm_port, settings.gateway_port) == (2222, 8080)
    assert settings.models_dir == (tmp_path / "m").resolve()
    monkeypatch.setenv("LLM_PORT", "3333")
    assert load_settings(tmp_path).llm_port == 3333


@pytest.mark.parametrize(
    ("secrets_given", "expected"),
    [
        ({"GATEWAY_MASTER_KEY": ""}, "GATEWAY_MASTER_KEY is not set: `make env`"),
        ({"REDIS_PASSWORD": ""}, "REDIS_PASSWORD is not set: `make env`"),
        ({"GATEWAY_MASTER_KEY": "sk-dev-master-key-change-me"}, "published example key"),
    ],
)
def test_make_dev_refuses_to_start_without_its_secrets(
    secrets_given: dict[str, str],
    expected: str,
    free_ports: dict[str, str],
    prepared_models_dir: Path,
    tmp_path: Path,
) -> None:
    env = {**free_ports, "MODELS_DIR": str(prepared_models_dir), **secrets_given}
    result = devstack("up", env=env, tmp_path=tmp_path)
    assert result.returncode == 1
    assert expected in " ".join(result.stderr.split())


def test_gateway_listens_where_gateway_host_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GATEWAY_HOST", raising=False)
    services = {s.name: s for s in plan(load_settings(tmp_path), ROOT)}
    assert services["gateway"].env["GATEWAY_HOST"] == services["gateway"].host == "127.0.0.1"
    assert all(s.host == "127.0.0.1" for s in services.values())
    monkeypatch.setenv("GATEWAY_HOST", "0.0.0.0")
    services = {s.name: s for s in plan(load_settings(tmp_path), ROOT)}
    assert services["gateway"].env["GATEWAY_HOST"] == "0.0.0.0"
    assert services["gateway"].health_url.startswith("http://127.0.0.1:")
    for name in ("llm", "embedder"):  # only the gateway ever opens up
        assert services[name].env["MODEL_HOST"] == "127.0.0.1"


def test_plan_masks_the_redis_password_and_the_master_key(
    free_ports: dict[str, str], tmp_path: Path
) -> None:
    result = devstack("plan", env={**free_ports, "REDIS_PASSWORD": "s3cret-pw"}, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "s3cret-pw" not in result.stdout and SECRETS["GATEWAY_MASTER_KEY"] not in result.stdout
    assert f"GATEWAY_REDIS_URL=redis://:***@127.0.0.1:{free_ports['DEV_REDIS_PORT']}/0" in (
        result.stdout
    )


def test_dev_redis_requires_the_password(tmp_path: Path) -> None:
    """`make dev`'s Redis (devstack.redis, a real valkey) refuses clients without it; the
    health probe and the gateway's URL carry it."""
    import redis

    from devstack.health import is_healthy
    from devstack.redis import server_command

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "devstack.redis", str(port), str(tmp_path / "data")],
        env={**os.environ, "PYTHONPATH": str(ROOT), "REDIS_PASSWORD": "pw-of-this-test"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"redis://127.0.0.1:{port}/0"
        deadline = time.monotonic() + 30
        while not is_healthy(url, redis_password="pw-of-this-test"):
            assert server.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        assert not is_healthy(url)  # NOAUTH without the password
        assert not is_healthy(url, redis_password="wrong")
        with pytest.raises(redis.AuthenticationError):
            redis.Redis.from_url(url).ping()
        authed = redis.Redis.from_url(f"redis://:pw-of-this-test@127.0.0.1:{port}/0")
        assert authed.ping() and authed.set("k", "v")
        authed.close()
        config = tmp_path / "data" / "devstack-auth.conf"
        assert config.stat().st_mode & 0o077 == 0
        # The password reaches the server through that file, never its command line.
        argv = server_command(port, tmp_path / "data", config_file=config)
        assert argv[1] == str(config) and not any("pw-of-this-test" in arg for arg in argv)
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_model_instances_never_share_the_shell_model_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODEL_PORT", "9999")
    monkeypatch.setenv("MODEL_TASK", "embed")
    settings = load_settings(tmp_path)
    inherited = base_env(ROOT, os.environ)
    assert not [key for key in inherited if key.startswith("MODEL_")]
    llm = {**inherited, **llm_env(settings)}
    assert (llm["MODEL_PORT"], llm["MODEL_TASK"]) == (str(settings.llm_port), "generate")
    assert llm["MODELS_DIR"] == str(settings.models_dir)


def test_every_service_gets_the_same_trace_export_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_PROTOCOL", raising=False)
    monkeypatch.setenv("OTEL_SDK_DISABLED", "false")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer%20t")
    services = {service.name: service for service in plan(load_settings(tmp_path), ROOT)}
    for name in ("llm", "embedder", "gateway"):
        env = services[name].env
        assert env["OTEL_SERVICE_NAME"] == name
        assert env["OTEL_SDK_DISABLED"] == "false"
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://127.0.0.1:4317"
        assert env["OTEL_EXPORTER_OTLP_PROTOCOL"] == "grpc"
        assert env["OTEL_EXPORTER_OTLP_HEADERS"] == "authorization=Bearer%20t"
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT")
    monkeypatch.delenv("OTEL_SDK_DISABLED")
    # The default: no endpoint, export off (make dev runs no collector).
    for service in plan(load_settings(tmp_path), ROOT)[1:]:
        assert service.env["OTEL_SDK_DISABLED"] == "true"
        assert "OTEL_EXPORTER_OTLP_ENDPOINT" not in service.env


def test_gateway_waits_for_redis_and_both_models() -> None:
    services = {service.name: service for service in plan(load_settings(ROOT), ROOT)}
    assert list(services) == ["redis", "llm", "embedder", "gateway"]
    assert services["gateway"].after == ["redis", "llm", "embedder"]
    assert services["gateway"].env["GATEWAY_REDIS_URL"].endswith(f":{services['redis'].port}/0")


def test_gate_runs_the_command_only_once_the_dependency_answers(
    tmp_path: Path, redis_server: object
) -> None:
    marker = tmp_path / "started"
    command = [sys.executable, "-c", f"open({str(marker)!r}, 'w').write('ok')"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DEV_START_TIMEOUT": "1"}
    nothing = f"redis://127.0.0.1:{free_port()}/0"
    gate = [sys.executable, "-m", "devstack.after"]
    refused = subprocess.run(
        [*gate, nothing, "--", *command], env=env, capture_output=True, text=True
    )
    assert refused.returncode == 1 and "not healthy" in refused.stderr
    assert not marker.exists()
    url = redis_server.url  # type: ignore[attr-defined]
    started = subprocess.run([*gate, url, "--", *command], env=env, capture_output=True, text=True)
    assert started.returncode == 0, started.stderr
    assert marker.read_text() == "ok"


STACK_SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from devstack.runner import Stack
    from devstack.services import Service

    first, second = int(sys.argv[1]), int(sys.argv[2])
    def web(name, port, after=()):
        argv = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]
        return Service(name, argv, {}, f"http://127.0.0.1:{port}/", port, list(after))
    services = [web("first", first), web("second", second, after=["first"])]
    sys.exit(Stack(services, Path.cwd(), dict(__import__("os").environ), 60).run())
    """
)


@pytest.fixture
def run_marker() -> Iterator[str]:
    marker = secrets.token_hex(8)
    yield marker
    for pid in marked_processes(marker):  # only after a failed assertion
        os.kill(pid, signal.SIGKILL)


def test_stack_starts_in_order_and_sigint_leaves_no_process(
    tmp_path: Path, run_marker: str
) -> None:
    ports = [free_port(), free_port()]
    log_path = tmp_path / "stack.log"
    with log_path.open("w") as log:
        stack = subprocess.Popen(
            [sys.executable, "-c", STACK_SCRIPT, *map(str, ports)],
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(ROOT), "DEVSTACK_TEST_RUN": run_marker},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        while "stack ready" not in log_path.read_text():
            assert stack.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.2)
        output = log_path.read_text()
        assert re.search(r"first +\| waiting", output) is None  # first has no gate
        assert re.search(rf"second +\| waiting for http://127.0.0.1:{ports[0]}/", output)
        for port in ports:
            assert httpx.get(f"http://127.0.0.1:{port}/").status_code == 200
        assert len(marked_processes(run_marker)) >= 3  # the runner and both servers
        os.killpg(stack.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        assert stack.wait(timeout=30) == 130
    finally:
        if stack.poll() is None:
            os.killpg(stack.pid, signal.SIGKILL)
    assert wait_gone(run_marker) == []
    assert "SIGINT received" in log_path.read_text()


def dev_command() -> list[str]:
    """`make dev` in a generated project; in the template repository the Makefile is still
    a template, so the same entry point runs directly."""
    if re.search(r"[{]%", (ROOT / "Makefile").read_text()):
        return [sys.executable, "-m", "devstack", "up"]
    return ["make", "dev", f"PYTHON={sys.executable}"]


@pytest.mark.e2e
def test_make_dev_serves_through_the_gateway_and_ctrl_c_leaves_nothing(
    models_dir: Path, tmp_path: Path, run_marker: str
) -> None:
    from openai import OpenAI

    ports = {variable: str(free_port()) for variable in PORT_VARIABLES}
    env = {
        **os.environ,
        **ports,
        **SECRETS,  # in a bake these override its .env, in the template they stand in for it
        "MODELS_DIR": str(models_dir),
        "DEVSTACK_TEST_RUN": run_marker,
        "DEV_START_TIMEOUT": "600",
    }
    log_path = tmp_path / "make-dev.log"
    with log_path.open("w") as log:
        dev = subprocess.Popen(
            dev_command(),
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a process group, like a terminal's foreground job
        )
    try:
        deadline = time.monotonic() + 660
        while "stack ready" not in log_path.read_text():
            assert dev.poll() is None, log_path.read_text()[-6000:]
            assert time.monotonic() < deadline, log_path.read_text()[-6000:]
            time.sleep(1)
        for variable, path in (
            ("LLM_PORT", "/health"),
            ("EMBEDDER_PORT", "/health"),
            ("GATEWAY_PORT", "/healthz"),
            ("GATEWAY_PORT", "/readyz"),
        ):
            url = f"http://127.0.0.1:{ports[variable]}{path}"
            assert httpx.get(url, timeout=10).status_code == 200, url
        readiness = httpx.get(f"http://127.0.0.1:{ports['GATEWAY_PORT']}/readyz").json()
        assert readiness["status"] == "ok"  # Redis answered too

        settings = load_settings(ROOT)
        client = OpenAI(
            base_url=f"http://127.0.0.1:{ports['GATEWAY_PORT']}/v1",
            api_key=SECRETS["GATEWAY_MASTER_KEY"],
            timeout=300,
            max_retries=0,
        )
        reply = client.chat.completions.create(
            model=settings.llm_model,
            messages=[{"role": "user", "content": "What is the capital of France?"}],
            max_tokens=16,
            temperature=0,
        )
        assert "Paris" in (reply.choices[0].message.content or "")
        embedding = client.embeddings.create(model=settings.embedding_model, input="hello")
        assert len(embedding.data[0].embedding) > 0
        assert len(marked_processes(run_marker)) >= 5  # make/runner and the four services

        os.killpg(dev.pid, signal.SIGINT)  # Ctrl-C
        dev.wait(timeout=60)
    finally:
        if dev.poll() is None:
            os.killpg(dev.pid, signal.SIGKILL)
    assert wait_gone(run_marker) == [], log_path.read_text()[-4000:]
    for port in ports.values():
        with socket.socket() as sock:  # free again for the next server
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", int(port)))
    assert "SIGINT received" in log_path.read_text()
