"""FastAPI dependencies: what a route needs, as `Annotated` aliases that chain
(`StateDep`, `PipelineDep`; the key checks `ApiKey` and `MasterKey` are in auth.py)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from starlette.requests import HTTPConnection

from gateway.pipeline import Pipeline
from gateway.state import GatewayState


def get_state(connection: HTTPConnection) -> GatewayState:
    state: GatewayState = connection.app.state.gateway
    return state


def get_pipeline(connection: HTTPConnection) -> Pipeline:
    return get_state(connection).pipeline


StateDep = Annotated[GatewayState, Depends(get_state)]
PipelineDep = Annotated[Pipeline, Depends(get_pipeline)]
