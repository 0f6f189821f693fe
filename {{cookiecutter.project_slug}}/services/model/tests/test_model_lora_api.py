"""LoRA adapters over HTTP on real model-service processes (transformers backend, the tiny
chat model): load at run time without a restart, answer, list, unload; load at start
from MODEL_LORA_MODULES; hostile load requests. The adapter is the session's
`tiny_codeword_adapter`, trained with the finetune package (tests/support/adapters.py)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.adapters import CODEWORD, TINY_ID, TINY_QUESTIONS, TrainedAdapter
from tests.support.models import ModelServer

TINY_ENV = {
    "MODEL_MAX_MODEL_LEN": "128",
    "MODEL_MAX_NUM_SEQS": "4",
    "MODEL_KV_CACHE_GIB": "0.01",
    "MODEL_LORA_KV_CACHE_GIB": "0.01",
    "MODEL_NUM_THREADS": "1",
}


@pytest.fixture(scope="module")
def adapters_root(
    tiny_codeword_adapter: TrainedAdapter, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """ADAPTERS_DIR: the trained adapter, a copy under a second name, and hostile folders."""
    root = tmp_path_factory.mktemp("served-adapters")
    for name in ("codeword", "codeword-2", "codeword-3"):
        shutil.copytree(tiny_codeword_adapter.folder, root / name)
    (root / "empty").mkdir()
    other = shutil.copytree(tiny_codeword_adapter.folder, root / "other-base")
    rewrite_config(other, base_model_name_or_path="org/another-model")
    wide = shutil.copytree(tiny_codeword_adapter.folder, root / "wide")
    rewrite_config(wide, r=64)
    prefix = shutil.copytree(tiny_codeword_adapter.folder, root / "prefix")
    rewrite_config(prefix, peft_type="PREFIX_TUNING")
    return root


def rewrite_config(folder: Path, **fields: Any) -> None:
    path = folder / "adapter_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **fields}))


def tiny_server(
    name: str, models_root: Path, adapters_root: Path, log_dir: Path, **env: str
) -> ModelServer:
    settings = {**TINY_ENV, "ADAPTERS_DIR": str(adapters_root), **env}
    return ModelServer(name, log_dir, models_root, TINY_ID, env=settings)


@pytest.fixture(scope="module")
def lora_server(
    tiny_models_root: Path, adapters_root: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ModelServer]:
    """Run-time loading on, at most two adapters, none loaded at start."""
    log_dir = tmp_path_factory.mktemp("lora-server")
    server = tiny_server(
        "lora",
        tiny_models_root,
        adapters_root,
        log_dir,
        MODEL_ALLOW_RUNTIME_LORA_UPDATING="true",
        MODEL_MAX_LORAS="2",
    ).start()
    yield server
    server.stop()


@pytest.fixture
def client(lora_server: ModelServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=lora_server.base_url, timeout=120) as client:
        yield client


def ask(client: httpx.Client, model: str, question: str = TINY_QUESTIONS[0]) -> httpx.Response:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": question}],
        "temperature": 0,
        "max_tokens": 12,
    }
    return client.post("/v1/chat/completions", json=body)


def model_cards(client: httpx.Client) -> dict[str, dict[str, Any]]:
    return {card["id"]: card for card in client.get("/v1/models").json()["data"]}


def test_lora_adapter_loads_at_run_time_answers_and_unloads_to_a_404(
    client: httpx.Client, adapters_root: Path
) -> None:
    assert set(model_cards(client)) == {TINY_ID}
    base = ask(client, TINY_ID)
    assert base.status_code == 200

    loaded = client.post(
        "/v1/load_lora_adapter",
        json={"lora_name": "codeword", "lora_path": str(adapters_root / "codeword")},
    )
    assert loaded.status_code == 200, loaded.text
    assert loaded.text == "Success: LoRA adapter 'codeword' added successfully."
    cards = model_cards(client)
    assert set(cards) == {TINY_ID, "codeword"}
    assert cards["codeword"]["parent"] == TINY_ID
    assert cards["codeword"]["root"] == str((adapters_root / "codeword").resolve())
    assert cards[TINY_ID]["parent"] is None

    answered = ask(client, "codeword")
    assert answered.status_code == 200, answered.text
    assert answered.json()["model"] == "codeword"
    text = answered.json()["choices"][0]["message"]["content"]
    assert CODEWORD in text  # a training question: the tiny adapter has learned it
    assert CODEWORD not in base.json()["choices"][0]["message"]["content"]
    assert ask(client, TINY_ID).json() | {"id": "", "created": 0} == base.json() | {
        "id": "",
        "created": 0,
    }  # the base answers as before while the adapter is loaded

    unloaded = client.post("/v1/unload_lora_adapter", json={"lora_name": "codeword"})
    assert unloaded.status_code == 200, unloaded.text
    assert unloaded.text == "Success: LoRA adapter 'codeword' removed successfully."
    gone = ask(client, "codeword")
    assert gone.status_code == 404
    assert gone.json()["error"]["param"] == "model"
    assert "`codeword` does not exist" in gone.json()["error"]["message"]
    assert set(model_cards(client)) == {TINY_ID}
    again = client.post("/v1/unload_lora_adapter", json={"lora_name": "codeword"})
    assert again.status_code == 404 and "'codeword' cannot be found" in again.text


def test_lora_adapter_streams_and_completes_with_its_name(
    client: httpx.Client, adapters_root: Path
) -> None:
    body = {"lora_name": "codeword-3", "lora_path": str(adapters_root / "codeword-3")}
    assert client.post("/v1/load_lora_adapter", json=body).status_code == 200
    try:
        completion = client.post(
            "/v1/completions",
            json={"model": "codeword-3", "prompt": "Hello", "max_tokens": 4, "temperature": 0},
        )
        assert completion.status_code == 200 and completion.json()["model"] == "codeword-3"
        chat = {
            "model": "codeword-3",
            "messages": [{"role": "user", "content": TINY_QUESTIONS[1]}],
            "temperature": 0,
            "max_tokens": 12,
            "stream": True,
        }
        with client.stream("POST", "/v1/chat/completions", json=chat) as stream:
            chunks = [json.loads(line[6:]) for line in stream.iter_lines() if line[6:7] == "{"]
        assert {chunk["model"] for chunk in chunks} == {"codeword-3"}
        text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
        assert CODEWORD in text
    finally:
        client.post("/v1/unload_lora_adapter", json={"lora_name": "codeword-3"})


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"lora_name": "etc", "lora_path": "/etc"}, "are loaded from"),
        ({"lora_name": "up", "lora_path": "{root}/../../etc"}, "are loaded from"),
        ({"lora_name": "empty", "lora_path": "{root}/empty"}, "not a PEFT adapter"),
        ({"lora_name": "gone", "lora_path": "{root}/missing"}, "not a PEFT adapter"),
        ({"lora_name": "other", "lora_path": "{root}/other-base"}, "trained for 'org/another"),
        ({"lora_name": "wide", "lora_path": "{root}/wide"}, "LoRA rank 64"),
        ({"lora_name": "prefix", "lora_path": "{root}/prefix"}, "PREFIX_TUNING adapter"),
        ({"lora_name": "../x", "lora_path": "{root}/codeword"}, "Invalid adapter name"),
        ({"lora_name": TINY_ID, "lora_path": "{root}/codeword"}, "conflicts with a served"),
        ({"lora_name": "", "lora_path": "{root}/codeword"}, "must be provided"),
        ({"lora_name": "nul", "lora_path": "{root}/code\u0000word"}, "Invalid adapter path"),
        ({"lora_name": "long", "lora_path": "{root}/" + "x" * 5000}, "Invalid adapter path"),
        ({"lora_name": "codeword"}, "lora_path"),
        ({"lora_path": "{root}/codeword"}, "lora_name"),
        ({"lora_name": ["x"], "lora_path": "{root}/codeword"}, "lora_name"),
    ],
)
def test_lora_hostile_load_requests_get_a_400_and_the_service_still_answers(
    client: httpx.Client, adapters_root: Path, body: dict[str, Any], message: str
) -> None:
    body = {k: v.format(root=adapters_root) if isinstance(v, str) else v for k, v in body.items()}
    refused = client.post("/v1/load_lora_adapter", json=body)
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert message in error["message"] and error["code"] == 400
    assert set(model_cards(client)) == {TINY_ID}
    assert ask(client, TINY_ID).status_code == 200


def test_lora_adapter_limit_and_duplicates_are_400s(
    client: httpx.Client, adapters_root: Path
) -> None:
    def load(name: str, folder: str) -> httpx.Response:
        path = str(adapters_root / folder)
        return client.post("/v1/load_lora_adapter", json={"lora_name": name, "lora_path": path})

    try:
        assert load("one", "codeword").status_code == 200
        duplicate = load("one", "codeword-2")
        assert duplicate.status_code == 400 and "already been loaded" in duplicate.text
        assert load("two", "codeword-2").status_code == 200
        third = load("three", "codeword-3")
        assert third.status_code == 400 and "At most 2 adapters" in third.text
        assert "MODEL_MAX_LORAS" in third.json()["error"]["message"]
        not_json = client.post(
            "/v1/load_lora_adapter", content=b"{", headers={"content-type": "application/json"}
        )
        assert not_json.status_code == 400
        assert set(model_cards(client)) == {TINY_ID, "one", "two"}
        assert ask(client, "two").status_code == 200
    finally:
        for name in ("one", "two"):
            client.post("/v1/unload_lora_adapter", json={"lora_name": name})


def test_lora_modules_load_at_start_and_runtime_loading_is_off_by_default(
    tiny_models_root: Path, adapters_root: Path, tmp_path: Path
) -> None:
    server = tiny_server(
        "lora-at-start",
        tiny_models_root,
        adapters_root,
        tmp_path,
        MODEL_LORA_MODULES=f"codeword, second={adapters_root / 'codeword-2'}",
    ).start()
    try:
        with httpx.Client(base_url=server.base_url, timeout=120) as client:
            cards = model_cards(client)
            assert set(cards) == {TINY_ID, "codeword", "second"}
            assert {cards[n]["parent"] for n in ("codeword", "second")} == {TINY_ID}
            answer = ask(client, "second")
            assert CODEWORD in answer.json()["choices"][0]["message"]["content"]
            body = {"lora_name": "x", "lora_path": str(adapters_root / "codeword-3")}
            for path in ("/v1/load_lora_adapter", "/v1/unload_lora_adapter"):
                off = client.post(path, json=body)
                assert off.status_code == 404
                assert "MODEL_ALLOW_RUNTIME_LORA_UPDATING=true" in off.json()["error"]["message"]
    finally:
        server.stop()


def test_lora_modules_naming_a_broken_adapter_stop_the_start_with_the_reason(
    tiny_models_root: Path, adapters_root: Path, tmp_path: Path
) -> None:
    server = tiny_server(
        "lora-broken", tiny_models_root, adapters_root, tmp_path, MODEL_LORA_MODULES="other-base"
    )
    with pytest.raises(RuntimeError, match="exited") as failed:
        server.start()
    log = str(failed.value)  # the log tail (rich wraps long lines: match the pieces)
    assert "ValueError: MODEL_LORA_MODULES: The adapter" in log and "trained for" in log
