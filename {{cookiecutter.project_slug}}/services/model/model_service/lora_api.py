"""`POST /v1/load_lora_adapter` and `/v1/unload_lora_adapter`, with vLLM's request shapes
and answers (the transformers backend).

Both are admin routes, off unless MODEL_ALLOW_RUNTIME_LORA_UPDATING is true (vLLM's
VLLM_ALLOW_RUNTIME_LORA_UPDATING). Off, they answer 404 in the OpenAI error shape, saying
which setting turns them on. Success is vLLM's plain-text 200 body.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel

from model_service.errors import APIError
from model_service.runtime import Runtime

router = APIRouter()


class LoadLoRAAdapterRequest(BaseModel):
    """vLLM's shape; its other fields (`is_3d_lora_weight`, ...) are ignored, as vLLM
    ignores unknown ones."""

    lora_name: str
    lora_path: str
    load_inplace: bool = False  # vLLM's field: reloading in place is not supported here


class UnloadLoRAAdapterRequest(BaseModel):
    lora_name: str


def runtime_updating(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    if not runtime.settings.allow_runtime_lora_updating:
        raise APIError(
            404,
            f"{request.url.path} is off: loading adapters at run time is an admin "
            "operation; set MODEL_ALLOW_RUNTIME_LORA_UPDATING=true to turn it on.",
        )
    return runtime


UpdatingRuntime = Annotated[Runtime, Depends(runtime_updating)]


@router.post("/v1/load_lora_adapter", response_class=PlainTextResponse)
async def load_lora_adapter(body: LoadLoRAAdapterRequest, runtime: UpdatingRuntime) -> str:
    if not body.lora_name or not body.lora_path:
        raise APIError(400, "Both 'lora_name' and 'lora_path' must be provided.")
    if body.load_inplace:
        raise APIError(
            400, "load_inplace is not supported: unload the adapter, then load it.", "load_inplace"
        )
    await runtime.load_adapter(body.lora_name, Path(body.lora_path))
    return f"Success: LoRA adapter '{body.lora_name}' added successfully."


@router.post("/v1/unload_lora_adapter", response_class=PlainTextResponse)
async def unload_lora_adapter(body: UnloadLoRAAdapterRequest, runtime: UpdatingRuntime) -> str:
    if not body.lora_name:
        raise APIError(400, "'lora_name' needs to be provided to unload a LoRA adapter.")
    await runtime.unload_adapter(body.lora_name)
    return f"Success: LoRA adapter '{body.lora_name}' removed successfully."
