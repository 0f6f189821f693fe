"""Property: on the tiny model (which writes noise), every answer to a random bounded
JSON schema that ends with `finish_reason: stop` is valid against that schema.

200 schemas: 8 hypothesis examples of 25 schemas each, the 25 sent side by side so they
share batches (and run in the time of a few).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import jsonschema
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

NAMES = st.sampled_from(["id", "name", "tags", "score", "kind", "items", "ok", "note"])
WORDS = st.text(alphabet="abcxyz", min_size=1, max_size=6)


def leaf() -> st.SearchStrategy[dict[str, Any]]:
    bounded = st.integers(-50, 50).flatmap(
        lambda low: st.integers(low, low + 100).map(lambda high: (low, high))
    )
    return st.one_of(
        st.integers(0, 16).map(lambda n: {"type": "string", "maxLength": n}),
        bounded.map(lambda b: {"type": "integer", "minimum": b[0], "maximum": b[1]}),
        bounded.map(lambda b: {"type": "number", "minimum": b[0], "maximum": b[1]}),
        st.just({"type": "boolean"}),
        st.lists(WORDS, min_size=1, max_size=4, unique=True).map(
            lambda words: {"type": "string", "enum": words}
        ),
    )


def objects(children: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    def build(props: dict[str, dict[str, Any]], required: list[bool]) -> dict[str, Any]:
        names = sorted(props)
        return {
            "type": "object",
            "properties": props,
            "required": [n for n, r in zip(names, required, strict=False) if r],
            "additionalProperties": False,
        }

    return st.builds(
        build,
        st.dictionaries(NAMES, children, min_size=1, max_size=3),
        st.lists(st.booleans(), min_size=3, max_size=3),
    )


def schemas() -> st.SearchStrategy[dict[str, Any]]:
    nested = st.recursive(
        leaf(),
        lambda inner: st.one_of(
            objects(inner),
            st.builds(
                lambda items, n: {"type": "array", "items": items, "maxItems": n},
                inner,
                st.integers(0, 3),
            ),
        ),
        max_leaves=6,
    )
    return objects(nested)


@settings(
    max_examples=8,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(batch=st.lists(schemas(), min_size=25, max_size=25))
async def test_every_stopped_answer_validates(tiny_long_service, batch) -> None:
    async def ask(schema: dict[str, Any]) -> tuple[dict[str, Any], Any]:
        body = {
            "model": "tiny",
            "messages": [{"role": "user", "content": "Give me JSON."}],
            "max_tokens": 200,
            "temperature": 1.0,
            "seed": 7,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "s", "schema": schema},
            },
        }
        response = await tiny_long_service.client.post("/v1/chat/completions", json=body)
        assert response.status_code == 200, (schema, response.text)
        return schema, response.json()["choices"][0]

    answers = await asyncio.gather(*(ask(schema) for schema in batch))
    stopped = 0
    for schema, choice in answers:
        if choice["finish_reason"] == "stop":
            stopped += 1
            jsonschema.validate(json.loads(choice["message"]["content"]), schema)
    assert stopped, "no answer finished within max_tokens: the property was never checked"
