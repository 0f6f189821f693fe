"""A tiny random chat model, built in the test session: real weights, real tokenizer,
real continuous batching, milliseconds per token."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from model_service.app import create_app
from model_service.settings import ModelSettings

CORPUS = [
    "The capital of France is Paris.",
    "Hello! How can I help you today?",
    "A quick brown fox jumps over the lazy dog.",
    "user assistant system: write a short story about a robot.",
]
SPECIAL = ["<unk>", "<|im_start|>", "<|im_end|>"]
# ChatML, as SmolLM2 uses it; kept in a .jinja file (copied verbatim by cookiecutter).
CHAT_TEMPLATE = (Path(__file__).parent / "chat_template.jinja").read_text().rstrip("\n")


def build_tokenizer() -> Any:
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="<unk>",
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    path = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = build_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,  # room for tool prompts (tests cap max_model_len)
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_settings(tiny_model_dir: Path) -> Callable[..., ModelSettings]:
    def make(**overrides: Any) -> ModelSettings:
        values: dict[str, Any] = {
            "source": str(tiny_model_dir),
            "served_name": "tiny",
            "backend": "transformers",
            "max_model_len": 128,
            "max_num_seqs": 4,
            "max_queue": 4,
            "kv_cache_gib": 0.01,
            "models_dir": tiny_model_dir.parent,
        }
        return ModelSettings(**{**values, **overrides})

    return make


class TinyService:
    """The app with its model loaded, and an HTTP client talking to it in-process."""

    def __init__(self, settings: ModelSettings) -> None:
        self.app = create_app(settings)
        self.runtime = self.app.state.runtime
        self.runtime.load()
        transport = httpx.ASGITransport(app=self.app)
        self.client = httpx.AsyncClient(transport=transport, base_url="http://tiny")

    async def close(self) -> None:
        await self.client.aclose()
        self.runtime.close()


@pytest.fixture(scope="session")
async def tiny_service(tiny_settings: Callable[..., ModelSettings]) -> AsyncIterator[TinyService]:
    service = TinyService(tiny_settings())
    yield service
    await service.close()


@pytest.fixture(scope="session")
async def tiny_long_service(
    tiny_settings: Callable[..., ModelSettings],
) -> AsyncIterator[TinyService]:
    """Room for tool prompts (the tiny tokenizer spends a token on every few bytes)."""
    service = TinyService(
        tiny_settings(max_model_len=2048, max_num_seqs=8, max_queue=32, kv_cache_gib=0.05)
    )
    yield service
    await service.close()


@pytest.fixture(scope="session")
async def tiny_precision_services(
    tiny_settings: Callable[..., ModelSettings],
) -> AsyncIterator[Callable[[str], TinyService]]:
    """The tiny model served in a numeric format, `<dtype>[+<quantization>]`, started on
    first use, with room for tool prompts (as `tiny_long_service`)."""
    services: dict[str, TinyService] = {}

    def get(precision: str) -> TinyService:
        if precision not in services:
            dtype, _, quantization = precision.partition("+")
            settings = tiny_settings(
                max_model_len=2048,
                max_num_seqs=8,
                max_queue=32,
                kv_cache_gib=0.05,
                dtype=dtype,
                quantization=quantization or None,
            )
            services[precision] = TinyService(settings)
        return services[precision]

    yield get
    for service in services.values():
        await service.close()


@pytest.fixture
async def tiny_service_factory(
    tiny_settings: Callable[..., ModelSettings],
) -> AsyncIterator[Callable[..., TinyService]]:
    services: list[TinyService] = []

    def make(**overrides: Any) -> TinyService:
        service = TinyService(tiny_settings(**overrides))
        services.append(service)
        return service

    yield make
    for service in services:
        await service.close()
