"""Property-based API testing with schemathesis against a real gateway process:
whatever it is sent (schema-conforming or not), it never answers 500, and every
error is in OpenAI's shape."""

from __future__ import annotations

from collections import Counter

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from tests.support.gateway import GatewayProcess

BODY_OPERATIONS = {"/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/admin/keys"}


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_server_errors(mock_gateway: GatewayProcess, mode: GenerationMode) -> None:
    schema = schemathesis.openapi.from_url(f"{mock_gateway.base_url}/openapi.json")
    exercised: Counter[str] = Counter()
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=12,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def check(case) -> None:
            response = case.call(
                base_url=mock_gateway.base_url, headers=mock_gateway.headers, timeout=10
            )
            exercised[case.path] += 1
            assert response.status_code != 500, (case.method, case.path, response.text)
            if response.status_code >= 400:
                error = response.json()["error"]
                assert set(error) == {"message", "type", "param", "code"}
                assert isinstance(error["message"], str) and error["message"]

        try:
            check()
        except Unsatisfiable:
            # Negative mode cannot break a request that has nothing to break
            # (e.g. GET /healthz); positive mode must always produce cases.
            assert mode is GenerationMode.NEGATIVE
    assert set(exercised) >= BODY_OPERATIONS, exercised
