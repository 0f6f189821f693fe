"""Structured outputs for a suite: send `response_format` when the endpoint takes it.

Support is detected, not configured per endpoint: in `auto` mode every request carries
the suite's `response_format`; when the endpoint answers 400 and the same request
without it succeeds, the endpoint does not support it, and the rest of the suite is
asked by the prompt alone. `required` fails the sample instead; `off` never sends it.
A 400 that the plain request gets as well is the request's fault and is raised as is.
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from evals.client import Generation, OpenAIClient, RequestFailed

Mode = Literal["auto", "required", "off"]


class StructuredOutputSpec(BaseModel):
    """The suite's `structured_output:` block; `response_format` is OpenAI's object as is."""

    model_config = ConfigDict(extra="forbid")

    mode: Mode = "auto"
    response_format: dict[str, Any] = Field(
        description='OpenAI response_format, e.g. {"type": "json_schema", "json_schema": ...}'
    )


class StructuredOutput:
    """One suite run's state: whether the endpoint has refused `response_format`."""

    def __init__(self, spec: StructuredOutputSpec, mode: Mode | None = None) -> None:
        self.response_format = spec.response_format
        self.mode: Mode = mode or spec.mode
        self.refused: str | None = None
        self.constrained = 0
        self.unconstrained = 0
        self._probing = False
        self._probed = asyncio.Event()

    async def chat(
        self, client: OpenAIClient, messages: list[dict[str, Any]], **params: Any
    ) -> Generation:
        if self.mode == "off":
            return await self._plain(client, messages, params)
        if not self._probed.is_set():
            # The first request finds out; the others wait for it, so an endpoint
            # without support sees one refused request, not one per sample in flight.
            if self._probing:
                await self._probed.wait()
            else:
                self._probing = True
                try:
                    return await self._constrained(client, messages, params)
                finally:
                    self._probed.set()
        if self.refused is not None:
            return await self._plain(client, messages, params)
        return await self._constrained(client, messages, params)

    async def _constrained(
        self, client: OpenAIClient, messages: list[dict[str, Any]], params: dict[str, Any]
    ) -> Generation:
        try:
            generation = await client.chat(messages, response_format=self.response_format, **params)
        except RequestFailed as exc:
            if self.mode == "required" or exc.status != 400:
                raise
            generation = await self._plain(client, messages, params)
            self.refused = str(exc)
            return generation
        self.constrained += 1
        return generation

    async def _plain(
        self, client: OpenAIClient, messages: list[dict[str, Any]], params: dict[str, Any]
    ) -> Generation:
        generation = await client.chat(messages, **params)
        self.unconstrained += 1
        return generation

    def note(self) -> str:
        kind = str(self.response_format.get("type", "response_format"))
        total = self.constrained + self.unconstrained
        if self.mode == "off":
            return f"{kind} off: asked by the prompt only"
        text = f"{kind} on {self.constrained}/{total} answered requests (mode {self.mode})"
        if self.refused is not None:
            text += f"; the endpoint refused it ({self.refused}), the rest asked by the prompt"
        return text
