"""The OpenAI error envelope and the handlers every service installs, in-process."""

from __future__ import annotations

import logging

import httpx
import pytest
from fastapi import FastAPI
from pydantic import BaseModel

from service_common.errors import ServiceError, error_body, install_error_handlers


class TableError(ServiceError):
    """A service's own contract: string types from a table, the status as code."""

    unexpected_message = "The test service failed."

    @classmethod
    def default_type(cls, status: int) -> str:
        return {400: "bad_request", 404: "missing"}.get(status, "other")

    @classmethod
    def default_code(cls, status: int) -> int:
        return status


class Body(BaseModel):
    n: int
    name: str


def app() -> FastAPI:
    application = FastAPI()
    install_error_handlers(application, TableError, logger="test-service")

    @application.post("/items")
    async def items(body: Body) -> dict[str, int]:
        return {"n": body.n}

    @application.get("/limited")
    async def limited() -> None:
        raise TableError(429, "slow down", param="n", code="limited", headers={"retry-after": "2"})

    @application.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret internals")

    return application


@pytest.fixture
async def client() -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


def test_the_envelope_has_exactly_four_fields() -> None:
    assert error_body("no", "invalid_request_error") == {
        "error": {"message": "no", "type": "invalid_request_error", "param": None, "code": None}
    }


def test_an_error_takes_its_type_and_code_from_its_class_unless_given() -> None:
    assert TableError(404, "gone").body()["error"] == {
        "message": "gone", "type": "missing", "param": None, "code": 404,
    }  # fmt: skip
    explicit = TableError(404, "gone", type="custom", code="x").body()["error"]
    assert (explicit["type"], explicit["code"]) == ("custom", "x")
    assert ServiceError(418, "teapot").body()["error"]["type"] == "api_error"


async def test_a_raised_error_is_answered_with_its_status_body_and_headers(client) -> None:
    response = await client.get("/limited")
    assert response.status_code == 429
    assert response.headers["retry-after"] == "2"
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "error": {"message": "slow down", "type": "other", "param": "n", "code": "limited"}
    }


async def test_validation_names_every_problem_and_the_first_param(client) -> None:
    response = await client.post("/items", json={"n": "many"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "n" and error["type"] == "bad_request" and error["code"] == 400
    assert error["message"].startswith("n: ") and "; name: " in error["message"]


async def test_unknown_route_and_method_keep_the_shape(client) -> None:
    missing = await client.get("/nowhere")
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "missing"
    wrong_method = await client.get("/items")
    assert wrong_method.status_code == 405 and wrong_method.json()["error"]["code"] == 405


async def test_an_unexpected_exception_is_logged_and_answered_without_details(
    client, caplog
) -> None:
    with caplog.at_level(logging.ERROR, logger="test-service"):
        response = await client.get("/boom")
    assert response.status_code == 500
    assert response.json()["error"]["message"] == "The test service failed."
    assert "secret internals" not in response.text
    assert "secret internals" in caplog.text  # the traceback is in the log, not the answer
