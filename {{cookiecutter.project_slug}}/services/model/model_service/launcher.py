"""`serve`: pick the backend, then run vLLM's server or ours."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import uvicorn

from model_service.app import create_app
from model_service.backend import BackendUnavailable, decide
from model_service.settings import ModelSettings
from model_service.sources import SourceError, resolve
from model_service.vllm_server import vllm_argv, vllm_env
from model_service.vllm_tools import tool_args

log = logging.getLogger("model_service")


def serve(settings: ModelSettings) -> int:
    try:
        model_dir = resolve(settings.source, settings.models_dir)
        decision = decide(settings, model_dir)
    except (SourceError, BackendUnavailable) as error:
        log.error("%s", error)
        return 2
    log.info("backend: %s (%s)", decision.backend, decision.reason)
    if decision.backend == "vllm":
        workdir = Path(tempfile.mkdtemp(prefix="model-service-"))
        tools = tool_args(settings, model_dir, workdir)
        argv = vllm_argv(settings, model_dir, gpu=decision.gpu, env=os.environ, tool_args=tools)
        log.info("exec %s", " ".join(argv))
        # Replace this process so signals and exit codes reach vLLM directly.
        os.execve(argv[0], argv, vllm_env(settings))
    return run_transformers(settings)


def run_transformers(settings: ModelSettings) -> int:
    failed = False

    def on_load_failure() -> None:
        nonlocal failed
        failed = True
        server.should_exit = True

    app = create_app(settings, on_load_failure)
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, log_config=None, timeout_graceful_shutdown=10
    )
    server = uvicorn.Server(config)
    server.run()
    return 1 if failed else 0
