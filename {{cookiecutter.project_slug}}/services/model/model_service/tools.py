"""Tool calls in OpenAI's shape on the transformers backend.

The model writes calls the way vLLM's `hermes` tool parser reads them:

    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call>

`tool_choice` picks the grammar (`grammar.py` compiles it): `required` allows only calls,
`auto` a call or text (text may not start with "<", which is how the grammar tells the
two apart), a named function only that function's arguments (as vLLM does: the output
is the arguments object and `finish_reason` is `stop`), `none` no grammar. One parser
turns generated text into content and calls for streamed and whole answers alike, so a
stream always joins to the whole answer. Tools reach the prompt through the model's
chat template when it uses `tools`, otherwise through `templates/hermes_tools.jinja`.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from model_service.grammar import JSON_LAYOUT, GrammarError, check_schema_bounds

CALL_OPEN = "<tool_call>\n"
CALL_CLOSE = "}\n</tool_call>"
FALLBACK_TEMPLATE = Path(__file__).parent / "templates" / "hermes_tools.jinja"
# Chooses, per conversation, the fallback (tools or tool messages present) or the
# model's own template; kept in a .jinja file, as Python here holds no Jinja.
SWITCH_TEMPLATE = Path(__file__).parent / "templates" / "tool_switch.jinja"

Mode = Literal["none", "auto", "required", "named"]


class ToolError(ValueError):
    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


def call_prefix(name: str) -> str:
    return CALL_OPEN + '{"name": ' + json.dumps(name) + ', "arguments": '


def tool_aware_template(template: str | None) -> str | None:
    """The model's template when it handles tools, else it wrapped with the fallback."""
    if not template or "tools" in template:
        return template
    switch = SWITCH_TEMPLATE.read_text().strip()
    fallback = FALLBACK_TEMPLATE.read_text()
    return switch.replace("@@FALLBACK@@", fallback).replace("@@MODEL_TEMPLATE@@", template)


def new_call_id() -> str:
    return f"chatcmpl-tool-{uuid.uuid4().hex}"


@dataclass(frozen=True)
class ToolPlan:
    mode: Mode
    functions: tuple[dict[str, Any], ...] = ()  # each {"name", "description"?, "parameters"?}
    named: str | None = None
    parallel: bool = True

    @property
    def template_tools(self) -> list[dict[str, Any]] | None:
        """`tools` as chat templates expect them (vLLM passes them unchanged, too)."""
        if not self.functions:
            return None
        return [{"type": "function", "function": f} for f in self.functions]

    def grammar(self) -> str | None:
        if self.mode == "none" or not self.functions:
            return None
        if self.mode == "named":
            return "start: " + json_rule(self.parameters(self.named or ""))
        lines = [f"call_{i}: {call_rule(f)}" for i, f in enumerate(self.functions)]
        lines.append("call: " + " | ".join(f"call_{i}" for i in range(len(self.functions))))
        lines.append('calls: call ("\\n" call)*' if self.parallel else "calls: call")
        if self.mode == "required":
            lines.insert(0, "start: calls")
        else:
            lines.insert(0, "start: TEXT | calls")
            lines.append(r"TEXT: /[^<](.|\n)*/")
        return "\n".join(lines)

    def parameters(self, name: str) -> dict[str, Any]:
        for function in self.functions:
            if function["name"] == name:
                return dict(function.get("parameters") or {"type": "object"})
        raise KeyError(name)


def json_rule(schema: dict[str, Any]) -> str:
    return "%json " + json.dumps({**schema, "x-guidance": JSON_LAYOUT})


def call_rule(function: dict[str, Any]) -> str:
    schema = function.get("parameters") or {"type": "object"}
    prefix = json.dumps(call_prefix(function["name"]))
    return f"{prefix} {json_rule(schema)} {json.dumps(CALL_CLOSE)}"


def plan(
    tools: list[dict[str, Any]] | None, tool_choice: Any, parallel_tool_calls: bool | None
) -> ToolPlan:
    """Check `tools` and `tool_choice` as OpenAI does; 400s name the field."""
    functions = tuple(function_of(tool) for tool in tools or [])
    parallel = parallel_tool_calls is not False
    if tool_choice is None:
        return ToolPlan("auto" if functions else "none", functions, parallel=parallel)
    if tool_choice in ("none", "auto", "required"):
        if tool_choice != "none" and not functions:
            raise ToolError(f"tool_choice {tool_choice!r} needs `tools`", "tool_choice")
        return ToolPlan(tool_choice, functions, parallel=parallel)
    name = named_choice(tool_choice)
    if name not in {f["name"] for f in functions}:
        raise ToolError(f"tool_choice names {name!r}, which is not in `tools`", "tool_choice")
    return ToolPlan("named", functions, named=name, parallel=parallel)


def function_of(tool: Any) -> dict[str, Any]:
    function = tool.get("function") if isinstance(tool, dict) else None
    if tool.get("type", "function") != "function" or not isinstance(function, dict):
        raise ToolError("each tool must be {'type': 'function', 'function': {...}}", "tools")
    name = function.get("name")
    if not isinstance(name, str) or not name:
        raise ToolError("each tool's function needs a `name`", "tools")
    parameters = function.get("parameters")
    if parameters is not None and not isinstance(parameters, dict):
        raise ToolError(f"tool {name!r}: `parameters` must be a JSON schema object", "tools")
    try:
        check_schema_bounds(parameters, "tools")
    except GrammarError as error:
        raise ToolError(f"tool {name!r}: {error}", "tools") from error
    return function


def named_choice(tool_choice: Any) -> str:
    choice = tool_choice if isinstance(tool_choice, dict) else {}
    function = choice.get("function")
    name = function.get("name") if isinstance(function, dict) else None
    if choice.get("type") != "function" or not isinstance(name, str):
        raise ToolError(
            "tool_choice must be none, auto, required or "
            "{'type': 'function', 'function': {'name': ...}}",
            "tool_choice",
        )
    return name


def template_messages(messages: list[Any]) -> list[dict[str, Any]]:
    """Messages as chat templates take them; tool-call arguments become objects, as vLLM
    passes them to templates."""
    out = []
    for message in messages:
        item: dict[str, Any] = {"role": message.role, "content": message.text()}
        extra = message.model_extra or {}
        for key in ("tool_call_id", "name"):
            if extra.get(key) is not None:
                if not isinstance(extra[key], str):
                    raise ValueError(f"a message's {key} must be a string")
                item[key] = extra[key]
        if extra.get("tool_calls"):
            if not isinstance(extra["tool_calls"], list):
                raise ValueError("a message's tool_calls must be a list")
            item["tool_calls"] = [parsed_call(call) for call in extra["tool_calls"]]
        out.append(item)
    return out


def parsed_call(call: Any) -> dict[str, Any]:
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise ValueError("each tool_calls entry needs function.name and function.arguments")
    arguments = function.get("arguments") or "{}"
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except (json.JSONDecodeError, RecursionError) as error:
            raise ValueError(f"tool call arguments are not JSON: {error}") from error
    return {**call, "function": {"name": function["name"], "arguments": arguments}}


# -- generated text to content and calls ---------------------------------------------------


@dataclass
class Call:
    id: str
    name: str
    arguments: str = ""
    closed: bool = False


@dataclass
class Parsed:
    """What a parser found so far; `content` and `calls[i].arguments` only grow."""

    content: str = ""
    calls: list[Call] = field(default_factory=list)


class TextParser:
    """No tools: everything is content."""

    def __init__(self) -> None:
        self.parsed = Parsed()

    def feed(self, text: str, final: bool = False) -> None:
        self.parsed.content += text


class NamedParser(TextParser):
    """A named tool_choice: the whole output is the function's arguments."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.parsed.calls.append(Call(new_call_id(), name))

    def feed(self, text: str, final: bool = False) -> None:
        self.parsed.calls[0].arguments += text


class HermesParser(TextParser):
    """`auto` and `required`: text, or calls in the grammar's exact layout. Holds back
    what may still turn out to be markup, so streamed pieces never need taking back."""

    def __init__(self) -> None:
        super().__init__()
        self._buffer = ""
        self._at = 0  # where the next unread character is
        self._is_text: bool | None = None

    def feed(self, text: str, final: bool = False) -> None:
        self._buffer += text
        if self._is_text is None and self._buffer:
            self._is_text = not self._buffer.startswith("<")
        if self._is_text:
            self.parsed.content += self._buffer[self._at :]
            self._at = len(self._buffer)
            return
        while self._at < len(self._buffer) and self._step(final):
            pass

    def _step(self, final: bool) -> bool:
        calls = self.parsed.calls
        if calls and not calls[-1].closed:
            return self._read_arguments(final)
        rest = self._buffer[self._at :].removeprefix("\n") if calls else self._buffer[self._at :]
        if not rest.startswith('<tool_call>\n{"name": "') or '", "arguments": ' not in rest:
            if final:  # not a call after all (the grammar never lets this happen)
                self.parsed.content += self._buffer[self._at :]
                self._at = len(self._buffer)
            return False
        head, _ = rest.split('", "arguments": ', 1)
        name = json.loads(head.removeprefix('<tool_call>\n{"name": ') + '"')
        skipped = len(self._buffer) - self._at - len(rest)
        self._at += skipped + len(head) + len('", "arguments": ')
        calls.append(Call(new_call_id(), name))
        return True

    def _read_arguments(self, final: bool) -> bool:
        call = self.parsed.calls[-1]
        end = self._buffer.find(CALL_CLOSE, self._at)
        if end >= 0:
            call.arguments += self._buffer[self._at : end]
            self._at = end + len(CALL_CLOSE)
            call.closed = True
            return True
        safe = len(self._buffer) if final else len(self._buffer) - len(CALL_CLOSE)
        if safe > self._at:
            call.arguments += self._buffer[self._at : safe]
            self._at = safe
        call.closed = final
        return False


def parser_for(plan: ToolPlan) -> TextParser:
    if plan.mode == "named" and plan.named:
        return NamedParser(plan.named)
    if plan.mode in ("auto", "required") and plan.functions:
        return HermesParser()
    return TextParser()


def finish_reason(plan: ToolPlan, parsed: Parsed, reason: str | None) -> str | None:
    """OpenAI's and vLLM's: `tool_calls` when calls were made (`stop` for a named one)."""
    if reason == "stop" and parsed.calls and plan.mode in ("auto", "required"):
        return "tool_calls"
    return reason
