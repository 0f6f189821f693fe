"""Model discovery through real processes: gateways that route LoRA adapters (models an
upstream lists in /v1/models but nobody configured) to the upstream that has them, with
keys, caches and /v1/models treating an adapter like any model.

The two-upstream test runs two real model-service processes on the tiny chat model, both
serving BASE; a LoRA adapter trained in the session (tests/support/adapters.py) is loaded
at run time on `lora` only (POST /v1/load_lora_adapter), so the gateway learns of it
from `lora`'s /v1/models alone, with `parent` BASE.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.adapters import TINY_ID, TrainedAdapter
from tests.support.gateway import (
    MOCK_EMBEDDER,
    MOCK_LLM,
    GatewayFactory,
    GatewayProcess,
    MockUpstream,
    gateway_launcher,
    upstreams_env,
)
from tests.support.models import ModelServer
from tests.support.processes import ManagedProcess
from tests.support.redis import RedisServer

BASE, ADAPTER = "tiny-base", "tiny-codeword-lora"
MOCK_LORA = "mock-llm-lora"
REFRESH_SECONDS = "0.2"
POLL_SECONDS = 60.0  # only ever reached when discovery is broken


# helpers ------------------------------------------------------------------------------
def chat(gateway: GatewayProcess, model: str, api_key: str | None = None, **extra: Any):
    body = {"model": model, "messages": [{"role": "user", "content": "Hi"}], **extra}
    headers = {"authorization": f"Bearer {api_key or gateway.master_key}"}
    return httpx.post(
        f"{gateway.base_url}/v1/chat/completions", json=body, headers=headers, timeout=60
    )


def model_cards(gateway: GatewayProcess, api_key: str | None = None) -> dict[str, dict]:
    headers = {"authorization": f"Bearer {api_key or gateway.master_key}"}
    response = httpx.get(f"{gateway.base_url}/v1/models", headers=headers)
    response.raise_for_status()
    return {card["id"]: card for card in response.json()["data"]}


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of `name` whose labels include `labels`."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


def listings_read(gateway: GatewayProcess, upstream: str, result: str) -> float:
    text = gateway.metrics_text()
    return metric(text, "gateway_model_listings_total", upstream=upstream, result=result)


def served(server: ModelServer) -> float:
    """Requests the model server finished (its vLLM-named counter)."""
    return metric(httpx.get(f"{server.base_url}/metrics").text, "vllm:request_success_total")


def wait_for(gateway: GatewayProcess, ready: Callable[[], bool], what: str) -> None:
    gateway.wait_until(ready, POLL_SECONDS, what)


# adapters in the cache keys (the fast mock upstream, like test_gateway_cache.py) -------
@pytest.fixture(scope="module")
def mock_lora_gateway(
    tmp_path_factory: pytest.TempPathFactory, redis_search_server: RedisServer
) -> Iterator[tuple[GatewayProcess, MockUpstream]]:
    """A gateway whose upstream lists MOCK_LORA besides the models configured for it."""
    log_dir = tmp_path_factory.mktemp("mock-lora")
    upstream = MockUpstream("mock-lora", log_dir, models=(MOCK_LLM, MOCK_LORA, MOCK_EMBEDDER))
    make, started = gateway_launcher(log_dir)
    upstream.start()
    gateway = make(
        redis_search_server.url,
        GATEWAY_UPSTREAMS=upstreams_env(("mock", upstream.base_url, [MOCK_LLM, MOCK_EMBEDDER])),
        GATEWAY_EMBEDDING_MODEL=MOCK_EMBEDDER,
        GATEWAY_SEMANTIC_CACHE_ENABLED="true",
        GATEWAY_MODELS_REFRESH_SECONDS=REFRESH_SECONDS,
        GATEWAY_CACHE_VERSION=secrets.token_hex(4),
    )
    try:
        wait_for(gateway, lambda: MOCK_LORA in model_cards(gateway), "listing the adapter")
        yield gateway, upstream
    finally:
        for process in [*started, upstream]:
            process.stop()


def test_discovered_adapter_name_is_part_of_the_exact_cache_key(
    mock_lora_gateway: tuple[GatewayProcess, MockUpstream],
) -> None:
    gateway, upstream = mock_lora_gateway
    prompt = f"exact {uuid.uuid4()}"

    def ask(model: str) -> str:
        answer = chat(gateway, model, temperature=0, messages=[{"role": "user", "content": prompt}])
        assert answer.status_code == 200, answer.text
        return str(answer.headers["x-cache"])

    assert [ask(MOCK_LLM), ask(MOCK_LLM)] == ["miss", "hit"]
    assert ask(MOCK_LORA) == "miss"  # the base's answer is not the adapter's
    assert upstream.last_request()["model"] == MOCK_LORA
    assert ask(MOCK_LORA) == "hit"


def test_discovered_adapter_name_is_part_of_the_semantic_cache_key(
    mock_lora_gateway: tuple[GatewayProcess, MockUpstream],
) -> None:
    gateway, _ = mock_lora_gateway
    topic = uuid.uuid4().hex[:8]

    def ask(model: str, content: str) -> tuple[str, str | None]:
        messages = [{"role": "user", "content": content}]
        answer = chat(gateway, model, temperature=0, messages=messages)
        return answer.headers["x-cache"], answer.headers.get("x-cache-kind")

    question, paraphrase = (
        f"What is the capital city of {topic}?",
        f"{topic}: the capital city is what",
    )
    assert ask(MOCK_LLM, question)[0] == "miss"
    assert ask(MOCK_LORA, paraphrase)[0] == "miss"  # close to the base's entry, other model
    assert ask(MOCK_LLM, paraphrase) == ("hit", "semantic")
    assert ask(MOCK_LORA, question) == ("hit", "semantic")  # the adapter's own entry


# two real model services, the adapter on one ------------------------------------------
def tiny_server(
    name: str, log_dir: Path, models_root: Path, adapters_dir: Path, port: int | None = None
) -> ModelServer:
    """The tiny chat model served as BASE, run-time adapter loading on."""
    env = {
        "MODEL_SERVED_NAME": BASE,
        "MODEL_MAX_MODEL_LEN": "256",
        "MODEL_MAX_NUM_SEQS": "4",
        "MODEL_KV_CACHE_GIB": "0.1",
        "MODEL_LORA_KV_CACHE_GIB": "0.05",
        "MODEL_ADAPTERS_DIR": str(adapters_dir),
        "MODEL_ALLOW_RUNTIME_LORA_UPDATING": "true",
    }
    return ModelServer(name, log_dir, models_root, TINY_ID, env=env, port=port)


def start_together(*servers: ModelServer) -> None:
    for server in servers:
        ManagedProcess.start(server)  # the processes first: their startups overlap
    for server in servers:
        server.wait_http(server.base_url + "/health", timeout=server.startup_seconds)


@pytest.fixture
def two_upstreams(
    tmp_path: Path, tiny_models_root: Path, tiny_codeword_adapter: TrainedAdapter
) -> Any:
    """`base` and `lora` both serve BASE; the adapter is loaded on `lora` only."""
    adapters = tiny_codeword_adapter.folder.parent
    base = tiny_server("base", tmp_path, tiny_models_root, adapters)
    lora = tiny_server("lora", tmp_path, tiny_models_root, adapters)
    started = [base, lora]
    try:
        start_together(base, lora)
        body = {"lora_name": ADAPTER, "lora_path": str(tiny_codeword_adapter.folder)}
        loaded = httpx.post(f"{lora.base_url}/v1/load_lora_adapter", json=body, timeout=120)
        assert loaded.status_code == 200, loaded.text
        yield base, lora, started
    finally:
        for server in started:
            server.stop()


def back_without_adapter(lora: ModelServer, tmp_path: Path, models_root: Path) -> ModelServer:
    """The stopped `lora` upstream back on its port as it was started: an adapter loaded at
    run time is gone after a restart, so its listing no longer names ADAPTER."""
    adapters = Path(lora.env["MODEL_ADAPTERS_DIR"])
    return tiny_server("lora-again", tmp_path, models_root, adapters, port=lora.port).start()


@pytest.mark.e2e
def test_discovery_routes_a_lora_adapter_to_the_only_upstream_listing_it(
    two_upstreams: Any,
    gateway_factory: GatewayFactory,
    redis_server: RedisServer,
    tmp_path: Path,
    tiny_models_root: Path,
) -> None:
    base, lora, started = two_upstreams
    gateway = gateway_factory(
        redis_server.url,
        # ADAPTER is configured nowhere: only `lora`'s /v1/models names it.
        GATEWAY_UPSTREAMS=upstreams_env(
            ("base", base.base_url, [BASE]), ("lora", lora.base_url, [])
        ),
        GATEWAY_MODELS_REFRESH_SECONDS=REFRESH_SECONDS,
        GATEWAY_CACHE_ENABLED="false",
    )
    wait_for(gateway, lambda: ADAPTER in model_cards(gateway), "listing the adapter")
    assert model_cards(gateway)[ADAPTER].get("parent") == BASE

    before = served(base), served(lora)
    answers = [chat(gateway, ADAPTER, max_tokens=2) for _ in range(20)]
    assert [a.status_code for a in answers] == [200] * 20, answers[-1].text
    assert (served(base) - before[0], served(lora) - before[1]) == (0, 20)

    _keys_see_and_use_what_they_may(gateway)

    lora.stop()  # unreadable listings keep the last good one
    wait_for(gateway, lambda: listings_read(gateway, "lora", "connection") > 0, "failing")
    assert ADAPTER in model_cards(gateway)
    assert chat(gateway, ADAPTER).status_code in (502, 503)

    started.append(back_without_adapter(lora, tmp_path, tiny_models_root))
    # Two reads of the new listing: the refresh of the first one has swapped the table.
    seen = listings_read(gateway, "lora", "ok")
    wait_for(gateway, lambda: listings_read(gateway, "lora", "ok") >= seen + 2, "re-reading")
    assert ADAPTER not in model_cards(gateway)
    gone = chat(gateway, ADAPTER)
    assert gone.status_code == 404
    assert gone.json()["error"]["code"] == "model_not_found"
    assert f"'{ADAPTER}'" in gone.json()["error"]["message"]


def _keys_see_and_use_what_they_may(gateway: GatewayProcess) -> None:
    """A key's allow-list applies to the discovered name, in /v1/models and requests."""
    adapter_key = gateway.create_key(f"adapter-{uuid.uuid4().hex[:6]}", models=[ADAPTER])
    base_key = gateway.create_key(f"base-{uuid.uuid4().hex[:6]}", models=[BASE])
    assert list(model_cards(gateway, adapter_key)) == [ADAPTER]
    assert list(model_cards(gateway, base_key)) == [BASE]
    assert {BASE, ADAPTER} <= set(model_cards(gateway))
    assert chat(gateway, ADAPTER, adapter_key, max_tokens=2).status_code == 200
    for model, key in ((ADAPTER, base_key), (BASE, adapter_key)):
        denied = chat(gateway, model, key)
        assert denied.status_code == 403 and denied.json()["error"]["code"] == "model_denied"
