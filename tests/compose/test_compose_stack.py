"""The default bake's compose stack, for real: podman, the project's own images, faults.

Run alone with `make test-compose` (marker `compose`). The stack comes up once per
module (`compose_stack`); the tests run in file order, each leaving every service
running, and everything is torn down at the end, also when a test fails.
"""

from __future__ import annotations

import json
import threading
import uuid
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI

from tests.compose.conftest import gateway_ready, model_ready, redis_ready
from tests.compose.stack import ComposeStack, published

pytestmark = pytest.mark.compose

HEALTHCHECKED = ("redis", "llm", "embedder", "gateway")


def assert_openai_error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) >= {"message", "type", "param", "code"}, body
    return dict(body["error"])


def chat(client: OpenAI, model: str, prompt: str, max_tokens: int = 8) -> Any:
    """A deterministic (so cacheable) chat completion; returns the raw response."""
    return client.chat.completions.with_raw_response.create(
        model=model,
        messages=[{"role": "user", "content": prompt}],
        max_tokens=max_tokens,
        temperature=0,
    )


def post_chat(
    gateway_url: str, key: str, model: str, prompt: str, timeout: float = 120
) -> httpx.Response:
    return httpx.post(
        gateway_url + "/v1/chat/completions",
        headers={"authorization": f"Bearer {key}"},
        json={
            "model": model,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": 4,
            "temperature": 0,
        },
        timeout=timeout,
    )


def create_key(gateway_url: str, master_key: str, name: str, **limits: int) -> str:
    response = httpx.post(
        gateway_url + "/admin/keys",
        headers={"authorization": f"Bearer {master_key}"},
        json={"name": name, **limits},
        timeout=30,
    )
    assert response.status_code == 201, response.text
    return str(response.json()["key"])


def readyz(gateway_url: str) -> httpx.Response:
    return httpx.get(gateway_url + "/readyz", timeout=10)


def test_compose_healthchecks_pass_in_their_images(stack: ComposeStack) -> None:
    """podman here runs no healthcheck timers; run each compose healthcheck once by hand,
    so a probe that cannot pass in its image (missing tool, wrong port) fails here."""
    failures = {}
    for service in HEALTHCHECKED:
        proc = stack.healthcheck(service)
        if proc.returncode != 0:
            failures[service] = (proc.stdout + proc.stderr).strip()
    assert not failures, failures


def test_settings_reach_the_containers(
    client: OpenAI, llm_model: str, embedding_model: str
) -> None:
    served = {model.id for model in client.models.list()}
    assert {llm_model, embedding_model} <= served


def test_chat_streaming_and_embeddings_through_the_gateway(
    client: OpenAI, llm_model: str, embedding_model: str
) -> None:
    prompt = f"What is the capital of France? ({uuid.uuid4().hex[:8]})"
    first = chat(client, llm_model, prompt)
    completion = first.parse()
    assert first.headers["x-cache"] == "miss"
    assert completion.choices[0].message.content
    assert completion.usage is not None and completion.usage.completion_tokens > 0

    repeat = chat(client, llm_model, prompt)
    assert repeat.headers["x-cache"] == "hit"
    assert repeat.parse().choices[0].message.content == completion.choices[0].message.content

    stream = client.chat.completions.create(
        model=llm_model,
        messages=[{"role": "user", "content": "Name three colours."}],
        max_tokens=12,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces, usage = [], None
    for chunk in stream:
        pieces += [c.delta.content for c in chunk.choices if c.delta.content]
        usage = chunk.usage or usage
    assert "".join(pieces).strip()
    assert usage is not None and usage.completion_tokens > 0

    embeddings = client.embeddings.create(
        model=embedding_model, input=["a cat sat on the mat", "vector search in redis"]
    )
    assert [len(item.embedding) for item in embeddings.data] == [384, 384]


def test_redis_outage_degrades_and_recovers(
    stack: ComposeStack, client: OpenAI, gateway_url: str, master_key: str, llm_model: str
) -> None:
    used_key = create_key(gateway_url, master_key, f"used-{uuid.uuid4().hex[:6]}")
    unused_key = create_key(gateway_url, master_key, f"unused-{uuid.uuid4().hex[:6]}")
    cached_prompt = f"Say hello. ({uuid.uuid4().hex[:8]})"
    assert chat(client, llm_model, cached_prompt).headers["x-cache"] == "miss"
    assert chat(client, llm_model, cached_prompt).headers["x-cache"] == "hit"
    # verified just before the outage, so its in-process copy (60 s) is still fresh
    assert post_chat(gateway_url, used_key, llm_model, "Say hello.").status_code == 200

    stack.stop("redis")
    try:
        # A stored key is honoured only from the in-process copy of its verified hash.
        honoured = post_chat(gateway_url, used_key, llm_model, "Say yes.")
        assert honoured.status_code == 200, honoured.text
        refused = assert_openai_error(post_chat(gateway_url, unused_key, llm_model, "Hi."), 503)
        assert refused["code"] == "key_store_unavailable"
        stranger = post_chat(gateway_url, "sk-gw-never-issued", llm_model, "Hi.")
        assert_openai_error(stranger, 503)
        # The master key keeps working, without the cache.
        during = chat(client, llm_model, cached_prompt)
        assert during.parse().choices[0].message.content
        assert during.headers["x-cache"] != "hit"
        ready = readyz(gateway_url)
        assert ready.status_code == 200
        assert ready.json()["status"] == "degraded"
        assert ready.json()["redis"] == "down"
    finally:
        stack.start("redis")

    stack.wait_until("redis back", lambda: redis_ready(stack.env), 60, ["redis"])
    stack.wait_until("gateway sees redis", lambda: gateway_ready(stack.env), 60, ["gateway"])
    # Key checks and caching resume without restarting the gateway (keys survived in
    # Redis' append-only file).
    assert post_chat(gateway_url, unused_key, llm_model, "Say no.").status_code == 200
    fresh = f"Say goodbye. ({uuid.uuid4().hex[:8]})"
    assert chat(client, llm_model, fresh).headers["x-cache"] == "miss"
    assert chat(client, llm_model, fresh).headers["x-cache"] == "hit"


def test_llm_killed_mid_stream(stack: ComposeStack, client: OpenAI, llm_model: str) -> None:
    stream = client.chat.completions.create(
        model=llm_model,
        messages=[{"role": "user", "content": "Count from 1 to 500, separated by commas."}],
        max_tokens=400,
        temperature=0,
        stream=True,
        extra_body={"ignore_eos": True},
    )
    received: list[str] = []
    killer: threading.Thread | None = None
    with pytest.raises(openai.APIError) as interrupted:
        for chunk in stream:
            received += [c.delta.content for c in chunk.choices if c.delta.content]
            if len(received) >= 3 and killer is None:
                killer = threading.Thread(target=stack.kill, args=("llm",))
                killer.start()
    if killer is not None:
        killer.join()
    assert received, "the stream broke before any content arrived"
    assert not isinstance(interrupted.value, openai.APIStatusError)
    assert isinstance(interrupted.value.body, dict)
    assert interrupted.value.body.get("code") == "stream_interrupted", interrupted.value.body

    try:
        gone = post_chat(published(stack.env, "GATEWAY_PORT"), client.api_key, llm_model, "Hi.")
        error = assert_openai_error(gone, 503)
        assert error["code"] == "upstream_unavailable", error
        assert readyz(published(stack.env, "GATEWAY_PORT")).json()["upstreams"]["llm"] == "down"
    finally:
        stack.start("llm")

    env = stack.env
    stack.wait_until("llm reloaded", lambda: model_ready(env, "LLM_PORT"), 600, ["llm"])

    def served() -> bool | None:
        response = post_chat(published(env, "GATEWAY_PORT"), client.api_key, llm_model, "Hi.")
        return True if response.status_code == 200 else None

    stack.wait_until("gateway serves the llm again", served, 60, ["gateway"])


def test_gateway_restart_keeps_keys_and_limits(
    stack: ComposeStack, gateway_url: str, master_key: str, embedding_model: str
) -> None:
    rpm = 100
    key = create_key(gateway_url, master_key, f"limited-{uuid.uuid4().hex[:6]}", rpm=rpm)

    def embed() -> httpx.Response:
        return httpx.post(
            gateway_url + "/v1/embeddings",
            headers={"authorization": f"Bearer {key}"},
            json={"model": embedding_model, "input": "rate limits live in redis"},
            timeout=60,
        )

    for _ in range(3):
        before = embed()
        assert before.status_code == 200, before.text
    assert int(before.headers["x-ratelimit-remaining-requests"]) <= rpm - 3

    stack.restart("gateway")
    stack.wait_until("gateway back", lambda: gateway_ready(stack.env), 120, ["gateway"])

    after = embed()
    assert after.status_code == 200, after.text  # the key was verified from Redis
    # A fresh limiter would report rpm - 1; the counters of the sliding window survived.
    assert int(after.headers["x-ratelimit-remaining-requests"]) < rpm - 1
    listed = httpx.get(
        gateway_url + "/admin/keys", headers={"authorization": f"Bearer {master_key}"}
    )
    assert key not in listed.text  # keys are stored hashed, never in plain text
    assert any(record["rpm"] == rpm for record in listed.json()["data"])


def test_evals_job_runs_in_a_container(stack: ComposeStack) -> None:
    """`podman-compose --profile evals run evals`: the smoke suite against the gateway,
    its report written to the mounted reports folder."""
    # --no-deps: the stack is up already, and podman-compose 1.6 `run` refuses to start
    # dependencies when one of them (llm-gpu, embedder-gpu: `required: false`) belongs
    # to an inactive profile ("missing services"); Docker Compose skips those.
    # -T: no pseudo-TTY, so the job's progress bars do not flood the log.
    proc = stack.compose(
        "run", "--rm", "--no-deps", "-T", "evals", profiles=("cpu", "evals"), timeout=1500
    )
    assert proc.returncode == 0
    reports = sorted(Path(stack.env["REPORTS_DIR"]).glob("*/report.json"))
    assert reports, f"no report in {stack.env['REPORTS_DIR']}\n{proc.stdout[-3000:]}"
    report = json.loads(reports[-1].read_text())
    assert report["exit_code"] == 0, report.get("errors")
    assert [suite["name"] for suite in report["suites"]] == ["smoke"]
    assert (reports[-1].parent / "report.md").is_file()
