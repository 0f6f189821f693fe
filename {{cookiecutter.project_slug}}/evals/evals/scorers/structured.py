"""JSON output scorers: schema validity and field accuracy against a JSON target."""

from __future__ import annotations

import json
import re
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from evals.client import Generation
from evals.datasets import Sample
from evals.scorers.base import Scorer, ScorerConfigError, ScoreResult, ScoringContext
from evals.scorers.text import normalise

_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL | re.IGNORECASE)


def extract_json(text: str) -> Any:
    """The first JSON value in the output: a fenced block, the whole text, or the first
    object/array that parses. Raises ValueError when there is none."""
    candidates = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    decoder = json.JSONDecoder()
    for candidate in candidates:
        stripped = candidate.strip()
        try:
            return json.loads(stripped)
        except json.JSONDecodeError:
            pass
        for start, char in enumerate(stripped):
            if char in "{[":
                try:
                    value, _ = decoder.raw_decode(stripped, start)
                    return value
                except json.JSONDecodeError:
                    continue
    raise ValueError("no JSON value found in the output")


class JsonSchemaValid(Scorer):
    kind = "json"

    def __init__(self, name: str, options: dict[str, Any]) -> None:
        super().__init__(name, options)
        schema = options.get("schema")
        if not isinstance(schema, dict):
            raise ScorerConfigError("json_schema scorer needs a `schema` mapping")
        try:
            Draft202012Validator.check_schema(schema)
        except SchemaError as exc:
            raise ScorerConfigError(f"invalid JSON schema: {exc.message}") from exc
        self.validator = Draft202012Validator(schema)

    async def score(
        self, sample: Sample, generation: Generation, ctx: ScoringContext
    ) -> ScoreResult:
        try:
            value = extract_json(generation.text)
        except ValueError as exc:
            return ScoreResult(0.0, {"error": str(exc)})
        errors = sorted(self.validator.iter_errors(value), key=lambda e: list(e.path))
        if errors:
            return ScoreResult(0.0, {"error": errors[0].message})
        return ScoreResult(1.0)


class JsonFieldAccuracy(Scorer):
    """Share of the target object's fields that the output's JSON has with the same value
    (strings compared normalised)."""

    async def score(
        self, sample: Sample, generation: Generation, ctx: ScoringContext
    ) -> ScoreResult:
        if not isinstance(sample.target, dict) or not sample.target:
            raise ScorerConfigError(f"sample {sample.id}: json_fields needs a JSON object target")
        try:
            value = extract_json(generation.text)
        except ValueError:
            return ScoreResult(0.0, {"error": "no JSON"})
        if not isinstance(value, dict):
            return ScoreResult(0.0, {"error": "not an object"})
        wrong = [k for k, v in sample.target.items() if not same_value(value.get(k), v)]
        score = 1 - len(wrong) / len(sample.target)
        return ScoreResult(score, {"wrong_fields": wrong} if wrong else {})


def same_value(actual: Any, expected: Any) -> bool:
    """Equal values; strings compared normalised, numbers as numbers."""
    if isinstance(expected, str) and isinstance(actual, str):
        return normalise(actual) == normalise(expected)
    if isinstance(expected, int | float) and isinstance(actual, int | float):
        return float(actual) == float(expected)
    return bool(actual == expected)
