"""Request models for validation and the OpenAPI schema.

The gateway validates the fields it interprets and forwards the client's original
JSON otherwise untouched, so fields it does not know (`tools`, `response_format`,
`logprobs`, `echo`, ...) reach the upstream unchanged (`extra="allow"`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, field_validator

# Content part types whose text the model reads, and the field that carries it.
TEXT_PART_FIELDS = {"text": "text", "input_text": "text", "refusal": "refusal"}


class _OpenAIRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    user: str | None = None


class _Generation(_OpenAIRequest):
    stream: StrictBool = False
    stream_options: dict[str, Any] | None = None
    # Strict: "5" or 5.0 would pass validation but reach the caps and the upstream as is.
    max_tokens: StrictInt | None = Field(default=None, ge=1)
    max_completion_tokens: StrictInt | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    n: StrictInt | None = Field(default=None, ge=1, le=128)
    seed: int | None = None
    stop: str | list[str] | None = None
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None

    @field_validator("content", mode="before")
    @classmethod
    def _strict_parts(cls, content: Any) -> Any:
        if isinstance(content, list):
            for index, part in enumerate(content):
                problem = content_part_problem(part)
                if problem:
                    raise ValueError(f"content part {index}: {problem}")
        return content


def content_part_problem(part: Any) -> str | None:
    """Why a content part is invalid, or None. Every text the model reads must be a
    string, so that the guardrails see it; other part types pass as they are."""
    if not isinstance(part, dict) or not isinstance(part.get("type"), str):
        return "must be an object with a string `type`"
    for field in ("text", "refusal"):
        if field in part and not isinstance(part[field], str):
            return f"`{field}` must be a string, not {type(part[field]).__name__}"
    text_field = TEXT_PART_FIELDS.get(part["type"])
    if text_field is not None and text_field not in part:
        return f"a `{part['type']}` part needs a string `{text_field}`"
    return None


class ChatCompletionRequest(_Generation):
    messages: list[ChatMessage] = Field(min_length=1)


class CompletionRequest(_Generation):
    prompt: str | list[str] | list[int] | list[list[int]]


class EmbeddingRequest(_OpenAIRequest):
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: int | None = Field(default=None, ge=1)


def part_text_field(part: Any) -> str | None:
    """The field of a content part holding text the model reads, if any."""
    if isinstance(part, dict):
        field = TEXT_PART_FIELDS.get(str(part.get("type")), "text")
        if isinstance(part.get(field), str):
            return field
    return None


def message_texts(messages: list[dict[str, Any]]) -> list[str]:
    """The texts of chat messages the model reads (string content, text parts)."""
    texts = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            for part in content:
                field = part_text_field(part)
                if field is not None:
                    texts.append(part[field])
    return texts


def map_part_texts(parts: list[Any], change: Callable[[str], str]) -> list[Any]:
    """Content parts with `change` applied to each text the model reads."""
    changed = []
    for part in parts:
        field = part_text_field(part)
        changed.append(part if field is None else {**part, field: change(part[field])})
    return changed


def prompt_texts(prompt: Any) -> list[str]:
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, list):
        return [p for p in prompt if isinstance(p, str)]
    return []


def has_token_ids(prompt: Any) -> bool:
    """Whether a `prompt` / `input` value holds token ids (a list of ints or of lists)."""
    return isinstance(prompt, list) and any(not isinstance(p, str) for p in prompt)
