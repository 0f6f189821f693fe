"""Suite definitions (YAML): dataset, prompt, request, scorers, thresholds."""

from __future__ import annotations

from pathlib import Path
from string import Template
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from evals.datasets import Sample
from evals.structured_output import StructuredOutputSpec


class PromptSpec(BaseModel):
    """How a sample becomes chat messages.

    `template` uses `$input`, `$choices`, `$context` placeholders (string.Template), so
    literal JSON braces in prompts need no escaping.
    """

    model_config = ConfigDict(extra="forbid")

    system: str | None = None
    template: str = "$input"

    def messages(self, sample: Sample) -> list[dict[str, Any]]:
        if not isinstance(sample.input, str):
            messages = [m.model_dump() for m in sample.input]
            if self.system and not any(m["role"] == "system" for m in messages):
                messages.insert(0, {"role": "system", "content": self.system})
            return messages
        content = Template(self.template).safe_substitute(
            input=sample.input,
            choices=", ".join(sample.choices or []),
            context=sample.context or "",
        )
        out: list[dict[str, Any]] = []
        if self.system:
            out.append({"role": "system", "content": self.system})
        out.append({"role": "user", "content": content})
        return out


class RequestSpec(BaseModel):
    model_config = ConfigDict(extra="allow")

    max_tokens: int = 48
    temperature: float = 0.0


class ScorerSpec(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str
    name: str | None = None

    @property
    def metric_name(self) -> str:
        return self.name or self.type

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class JudgeCalibration(BaseModel):
    model_config = ConfigDict(extra="forbid")

    human_labels: str = Field(description="JSONL in the datasets folder with human verdicts.")
    min_kappa: float | None = None


class Suite(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    dataset: str
    task: Literal["generation", "classification"] = "generation"
    endpoint: Literal["chat", "rag"] = "chat"
    prompt: PromptSpec = Field(default_factory=PromptSpec)
    request: RequestSpec = Field(default_factory=RequestSpec)
    structured_output: StructuredOutputSpec | None = Field(
        None, description="Send this response_format when the endpoint supports it."
    )
    scorers: list[ScorerSpec]
    thresholds: dict[str, float] = Field(default_factory=dict)
    judge_calibration: JudgeCalibration | None = None
    optional: bool = Field(
        False, description="Skip (not fail) when the dataset is absent, e.g. RAG disabled."
    )


class SuiteError(ValueError):
    pass


def available_suites(suites_dir: Path) -> list[str]:
    return sorted(p.stem for p in suites_dir.glob("*.yaml"))


def load_suite(name_or_path: str, suites_dir: Path) -> Suite:
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = suites_dir / f"{name_or_path}.yaml"
    if not path.is_file():
        known = ", ".join(available_suites(suites_dir)) or "none"
        raise SuiteError(f"unknown suite {name_or_path!r} (known: {known})")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        return Suite.model_validate(raw)
    except (yaml.YAMLError, ValidationError) as exc:
        raise SuiteError(f"{path}: {exc}") from exc
