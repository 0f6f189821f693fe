"""Sentence embeddings (task `embed`) with sentence-transformers.

Requests are encoded one batch at a time on a worker thread: the model is small and a
single forward over a request's inputs keeps both cores busy. At most `max_queue`
requests wait behind the running one; more are refused (QueueFull, answered 503).
"""

from __future__ import annotations

import asyncio
import base64
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from model_service.generation import QueueFull, resolve_dtype


@dataclass
class Embeddings:
    vectors: list[np.ndarray[Any, np.dtype[np.float32]]]
    prompt_tokens: int


class EmbeddingEngine:
    def __init__(self, model: Any, max_model_len: int, max_queue: int = 256) -> None:
        self.model = model
        self.tokenizer = model.tokenizer
        self.max_model_len = max_model_len
        self.max_queue = max_queue
        self._in_flight = 0
        self._lock = asyncio.Lock()

    @classmethod
    def load(
        cls, path: Path, dtype: str, max_model_len: int | None, max_queue: int = 256
    ) -> EmbeddingEngine:
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(
            str(path), device="cpu", model_kwargs={"dtype": resolve_dtype(dtype)}
        )
        limit = int(model.max_seq_length or 512)
        return cls(model, min(max_model_len or limit, limit), max_queue)

    def token_counts(self, texts: list[str]) -> list[int]:
        encoded = self.tokenizer(texts, add_special_tokens=True)["input_ids"]
        return [len(ids) for ids in encoded]

    def decode_ids(self, batches: list[list[int]]) -> list[str]:
        return [self.tokenizer.decode(ids, skip_special_tokens=True) for ids in batches]

    async def embed(self, texts: list[str]) -> Embeddings:
        limit = 1 + self.max_queue  # the running request and those waiting for the lock
        if self._in_flight >= limit:
            raise QueueFull(f"{self._in_flight} requests in flight (limit {limit})")
        self._in_flight += 1
        try:
            counts = await asyncio.to_thread(self.token_counts, texts)
            async with self._lock:
                vectors = await asyncio.to_thread(
                    self.model.encode,
                    texts,
                    batch_size=32,
                    convert_to_numpy=True,
                    normalize_embeddings=True,
                    show_progress_bar=False,
                )
        finally:
            self._in_flight -= 1
        return Embeddings([np.asarray(v, dtype=np.float32) for v in vectors], sum(counts))


def shorten(
    vector: np.ndarray[Any, np.dtype[np.float32]], dimensions: int | None
) -> np.ndarray[Any, np.dtype[np.float32]]:
    """OpenAI's `dimensions`: the first `dimensions` values, scaled back to unit length."""
    if dimensions is None or dimensions >= vector.shape[0]:
        return vector
    head = vector[:dimensions]
    norm = float(np.linalg.norm(head))
    return (head / norm).astype(np.float32) if norm > 0 else head


def encode_vector(vector: np.ndarray[Any, np.dtype[np.float32]], fmt: str) -> list[float] | str:
    if fmt == "base64":
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    return [float(x) for x in vector]
