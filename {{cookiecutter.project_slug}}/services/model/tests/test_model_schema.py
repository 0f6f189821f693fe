"""Property-based API testing with schemathesis against a real model-service process
on the tiny model, default settings: whatever it is sent (schema-conforming or not), it
never answers 500 or hangs, every error is in OpenAI's shape, the process does not grow,
and it still answers a normal request afterwards."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from tests.support.models import ModelServer

BODY_OPERATIONS = {"/v1/chat/completions", "/v1/completions", "/v1/embeddings"}
EXAMPLES = {"POST": 30, "GET": 2}  # at most 186 calls in all: the bound is 200
RSS_GROWTH_BOUND = 256 * 2**20


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc status")


@pytest.fixture(scope="module")
def fuzzed_server(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ModelServer]:
    env = {"MODEL_SERVED_NAME": "tiny", "MODEL_KV_CACHE_GIB": "0.01", "MODEL_MAX_MODEL_LEN": "128"}
    server = ModelServer(
        "fuzzed",
        tmp_path_factory.mktemp("fuzzed"),
        tiny_model_dir.parent,
        str(tiny_model_dir),
        env=env,
    ).start()
    yield server
    server.stop()


def normal_request(base_url: str) -> httpx.Response:
    body = {"model": "tiny", "prompt": "Hello", "max_tokens": 4, "temperature": 0}
    return httpx.post(f"{base_url}/v1/completions", json=body, timeout=60)


def fuzz(server: ModelServer, mode: GenerationMode, exercised: Counter[str]) -> None:
    schema = schemathesis.openapi.from_url(f"{server.base_url}/openapi.json")
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES[operation.method.upper()],
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def check(case) -> None:
            if isinstance(case.body, dict) and isinstance(case.body.get("model"), str):
                case.body["model"] = "tiny"  # reach past the model check into the engine
            response = case.call(base_url=server.base_url, timeout=60)  # a hang fails here
            exercised[case.path] += 1
            assert response.status_code != 500, (case.method, case.path, response.text)
            if response.status_code >= 400:
                error = response.json()["error"]
                assert set(error) == {"message", "type", "param", "code"}
                assert isinstance(error["message"], str) and error["message"]

        try:
            check()
        except Unsatisfiable:
            # Negative mode cannot break a request that has nothing to break (GET /health).
            assert mode is GenerationMode.NEGATIVE


def test_no_server_errors_no_hang_no_growth(fuzzed_server: ModelServer) -> None:
    assert normal_request(fuzzed_server.base_url).status_code == 200  # warm before measuring
    before = rss_bytes(fuzzed_server.pid)
    exercised: Counter[str] = Counter()
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        fuzz(fuzzed_server, mode, exercised)
    assert set(exercised) >= BODY_OPERATIONS, exercised
    assert sum(exercised.values()) <= 200, exercised
    growth = rss_bytes(fuzzed_server.pid) - before
    assert growth < RSS_GROWTH_BOUND, f"RSS grew by {growth / 2**20:.0f} MiB over the run"
    assert httpx.get(f"{fuzzed_server.base_url}/health", timeout=10).status_code == 200
    after = normal_request(fuzzed_server.base_url)
    assert after.status_code == 200, after.text
    assert after.json()["usage"]["completion_tokens"] == 4
