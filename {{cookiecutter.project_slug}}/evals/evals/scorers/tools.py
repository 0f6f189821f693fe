"""Tool-call scorers, on OpenAI's wire shape (`message.tool_calls[i].function.{name,
arguments}`, `arguments` a JSON string).

A sample's target is `{"name": FUNCTION, "arguments": {...}}`, or `{"name": null}` when
the right answer is text and no call. The first call is the one scored. The tools (and
their parameter schemas) are the suite's `request.tools`, sent with every request.
"""

from __future__ import annotations

import json
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from evals.client import Generation
from evals.datasets import Sample
from evals.scorers.base import Scorer, ScorerConfigError, ScoreResult, ScoringContext
from evals.scorers.structured import same_value


def expected_call(sample: Sample) -> tuple[str | None, dict[str, Any]]:
    """The target's function name (None: no call expected) and arguments."""
    target = sample.target
    if not isinstance(target, dict) or "name" not in target:
        raise ScorerConfigError(f"sample {sample.id}: tool scorers need a target with `name`")
    arguments = target.get("arguments") or {}
    if not isinstance(arguments, dict):
        raise ScorerConfigError(f"sample {sample.id}: target arguments must be an object")
    name = target["name"]
    return (None if name is None else str(name)), arguments


def first_call(generation: Generation) -> tuple[str | None, str | None]:
    """The first tool call's function name and raw arguments string, or (None, None)."""
    if not generation.tool_calls:
        return None, None
    function = generation.tool_calls[0].get("function") or {}
    name, arguments = function.get("name"), function.get("arguments")
    return (
        str(name) if name is not None else None,
        arguments if isinstance(arguments, str) else None,
    )


def parse_arguments(raw: str | None) -> dict[str, Any] | None:
    """The arguments as an object, or None when they are not a JSON object."""
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def tool_parameters(request: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Function name -> parameters schema, from the suite's `request.tools`."""
    schemas: dict[str, dict[str, Any]] = {}
    for tool in request.get("tools") or []:
        function = (tool.get("function") or {}) if isinstance(tool, dict) else {}
        if "name" in function:
            schemas[str(function["name"])] = function.get("parameters") or {"type": "object"}
    if not schemas:
        raise ScorerConfigError("tool scorers need the suite's request.tools")
    return schemas


class ToolName(Scorer):
    """1 when the model called the expected function (exact name), or answered in text
    when no call was expected."""

    async def score(
        self, sample: Sample, generation: Generation, ctx: ScoringContext
    ) -> ScoreResult:
        expected, _ = expected_call(sample)
        called, _ = first_call(generation)
        details = {"called": called, "finish_reason": generation.finish_reason}
        return ScoreResult(float(called == expected), details)


class ToolArgumentsValid(Scorer):
    """1 when the call's arguments are a JSON object valid against the called tool's
    parameters schema. No call where one was expected scores 0; samples expecting no
    call are not scored."""

    async def score(
        self, sample: Sample, generation: Generation, ctx: ScoringContext
    ) -> ScoreResult:
        expected, _ = expected_call(sample)
        called, raw = first_call(generation)
        if expected is None:
            return ScoreResult(None, {"reason": "no call expected"})
        if called is None:
            return ScoreResult(0.0, {"error": "no tool call"})
        schema = tool_parameters(ctx.request).get(called)
        if schema is None:
            return ScoreResult(0.0, {"error": f"unknown tool {called!r}"})
        arguments = parse_arguments(raw)
        if arguments is None:
            return ScoreResult(0.0, {"error": "arguments are not a JSON object"})
        try:
            Draft202012Validator.check_schema(schema)
        except SchemaError as exc:
            raise ScorerConfigError(f"tool {called!r}: invalid schema: {exc.message}") from exc
        errors = list(Draft202012Validator(schema).iter_errors(arguments))
        if errors:
            return ScoreResult(0.0, {"error": errors[0].message})
        return ScoreResult(1.0)


class ToolArgumentAccuracy(Scorer):
    """Share of the target's arguments the call has with equal values (strings compared
    normalised); 0 when the wrong function (or none) was called. Arguments the target
    does not name are not counted (schema validity judges those)."""

    async def score(
        self, sample: Sample, generation: Generation, ctx: ScoringContext
    ) -> ScoreResult:
        expected, target = expected_call(sample)
        called, raw = first_call(generation)
        if expected is None or not target:
            return ScoreResult(None, {"reason": "no arguments expected"})
        if called != expected:
            return ScoreResult(0.0, {"error": f"called {called!r}, expected {expected!r}"})
        arguments = parse_arguments(raw)
        if arguments is None:
            return ScoreResult(0.0, {"error": "arguments are not a JSON object"})
        wrong = [k for k, v in target.items() if not same_value(arguments.get(k), v)]
        return ScoreResult(1 - len(wrong) / len(target), {"wrong_fields": wrong} if wrong else {})
