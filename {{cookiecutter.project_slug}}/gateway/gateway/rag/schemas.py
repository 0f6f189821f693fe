"""Request and response bodies of `POST /v1/rag/chat`."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class RagMessage(BaseModel):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]

    @property
    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class RagChatRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    messages: list[RagMessage] = Field(
        min_length=1,
        description="OpenAI-style messages; the last one is the user's question.",
    )
    collection: str = Field(description="The collection to answer from.")
    session_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        description="Remember the conversation in Redis under this id (per API key).",
    )
    top_k: int | None = Field(default=None, ge=1, description="Chunks to retrieve.")
    score_threshold: float | None = Field(
        default=None, ge=-1.0, le=1.0, description="Minimum cosine similarity of a chunk."
    )
    sources: list[str] | None = Field(
        default=None, description="Only retrieve from these source paths (metadata filter)."
    )
    model: str | None = Field(default=None, description="The LLM; default GATEWAY_RAG_LLM_MODEL.")
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    stream: bool = False


class RagSource(BaseModel):
    path: str
    title: str
    chunk: int
    score: float
    text: str


class RagAnswerMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class RagChoice(BaseModel):
    index: int = 0
    message: RagAnswerMessage
    finish_reason: Literal["stop"] = "stop"


class RagChatResponse(BaseModel):
    id: str
    object: Literal["rag.chat.completion"] = "rag.chat.completion"
    created: int
    model: str
    collection: str
    session_id: str | None
    answer: str
    grounded: bool = Field(description="False when no chunk passed the score threshold.")
    standalone_question: str
    sources: list[RagSource]
    choices: list[RagChoice]
