"""Eval datasets: JSONL files, one sample per line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: str
    content: str


class Sample(BaseModel):
    """One dataset row. `target` is one answer or a list of acceptable answers (or facts)."""

    model_config = ConfigDict(extra="forbid")

    id: str
    input: str | list[ChatMessage]
    target: str | list[str] | dict[str, Any] | None = None
    choices: list[str] | None = None
    label: str | None = None
    context: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)

    @property
    def targets(self) -> list[str]:
        """Targets as a list of strings (a JSON object target is serialised)."""
        if self.target is None:
            return []
        if isinstance(self.target, str):
            return [self.target]
        if isinstance(self.target, dict):
            return [json.dumps(self.target, sort_keys=True)]
        return list(self.target)

    @property
    def category(self) -> str:
        return str(self.metadata.get("category", "all"))


class DatasetError(ValueError):
    pass


def load_dataset(path: Path) -> list[Sample]:
    if not path.is_file():
        raise DatasetError(f"dataset not found: {path}")
    samples: list[Sample] = []
    seen: set[str] = set()
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            sample = Sample.model_validate_json(line)
        except ValidationError as exc:
            raise DatasetError(f"{path}:{lineno}: invalid sample: {exc}") from exc
        if sample.id in seen:
            raise DatasetError(f"{path}:{lineno}: duplicate id {sample.id!r}")
        seen.add(sample.id)
        samples.append(sample)
    if not samples:
        raise DatasetError(f"dataset is empty: {path}")
    return samples
