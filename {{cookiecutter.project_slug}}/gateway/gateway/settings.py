"""Gateway settings: environment variables with the `GATEWAY_` prefix (and `.env`).

Every field has a default that runs against the local `make dev` stack. Outside
development the master key must be set to a real secret, or startup stops with a
message naming `GATEWAY_MASTER_KEY`.
"""

from __future__ import annotations

import os
from functools import cached_property
from typing import Literal

from pydantic import AliasChoices, BaseModel, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

EXAMPLE_MASTER_KEY = "sk-dev-master-key-change-me"
DEFAULT_LLM = "HuggingFaceTB/SmolLM2-135M-Instruct"
DEFAULT_EMBEDDER = "sentence-transformers/all-MiniLM-L6-v2"

PiiMode = Literal["off", "redact", "block"]
CacheScope = Literal["key", "shared"]


class UpstreamConfig(BaseModel):
    """One OpenAI-compatible server the gateway may route to."""

    name: str
    base_url: str = Field(description="Server root, with or without a trailing /v1.")
    models: list[str] = Field(
        default_factory=list,
        description="Models it serves; those its /v1/models lists are added when it discovers.",
    )
    weight: float = Field(default=1.0, gt=0)
    api_key_env: str | None = Field(
        default=None, description="Name of an env var holding this upstream's API key."
    )
    cache_salt: bool | None = Field(
        default=None,
        description="Send vLLM's per-tenant `cache_salt`; default: to upstreams without "
        "`api_key_env` (self-hosted vLLM or the model service), not to external providers.",
    )

    discover_models: bool | None = Field(
        default=None,
        description="Route what its /v1/models lists besides `models`; default: upstreams "
        "without `api_key_env` (self-hosted), not external providers.",
    )

    @property
    def discovers(self) -> bool:
        return self.discover_models if self.discover_models is not None else not self.api_key_env

    @property
    def salts_cache(self) -> bool:
        return self.cache_salt if self.cache_salt is not None else self.api_key_env is None

    @property
    def api_base(self) -> str:
        base = self.base_url.rstrip("/")
        return base if base.endswith("/v1") else f"{base}/v1"

    @property
    def api_key(self) -> str | None:
        return os.environ.get(self.api_key_env) if self.api_key_env else None


class ModelPrice(BaseModel):
    """What a model costs, per million tokens, in the price table's currency."""

    input_per_million: float = Field(default=0.0, ge=0, le=1_000_000)
    output_per_million: float = Field(default=0.0, ge=0, le=1_000_000)


def _default_upstreams() -> list[UpstreamConfig]:
    return [
        UpstreamConfig(name="llm", base_url="http://127.0.0.1:8000", models=[DEFAULT_LLM]),
        UpstreamConfig(
            name="embedder", base_url="http://127.0.0.1:8001", models=[DEFAULT_EMBEDDER]
        ),
    ]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="GATEWAY_", env_file=".env", extra="ignore", populate_by_name=True
    )

    # Server
    host: str = "0.0.0.0"
    port: int = Field(default=8080, ge=1, le=65535)
    environment: Literal["development", "production"] = "development"
    master_key: str = Field(
        default=EXAMPLE_MASTER_KEY, description="Admin key, also accepted as a client key."
    )
    log_level: str = "INFO"
    access_log: bool = False

    # Redis
    redis_url: str = Field(
        default="redis://127.0.0.1:6380/0",
        # GATEWAY_RAG_REDIS_URL was RAG's own; still read when GATEWAY_REDIS_URL is unset.
        validation_alias=AliasChoices("GATEWAY_REDIS_URL", "GATEWAY_RAG_REDIS_URL"),
    )
    redis_timeout_seconds: float = Field(
        default=0.25, gt=0, description="Socket and connect timeout of every Redis call."
    )
    redis_breaker_failures: int = Field(
        default=3, ge=1, description="Consecutive failures that open the Redis breaker."
    )
    redis_breaker_reset_seconds: float = Field(
        default=5.0, gt=0, description="How long an open breaker waits before trying Redis again."
    )
    rate_limit_fail_open: bool = Field(
        default=True,
        description="Serve without limits while Redis is down (false: refuse with 503).",
    )
    key_refresh_seconds: float = Field(
        default=2.0,
        ge=0,
        description="Reuse a verified key without asking Redis for this long (0: always ask).",
    )
    key_cache_ttl_seconds: float = Field(
        default=60.0,
        ge=0,
        description="How long a verified key stays usable from memory during a Redis outage.",
    )

    # Spend, budgets and usage (issue 18)
    model_prices: dict[str, ModelPrice] = Field(
        default_factory=dict,
        description='Prices per million tokens, e.g. {"gpt-4o-mini": {"input_per_million": '
        '0.15, "output_per_million": 0.6}}; a model not listed costs 0 (local models).',
    )
    usage_retention_hours: int = Field(
        default=24 * 35,
        ge=1,
        le=24 * 400,
        description="How long hourly usage counters (and closed budget windows) are kept.",
    )
    console_enabled: bool = Field(default=True, description="Serve the web console at /ui.")
    console_session_seconds: int = Field(
        default=8 * 3600, ge=60, description="How long a console sign-in lasts."
    )

    # Upstreams and routing
    upstreams: list[UpstreamConfig] = Field(default_factory=_default_upstreams)
    model_aliases: dict[str, str] = Field(default_factory=dict)
    fallbacks: dict[str, list[str]] = Field(
        default_factory=dict, description="Model -> models to try when it cannot be served."
    )
    models_refresh_seconds: float = Field(
        default=10.0,
        ge=0,
        description="Re-read each discovering upstream's /v1/models this often (0: never).",
    )
    connect_timeout_seconds: float = Field(default=2.0, gt=0)
    read_timeout_seconds: float = Field(default=300.0, gt=0)
    max_retries: int = Field(default=2, ge=0, description="Extra attempts before the first byte.")
    retry_backoff_seconds: float = Field(default=0.1, ge=0)
    upstream_breaker_failures: int = Field(default=5, ge=1)
    upstream_breaker_reset_seconds: float = Field(default=10.0, gt=0)
    max_connections_per_upstream: int = Field(default=512, ge=1)

    # Guardrails
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    max_prompt_chars: int = Field(default=200_000, ge=1)
    max_tokens_cap: int | None = Field(
        default=None, ge=1, description="Default cap on max_tokens for keys without their own."
    )
    default_max_tokens_reserve: int = Field(
        default=256,
        ge=0,
        description="Tokens reserved for the completion when max_tokens is absent.",
    )
    pii_input: PiiMode = "off"
    pii_output: PiiMode = "off"
    deny_terms: list[str] = Field(default_factory=list)
    moderation: str | None = Field(
        default=None, description="Import path `module:factory` of a moderation check."
    )
    guardrail_thread_chars: int = Field(
        default=16_384,
        ge=0,
        description="Prompts longer than this are scanned in a worker thread, off the event loop.",
    )

    # Caches (both)
    cache_scope: CacheScope = Field(
        default="key",
        description="`key`: each API key has its own cache entries; `shared`: keys share them.",
    )

    # Exact cache
    cache_enabled: bool = True
    cache_ttl_seconds: int = Field(default=3600, ge=1)
    cache_version: str = "1"
    cache_only_deterministic: bool = True

    # Semantic cache
    semantic_cache_enabled: bool = False
    embedding_model: str = DEFAULT_EMBEDDER
    semantic_cache_distance_threshold: float = Field(default=0.1, gt=0, le=2)
    semantic_cache_ttl_seconds: int = Field(default=3600, ge=1)
    semantic_cache_single_turn_only: bool = True

    # RAG (used when the project has it: gateway/rag/). Same Redis, one client.
    rag_key_prefix: str = Field(default="rag", pattern=r"^[A-Za-z0-9_-]+$")
    rag_embedding_model: str | None = Field(
        default=None, description="Embedding model for RAG; default GATEWAY_EMBEDDING_MODEL."
    )
    rag_llm_model: str = DEFAULT_LLM
    rag_embeddings_base_url: str = Field(
        default="http://127.0.0.1:8001/v1",
        description="Where the `rag` CLI gets embeddings (the API uses the pipeline).",
    )
    rag_embeddings_api_key: SecretStr | None = None
    rag_embedding_batch_size: int = Field(default=32, ge=1, le=2048)
    rag_request_timeout_seconds: float = Field(
        default=120.0, gt=0, description="Timeout of the `rag` CLI's embedding calls."
    )
    rag_redis_timeout_seconds: float = Field(
        default=5.0, gt=0, description="Redis timeout of the `rag` CLI (ingestion)."
    )
    rag_chunk_size: int = Field(default=500, ge=50, description="characters per chunk")
    rag_chunk_overlap: int = Field(default=80, ge=0)
    rag_max_file_bytes: int = Field(default=20_000_000, ge=1)
    rag_top_k: int = Field(default=4, ge=1)
    rag_max_top_k: int = Field(default=20, ge=1)
    # Cosine similarity in [-1, 1]; chunks below it are never shown to the model.
    rag_score_threshold: float = Field(default=0.2, ge=-1.0, le=1.0)
    rag_session_ttl_seconds: int = Field(default=3600, ge=1)
    rag_history_max_messages: int = Field(default=10, ge=0)
    rag_max_tokens: int = Field(default=256, ge=1)
    rag_temperature: float = Field(default=0.0, ge=0.0, le=2.0)

    # Hardening (issue 14 items 9-11)
    forward_fields: list[str] = Field(
        default_factory=list,
        description="Request fields forwarded besides OpenAI's and vLLM's documented ones.",
    )
    invalid_key_cache_seconds: float = Field(
        default=10.0, ge=0, description="How long a key found unknown is refused without Redis."
    )
    invalid_keys_per_client_per_minute: int = Field(
        default=30, ge=1, description="Invalid keys one client address may send a minute (429)."
    )

    # Telemetry
    capture_content: bool = Field(
        default=False, description="Record prompt and completion text in traces (off by default)."
    )

    # Exchange records, content capture and feedback (docs/feedback.md)
    exchange_log_enabled: bool = Field(
        default=True, description="Keep a compact record of every request (no content)."
    )
    exchange_stream_max_len: int = Field(
        default=10_000, ge=10, description="Records (and feedback entries) kept at most."
    )
    exchange_max_age_seconds: int = Field(
        default=7 * 86400, ge=60, description="Records and feedback older than this go."
    )
    capture_sample_rate: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="Share of requests whose messages and answer are kept (0: none).",
    )
    capture_key_rates: dict[str, float] = Field(
        default_factory=dict, description="Key name or id -> its own capture rate."
    )
    capture_ttl_seconds: int = Field(
        default=7 * 86400, ge=60, description="How long captured content is kept."
    )
    exchange_reader_keys: list[str] = Field(
        default_factory=list,
        description="Key names that may read /admin/exchanges besides the master key.",
    )

    @model_validator(mode="after")
    def _refuse_example_secrets(self) -> Settings:
        if self.environment != "development" and self.master_key in ("", EXAMPLE_MASTER_KEY):
            raise ValueError(
                "GATEWAY_MASTER_KEY must be set to a secret of your own outside development "
                f"(GATEWAY_ENVIRONMENT={self.environment}); generate one with "
                "`python -c 'import secrets; print(\"sk-\" + secrets.token_urlsafe(32))'`."
            )
        if self.rag_chunk_overlap >= self.rag_chunk_size:
            raise ValueError(
                "GATEWAY_RAG_CHUNK_OVERLAP must be smaller than GATEWAY_RAG_CHUNK_SIZE "
                f"({self.rag_chunk_overlap} >= {self.rag_chunk_size})"
            )
        if self.rag_top_k > self.rag_max_top_k:
            raise ValueError("GATEWAY_RAG_TOP_K must not exceed GATEWAY_RAG_MAX_TOP_K")
        if any(not 0 <= rate <= 1 for rate in self.capture_key_rates.values()):
            raise ValueError("GATEWAY_CAPTURE_KEY_RATES: every rate must be within [0, 1]")
        self._check_upstreams()
        return self

    def _check_upstreams(self) -> None:
        if 0 < self.models_refresh_seconds < 0.1:
            raise ValueError("GATEWAY_MODELS_REFRESH_SECONDS: 0 (off) or at least 0.1")
        names = [u.name for u in self.upstreams]
        if len(names) != len(set(names)):
            raise ValueError("GATEWAY_UPSTREAMS: upstream names must be unique")
        for upstream in self.upstreams:
            if not upstream.models and not (upstream.discovers and self.models_refresh_seconds):
                raise ValueError(
                    f"GATEWAY_UPSTREAMS: upstream '{upstream.name}' needs `models`: it lists "
                    "none and does not discover them (discover_models false, or "
                    "GATEWAY_MODELS_REFRESH_SECONDS=0)"
                )

    @property
    def rag_embedding(self) -> str:
        """The embedding model RAG uses: its own when set, else the gateway's."""
        return self.rag_embedding_model or self.embedding_model

    @cached_property
    def served_models(self) -> list[str]:
        seen: dict[str, None] = {}
        for upstream in self.upstreams:
            for model in upstream.models:
                seen.setdefault(model, None)
        return list(seen)
