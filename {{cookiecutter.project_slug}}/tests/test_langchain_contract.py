"""LangChain's structured output and tool binding through the gateway on the default
stack (gateway → transformers backend with SmolLM2): the fields LangChain sends
(`response_format` json_schema, `tools`, `tool_choice`) pass the gateway and come back
in OpenAI's shape."""

from __future__ import annotations

from typing import Any, Literal

import pytest
from pydantic import BaseModel, Field

pytestmark = pytest.mark.e2e


class Capital(BaseModel):
    """A country's capital city."""

    country: str = Field(max_length=16)
    city: Literal["Paris", "Rome", "Berlin"]


class get_weather(BaseModel):  # LangChain names the tool after the class
    """Get the current weather in a city."""

    city: Literal["Paris", "Rome"]


def chat_model(gateway_server: Any, llm_server: Any) -> Any:
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(
        model=llm_server.model,
        base_url=gateway_server.base_url + "/v1",
        api_key=gateway_server.master_key,
        temperature=0,
        max_tokens=80,
        timeout=300,
    )


def test_with_structured_output_json_schema(gateway_server, llm_server) -> None:
    model = chat_model(gateway_server, llm_server)
    structured = model.with_structured_output(Capital, method="json_schema", strict=True)
    answer = structured.invoke("What is the capital of France?")
    assert isinstance(answer, Capital)  # parsed and validated by LangChain itself
    assert answer.city in ("Paris", "Rome", "Berlin")


def test_bind_tools_returns_tool_calls(gateway_server, llm_server) -> None:
    model = chat_model(gateway_server, llm_server)
    forced = model.bind_tools([get_weather], tool_choice="get_weather")
    message = forced.invoke("What is the weather in Rome?")
    assert [call["name"] for call in message.tool_calls] == ["get_weather"]
    assert message.tool_calls[0]["args"]["city"] in ("Paris", "Rome")
    assert message.tool_calls[0]["id"]
    required = model.bind_tools([get_weather], tool_choice="any", parallel_tool_calls=False)
    message = required.invoke("What is the weather in Paris?")
    assert len(message.tool_calls) == 1 and message.tool_calls[0]["name"] == "get_weather"
    assert message.response_metadata["finish_reason"] == "tool_calls"
