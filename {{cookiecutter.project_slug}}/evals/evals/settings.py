"""Settings for the evals job, read from `EVALS_*` environment variables (and `.env`)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

PACKAGE_DIR = Path(__file__).resolve().parent


class EvalsSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EVALS_", env_file=".env", extra="ignore")

    base_url: str = Field(
        default="http://127.0.0.1:8080/v1",
        description="OpenAI-compatible base URL including /v1 (the gateway by default).",
    )
    api_key: SecretStr | None = Field(default=None, description="Bearer key for the endpoint.")
    model: str = "HuggingFaceTB/SmolLM2-135M-Instruct"
    embedding_model: str = "sentence-transformers/all-MiniLM-L6-v2"
    embeddings_base_url: str | None = Field(
        default=None,
        description="Where /embeddings lives when not at base_url (a bare model service).",
    )
    judge_model: str | None = Field(default=None, description="Judge model; defaults to `model`.")
    reports_dir: Path = Path("reports")
    suites_dir: Path = PACKAGE_DIR / "suites"
    datasets_dir: Path = PACKAGE_DIR / "datasets"
    # Inside reports/ so that it is git-ignored with the reports.
    cache_dir: Path = Path("reports/.cache")
    cache_enabled: bool = True
    concurrency: int = Field(default=4, ge=1)
    request_timeout_s: float = Field(default=120.0, gt=0)
    max_retries: int = Field(default=4, ge=0)
    max_error_rate: float = Field(
        default=0.1,
        ge=0,
        le=1,
        description="Fraction of failed requests above which the run fails.",
    )
    bypass_gateway_cache: bool = True
    seed: int = 1234
    bootstrap_resamples: int = Field(default=1000, ge=100)
    judge_min_kappa: float = Field(default=0.6, ge=-1, le=1)
    regression_tolerance: float = Field(default=0.02, ge=0)
    noninferiority_margin: float = Field(
        default=0.05,
        ge=0,
        le=1,
        description="How much worse than its base a candidate may be (--margin).",
    )
    baseline: Path | None = Field(
        default=None, description="Baseline report.json for regression checks (--baseline)."
    )
    structured_output: Literal["auto", "required", "off"] | None = Field(
        default=None,
        description="Overrides every suite's structured_output.mode (auto, required, off).",
    )
    slo_profile: Literal["gpu", "cpu"] = "cpu"
    direct_base_url: str | None = Field(
        default=None, description="The model service's own URL, to detect buffering by the gateway."
    )

    # The quality loop (docs/feedback.md): datasets from feedback, online scores.
    online_suite: str = Field(
        default="feedback", description="Suite whose scorers score captured exchanges."
    )
    online_interval_s: float = Field(default=60.0, gt=0, description="Seconds between passes.")
    online_since: str = Field(default="1h", description="How far back a pass looks (7d, 1h).")
    online_max_samples: int = Field(default=500, ge=1, description="Exchanges per pass.")

    @property
    def gateway_root(self) -> str:
        """The gateway's root URL (base_url without /v1), for its admin routes."""
        return self.base_url.rstrip("/").removesuffix("/v1")

    @property
    def effective_judge_model(self) -> str:
        return self.judge_model or self.model

    def auth_headers(self) -> dict[str, str]:
        if self.api_key is None:
            return {}
        return {"authorization": f"Bearer {self.api_key.get_secret_value()}"}
