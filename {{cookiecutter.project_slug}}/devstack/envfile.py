"""Write `.env` from `.env.example` with fresh secrets (the post-gen hook and `make env`).

`.env.example` documents every setting and leaves the secrets empty; `.env` is the one
file every command reads (docker compose, `make dev`, `make eval`, `gateway keys`,
`gateway rag`). The cookiecutter post-gen hook writes it when the project is generated,
so no stack ever runs with a key copied from documentation. An existing `.env` is never
overwritten: a re-bake over a project (`cookiecutter -f`) keeps its keys.

Standard library only: the post-gen hook loads this file before anything is installed.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Mapping
from pathlib import Path

HEADER = (
    "# Written from .env.example with fresh secrets (GATEWAY_MASTER_KEY, REDIS_PASSWORD).\n"
    "# Every command of the project reads this file. Never commit it.\n"
)


def new_master_key() -> str:
    return "sk-" + secrets.token_urlsafe(32)


def new_redis_password() -> str:
    # URL-safe characters only: the password also goes into redis:// URLs unquoted.
    return secrets.token_urlsafe(24)


GENERATED: Mapping[str, Callable[[], str]] = {
    "GATEWAY_MASTER_KEY": new_master_key,
    "REDIS_PASSWORD": new_redis_password,
}


def fill_secrets(text: str, generated: Mapping[str, Callable[[], str]] = GENERATED) -> str:
    """`.env.example` text with each empty secret assignment given a fresh value."""
    lines = []
    for line in text.splitlines(keepends=True):
        name, sep, value = line.partition("=")
        if sep and name in generated and value.strip() == "":
            line = f"{name}={generated[name]()}\n"
        lines.append(line)
    return HEADER + "".join(lines)


def write_env(root: Path) -> Path | None:
    """Create root/.env (mode 0600) from root/.env.example; None if .env already exists."""
    target = root / ".env"
    text = (root / ".env.example").read_text()
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return None
    with os.fdopen(fd, "w") as handle:
        handle.write(fill_secrets(text))
    return target
