"""Bad input gets the documented status in OpenAI's error shape."""

from __future__ import annotations

import httpx
import pytest

from tests.support.gateway import MOCK_LLM, GatewayProcess

HELLO = {"model": MOCK_LLM, "messages": [{"role": "user", "content": "x"}]}


def _post(gateway: GatewayProcess, content: bytes, path: str = "/v1/chat/completions", **headers):
    return httpx.post(
        f"{gateway.base_url}{path}",
        content=content,
        headers={**gateway.headers, "content-type": "application/json", **headers},
    )


def _error(response: httpx.Response) -> dict:
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


def test_malformed_json(mock_gateway: GatewayProcess) -> None:
    response = _post(mock_gateway, b'{"model": "x", "messages": [')
    assert response.status_code == 400
    assert _error(response)["code"] == "invalid_json"


def test_body_must_be_an_object(mock_gateway: GatewayProcess) -> None:
    response = _post(mock_gateway, b"[1, 2]")
    assert response.status_code == 400


def test_huge_body_is_413(mock_gateway: GatewayProcess) -> None:
    response = _post(mock_gateway, b'{"model": "' + b"x" * 2_000_000 + b'"}')
    assert response.status_code == 413
    assert _error(response)["code"] == "body_too_large"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": MOCK_LLM, "messages": "hello"}, "messages"),
        ({"model": MOCK_LLM, "messages": []}, "messages"),
        ({"model": MOCK_LLM, "messages": [{"role": "wizard", "content": "x"}]}, "messages.0.role"),
        (
            {
                "model": MOCK_LLM,
                "messages": [{"role": "user", "content": "x"}],
                "temperature": "hot",
            },
            "temperature",
        ),
        (
            {"model": MOCK_LLM, "messages": [{"role": "user", "content": "x"}], "stream": "yes"},
            "stream",
        ),
        (
            {"model": MOCK_LLM, "messages": [{"role": "user", "content": "x"}], "max_tokens": 0},
            "max_tokens",
        ),
        ({"messages": [{"role": "user", "content": "x"}]}, "model"),
    ],
)
def test_wrong_types_are_400_with_the_param(mock_gateway: GatewayProcess, body, param) -> None:
    response = httpx.post(
        f"{mock_gateway.base_url}/v1/chat/completions", headers=mock_gateway.headers, json=body
    )
    assert response.status_code == 400
    error = _error(response)
    assert error["param"] == param
    assert error["type"] == "invalid_request_error"


def test_unknown_model_is_404(mock_gateway: GatewayProcess) -> None:
    response = httpx.post(
        f"{mock_gateway.base_url}/v1/embeddings",
        headers=mock_gateway.headers,
        json={"model": "no-such-model", "input": "x"},
    )
    assert response.status_code == 404
    assert _error(response)["code"] == "model_not_found"


def test_unknown_route_and_method(mock_gateway: GatewayProcess) -> None:
    missing = httpx.get(f"{mock_gateway.base_url}/v1/nothing-here", headers=mock_gateway.headers)
    wrong_method = httpx.get(
        f"{mock_gateway.base_url}/v1/chat/completions", headers=mock_gateway.headers
    )
    assert missing.status_code == 404 and _error(missing)
    assert wrong_method.status_code == 405 and _error(wrong_method)


def test_invalid_key_is_401_before_the_body_is_read(mock_gateway: GatewayProcess) -> None:
    response = _post(mock_gateway, b"not json", authorization="Bearer sk-wrong")
    assert response.status_code == 401


def test_huge_chunked_body_without_length_is_413(mock_gateway: GatewayProcess) -> None:
    def chunks():
        yield b'{"model": "'
        for _ in range(40):
            yield b"x" * 65536

    response = httpx.post(
        f"{mock_gateway.base_url}/v1/chat/completions",
        content=chunks(),
        headers={**mock_gateway.headers, "content-type": "application/json"},
    )
    assert response.status_code == 413
