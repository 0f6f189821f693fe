"""Training conversations from chat-format JSONL: the evals dataset format.

One JSON object per line, as `evals/evals/datasets/*.jsonl` and `python -m evals
datasets from-feedback` write them: `input` is the prompt (a string, or a list of
`{"role", "content"}` messages) and `target` the answer to learn (a string; for a list,
the first entry; a JSON object is serialised). A row without `target` (a refusal or
classification row that has only a `label`) is an error naming its line: a label says
how to score an answer, not what to answer. Other fields (`id`, `choices`, `label`,
`context`, `metadata`) are accepted and not used for training.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

Message = dict[str, str]


class DatasetError(ValueError):
    """The dataset cannot be used; the message names the file and line."""


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: str
    content: str


class Row(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str | None = None
    input: str | list[ChatMessage]
    target: str | list[str] | dict[str, Any] | None = None

    def answer(self) -> str | None:
        if isinstance(self.target, dict):
            return json.dumps(self.target, sort_keys=True)
        if isinstance(self.target, list):
            return self.target[0] if self.target else None
        return self.target

    def prompt(self) -> list[Message]:
        if isinstance(self.input, str):
            return [{"role": "user", "content": self.input}]
        return [{"role": m.role, "content": m.content} for m in self.input]


@dataclass(frozen=True)
class Conversation:
    """A prompt and the assistant answer the adapter learns (the only tokens with loss)."""

    prompt: list[Message]
    answer: str

    @property
    def messages(self) -> list[Message]:
        return [*self.prompt, {"role": "assistant", "content": self.answer}]


def load_conversations(path: Path) -> list[Conversation]:
    if not path.is_file():
        raise DatasetError(f"dataset not found: {path}")
    conversations: list[Conversation] = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            conversations.append(_conversation(path, lineno, line))
    if not conversations:
        raise DatasetError(f"dataset is empty: {path}")
    return conversations


def _conversation(path: Path, lineno: int, line: str) -> Conversation:
    try:
        row = Row.model_validate_json(line)
    except ValidationError as exc:
        raise DatasetError(f"{path}:{lineno}: invalid row: {exc}") from exc
    answer = row.answer()
    if not answer:
        raise DatasetError(f"{path}:{lineno}: no `target`: nothing for the adapter to learn")
    prompt = row.prompt()
    if not prompt or prompt[-1]["role"] == "assistant":
        raise DatasetError(f"{path}:{lineno}: `input` must end with a user (or system) turn")
    return Conversation(prompt=prompt, answer=answer)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
