"""Real gateway processes for tests, and the scripted mock upstream they can sit in front of.

- `gateway_server` (session): `python -m gateway serve` in front of the real model
  services (`llm_server`, `embedder_server` from tests/support/models.py) with
  `redis_search_server`, semantic cache on. `.base_url` (no `/v1`), `.master_key`.
- `gateway_factory` (function): start gateways with custom env, e.g. two replicas
  sharing one Redis, or a gateway whose Redis or upstream a test stops.
- `mock_upstream_factory` (function) / `mock_upstream` (session): the fast scripted
  OpenAI-compatible server from `bench/mock_upstream.py` (real process, real socket).
- `mock_gateway` (session): a gateway in front of `mock_upstream` with
  `redis_search_server`, for the fast suite.
"""

from __future__ import annotations

import json
import secrets
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

# Import the real `gateway` package before pytest collects `gateway/tests/...`: in
# importlib mode pytest would otherwise register an empty placeholder module named
# `gateway` (the service folder) as the test modules' parent, hiding the package.
import gateway as _gateway_package  # noqa: F401
from tests.support.processes import ManagedProcess, free_port, python_module, source_path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
MOCK_UPSTREAM = PROJECT_ROOT / "bench" / "mock_upstream.py"
MOCK_LLM = "mock-llm"
MOCK_EMBEDDER = "mock-embed"


class MockUpstream(ManagedProcess):
    def __init__(
        self,
        name: str,
        log_dir: Path,
        models: Sequence[str] = (MOCK_LLM, MOCK_EMBEDDER),
        chunks: int = 8,
        chunk_delay_ms: float = 0.0,
    ) -> None:
        self.port = free_port()
        self.models = list(models)
        argv = [sys.executable, str(MOCK_UPSTREAM), "--port", str(self.port)]
        argv += ["--chunks", str(chunks), "--chunk-delay-ms", str(chunk_delay_ms)]
        for model in models:
            argv += ["--model", model]
        super().__init__(name, argv, log_dir, cwd=PROJECT_ROOT)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> MockUpstream:
        super().start()
        self.wait_http(f"{self.base_url}/health", timeout=30)
        return self

    def control(self, mode: str, **extra: Any) -> None:
        httpx.post(f"{self.base_url}/_control", json={"mode": mode, **extra}).raise_for_status()

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = httpx.get(f"{self.base_url}/_stats").json()
        return result

    def last_request(self) -> dict[str, Any]:
        result: dict[str, Any] = httpx.get(f"{self.base_url}/_last").json()
        return result


def upstreams_env(*servers: tuple[str, str, Sequence[str]]) -> str:
    """GATEWAY_UPSTREAMS JSON for (name, base_url, models) triples."""
    return json.dumps(
        [{"name": name, "base_url": url, "models": list(models)} for name, url, models in servers]
    )


class GatewayProcess(ManagedProcess):
    def __init__(
        self, name: str, log_dir: Path, redis_url: str, env: Mapping[str, str] | None = None
    ) -> None:
        self.port = free_port()
        self.master_key = (env or {}).get("GATEWAY_MASTER_KEY") or (
            "sk-test-" + secrets.token_urlsafe(16)
        )
        base_env = {
            "GATEWAY_HOST": "127.0.0.1",
            "GATEWAY_PORT": str(self.port),
            "GATEWAY_REDIS_URL": redis_url,
            "GATEWAY_LOG_LEVEL": "INFO",
            "OTEL_SDK_DISABLED": "true",
        }
        super().__init__(
            name,
            python_module("gateway", "serve"),
            log_dir,
            env={**base_env, **(env or {}), "GATEWAY_MASTER_KEY": self.master_key},
            cwd=log_dir,  # no project .env is read by accident
        )

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.master_key}"}

    def start(self) -> GatewayProcess:
        super().start()
        self.wait_http(f"{self.base_url}/healthz", timeout=90)
        return self

    def create_key(self, name: str, **limits: Any) -> str:
        response = httpx.post(
            f"{self.base_url}/admin/keys", json={"name": name, **limits}, headers=self.headers
        )
        response.raise_for_status()
        key: str = response.json()["key"]
        return key

    def metrics_text(self) -> str:
        return httpx.get(f"{self.base_url}/metrics").text


def _pythonpath() -> str:
    return source_path("gateway")


GatewayFactory = Callable[..., Any]  # one GatewayProcess, or a list when given several envs
MockFactory = Callable[..., MockUpstream]


@pytest.fixture
def mock_upstream_factory(tmp_path: Path) -> Iterator[MockFactory]:
    started: list[MockUpstream] = []

    def make(**kwargs: Any) -> MockUpstream:
        server = MockUpstream(f"mock-{len(started)}", tmp_path, **kwargs).start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


def gateway_launcher(log_dir: Path) -> tuple[GatewayFactory, list[GatewayProcess]]:
    """(make, started): for fixtures of any scope; the caller stops `started`."""
    started: list[GatewayProcess] = []

    def make(redis_url: str, *more: Mapping[str, str], **env: str) -> Any:
        """One gateway, or with extra env mappings in `more` several started together
        (their startups overlap); then a list, the first built from `env`."""
        gateways = []
        for overrides in (env, *more):
            full_env = {"PYTHONPATH": _pythonpath(), **{k.upper(): v for k, v in overrides.items()}}
            gateway = GatewayProcess(f"gateway-{len(started)}", log_dir, redis_url, full_env)
            started.append(gateway)
            gateways.append(gateway)
            ManagedProcess.start(gateway)
        for gateway in gateways:
            gateway.wait_http(f"{gateway.base_url}/healthz", timeout=90)
        return gateways if more else gateways[0]

    return make, started


@pytest.fixture
def gateway_factory(tmp_path: Path) -> Iterator[GatewayFactory]:
    """`make(redis_url, GATEWAY_X="...", ...)` starts a gateway; all stopped at teardown."""
    make, started = gateway_launcher(tmp_path)
    yield make
    for gateway in started:
        gateway.stop()


@pytest.fixture(scope="session")
def mock_upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MockUpstream]:
    server = MockUpstream("mock-upstream", tmp_path_factory.mktemp("mock-upstream")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def mock_gateway(
    tmp_path_factory: pytest.TempPathFactory, mock_upstream: MockUpstream, redis_search_server: Any
) -> Iterator[GatewayProcess]:
    """A gateway in front of the mock upstream, semantic cache on (mock embeddings)."""
    make, started = gateway_launcher(tmp_path_factory.mktemp("mock-gateway"))
    gateway = make(
        redis_search_server.url,
        GATEWAY_UPSTREAMS=upstreams_env(
            ("mock", mock_upstream.base_url, [MOCK_LLM, MOCK_EMBEDDER])
        ),
        GATEWAY_EMBEDDING_MODEL=MOCK_EMBEDDER,
        GATEWAY_SEMANTIC_CACHE_ENABLED="true",
        GATEWAY_MODEL_ALIASES=json.dumps({"fast": MOCK_LLM}),
        GATEWAY_CACHE_VERSION=secrets.token_hex(4),  # a fresh cache per session
        # Cache tests read back what the previous request stored: give Redis calls room on
        # a loaded CI host (the 0.25 s default drops a slow store by design).
        GATEWAY_REDIS_TIMEOUT_SECONDS="2",
    )
    yield gateway
    for process in started:
        process.stop()


@pytest.fixture(scope="session")
def gateway_server(
    tmp_path_factory: pytest.TempPathFactory,
    llm_server: Any,
    embedder_server: Any,
    redis_search_server: Any,
) -> Iterator[GatewayProcess]:
    """The gateway in front of the real model services (SmolLM2 + MiniLM)."""
    make, started = gateway_launcher(tmp_path_factory.mktemp("gateway"))
    gateway = make(
        redis_search_server.url,
        GATEWAY_UPSTREAMS=upstreams_env(
            ("llm", llm_server.base_url, [llm_server.model]),
            ("embedder", embedder_server.base_url, [embedder_server.model]),
        ),
        GATEWAY_EMBEDDING_MODEL=embedder_server.model,
        GATEWAY_SEMANTIC_CACHE_ENABLED="true",
        GATEWAY_CACHE_VERSION=secrets.token_hex(4),
    )
    yield gateway
    for process in started:
        process.stop()
