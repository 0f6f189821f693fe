"""RAG settings, read from `GATEWAY_RAG_*` environment variables (and `.env`)."""

from __future__ import annotations

from functools import lru_cache

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class RagSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="GATEWAY_RAG_", env_file=".env", extra="ignore", populate_by_name=True
    )

    redis_url: str = Field(
        default="redis://127.0.0.1:6380/0",
        validation_alias=AliasChoices("GATEWAY_RAG_REDIS_URL", "GATEWAY_REDIS_URL"),
        description="Redis with vector search (Redis 8, Redis Stack, Valkey + search).",
    )
    redis_timeout_seconds: float = Field(default=5.0, gt=0)
    key_prefix: str = Field(default="rag", pattern=r"^[A-Za-z0-9_-]+$")

    embedding_model: str = Field(
        default="sentence-transformers/all-MiniLM-L6-v2",
        validation_alias=AliasChoices("GATEWAY_RAG_EMBEDDING_MODEL", "GATEWAY_EMBEDDING_MODEL"),
    )
    llm_model: str = "HuggingFaceTB/SmolLM2-135M-Instruct"

    # Where the CLI gets embeddings (the API always uses the gateway it runs in).
    embeddings_base_url: str = "http://127.0.0.1:8001/v1"
    embeddings_api_key: SecretStr | None = None
    embedding_batch_size: int = Field(default=32, ge=1, le=2048)
    request_timeout_seconds: float = Field(default=120.0, gt=0)

    chunk_size: int = Field(default=500, ge=50, description="characters per chunk")
    chunk_overlap: int = Field(default=80, ge=0)
    max_file_bytes: int = Field(default=20_000_000, ge=1)

    top_k: int = Field(default=4, ge=1)
    max_top_k: int = Field(default=20, ge=1)
    # Cosine similarity in [-1, 1]; chunks below it are never shown to the model.
    score_threshold: float = Field(default=0.2, ge=-1.0, le=1.0)

    session_ttl_seconds: int = Field(default=3600, ge=1)
    history_max_messages: int = Field(default=10, ge=0)

    max_tokens: int = Field(default=256, ge=1)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)

    @model_validator(mode="after")
    def _overlap_smaller_than_chunk(self) -> RagSettings:
        if self.chunk_overlap >= self.chunk_size:
            raise ValueError(
                "GATEWAY_RAG_CHUNK_OVERLAP must be smaller than GATEWAY_RAG_CHUNK_SIZE "
                f"({self.chunk_overlap} >= {self.chunk_size})"
            )
        if self.top_k > self.max_top_k:
            raise ValueError("GATEWAY_RAG_TOP_K must not exceed GATEWAY_RAG_MAX_TOP_K")
        return self


@lru_cache
def get_rag_settings() -> RagSettings:
    return RagSettings()
