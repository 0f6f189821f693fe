"""Real Redis servers for tests: a plain one and one with vector search.

Each test session starts its own servers on free ports (never the system Redis on
6379). Tests that stop Redis on purpose use `redis_factory` for a private server.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from devstack.redis import server_command
from tests.support.processes import ManagedProcess, free_port


class RedisServer(ManagedProcess):
    def __init__(self, name: str, log_dir: Path, with_search: bool) -> None:
        self.port = free_port()
        self.data_dir = log_dir / f"{name}-data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.with_search = with_search
        super().__init__(name, server_command(self.port, self.data_dir, with_search), log_dir)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        super().start()
        self.wait_until(self.ping, 20, "answering PING")
        return self

    def ping(self) -> bool:
        return bool(redis.Redis.from_url(self.url, socket_timeout=1).ping())

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, decode_responses=True)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A plain Redis server (no modules) shared by the session."""
    server = RedisServer("redis", tmp_path_factory.mktemp("redis"), with_search=False).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_search_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """valkey-server with RediSearch + RedisJSON loaded, shared by the session."""
    server = RedisServer("redis-search", tmp_path_factory.mktemp("redis-search"), True).start()
    yield server
    server.stop()


@pytest.fixture
def redis_factory(tmp_path: Path) -> Iterator[Callable[..., RedisServer]]:
    """Start private servers a test may stop and restart; all stopped at teardown."""
    started: list[RedisServer] = []

    def make(with_search: bool = False) -> RedisServer:
        server = RedisServer(f"redis-{len(started)}", tmp_path, with_search).start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()
