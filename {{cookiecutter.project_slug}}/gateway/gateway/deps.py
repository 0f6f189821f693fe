"""FastAPI dependencies: what a route needs, as `Annotated` aliases that chain
(`StateDep`, `PipelineDep`; the key checks `ApiKey` and `MasterKey` are in auth.py)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from starlette.requests import HTTPConnection

from gateway.pipeline import Pipeline
from gateway.state import GatewayState


# Dependencies are `async def` on purpose: FastAPI runs a plain `def` dependency in a
# worker thread, a thread hop per request (the profile in docs/gateway.md showed it).
async def get_state(connection: HTTPConnection) -> GatewayState:
    state: GatewayState = connection.app.state.gateway
    return state


async def get_pipeline(connection: HTTPConnection) -> Pipeline:
    pipeline: Pipeline = connection.app.state.gateway.pipeline
    return pipeline


StateDep = Annotated[GatewayState, Depends(get_state)]
PipelineDep = Annotated[Pipeline, Depends(get_pipeline)]
