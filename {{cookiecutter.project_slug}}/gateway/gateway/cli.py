"""Command line: `python -m gateway serve`, `python -m gateway keys create|list|revoke`,
`python -m gateway captures purge` (and `python -m gateway rag ...` when the RAG part
is present)."""

from __future__ import annotations

import asyncio
import importlib
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from gateway.exchange_log import CAPTURE_PREFIX
from gateway.keys import KeyRecord, KeyStore
from gateway.redis_store import RedisStore, RedisUnavailable, masked_url
from gateway.settings import Settings

T = TypeVar("T")
Window = Literal["daily", "weekly", "monthly"]
app = typer.Typer(help="OpenAI-compatible gateway.", no_args_is_help=True)
keys_app = typer.Typer(help="Manage API keys (stored hashed in Redis).", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
captures_app = typer.Typer(help="Captured exchange content (docs/feedback.md).")
app.add_typer(captures_app, name="captures")
console = Console()


def _load_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        messages = "; ".join(str(e.get("msg")) for e in exc.errors())
        console.print(f"[red]Invalid gateway settings:[/red] {messages}")
        raise typer.Exit(2) from None


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Default: GATEWAY_HOST")] = None,
    port: Annotated[int | None, typer.Option(help="Default: GATEWAY_PORT")] = None,
) -> None:
    """Run the gateway (one uvicorn worker; scale with replicas)."""
    import uvicorn

    from gateway.app import create_app
    from gateway.logs import configure_logging

    settings = _load_settings()
    configure_logging(settings.log_level)
    uvicorn.run(
        create_app(settings),
        host=host or settings.host,
        port=port or settings.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_config=None,
        timeout_graceful_shutdown=10,
        backlog=4096,
    )


def _with_keys(fn: Callable[[KeyStore], Awaitable[T]]) -> T:
    settings = _load_settings()

    async def run() -> T:
        # A command may wait longer for Redis than a request does.
        store = RedisStore(settings, timeout_seconds=max(settings.redis_timeout_seconds, 2.0))
        try:
            return await fn(KeyStore(store, settings.master_key, 0))
        finally:
            await store.close()

    try:
        return asyncio.run(run())
    except RedisUnavailable as exc:
        console.print(f"[red]Redis at {masked_url(settings.redis_url)} is unavailable:[/red] {exc}")
        raise typer.Exit(1) from None


def _when(timestamp: float | None) -> str:
    if not timestamp:
        return "-"
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _print_budgets(records: list[KeyRecord]) -> None:
    budgeted = [r for r in records if r.team or r.budget is not None]
    if not budgeted:
        return
    table = Table("id", "name", "team", "budget", "window")
    for r in budgeted:
        budget = f"{r.budget:g}" if r.budget is not None else "-"
        table.add_row(r.id, r.name, r.team or "-", budget, r.budget_window)
    console.print(table)


@keys_app.command("create")
def create_key(
    name: Annotated[str, typer.Option(help="Who or what the key is for.")],
    model: Annotated[
        list[str] | None, typer.Option("--model", help="Allowed model (repeat); default all.")
    ] = None,
    rpm: Annotated[int | None, typer.Option(min=1, help="Requests per minute.")] = None,
    tpm: Annotated[int | None, typer.Option(min=1, help="Tokens per minute.")] = None,
    max_tokens: Annotated[int | None, typer.Option(min=1, help="Cap on max_tokens.")] = None,
    expires_in_days: Annotated[float | None, typer.Option(min=0.0)] = None,
    collection: Annotated[
        list[str] | None,
        typer.Option("--collection", help='RAG collection it may read (repeat; "*": all).'),
    ] = None,
    team: Annotated[str | None, typer.Option(help="Team (shares the team's budget).")] = None,
    budget: Annotated[
        float | None, typer.Option(min=0.0, help="Spend allowed per window (price currency).")
    ] = None,
    budget_window: Annotated[Window, typer.Option(help="When the budget resets.")] = "monthly",
) -> None:
    """Create a key. It is printed once; only its hash is stored."""
    expires_at = time.time() + expires_in_days * 86400 if expires_in_days else None
    grants = collection or []
    api_key, record = _with_keys(
        lambda keys: keys.create(
            name,
            model or [],
            rpm,
            tpm,
            max_tokens,
            expires_at,
            grants,
            team=team,
            budget=budget,
            budget_window=budget_window,
        )
    )
    console.print(
        f"Created {record.id} ({record.name}). Store this key now, it is not shown again:"
    )
    print(api_key)


@keys_app.command("list")
def list_keys() -> None:
    """List keys (ids, names, limits; never the keys)."""
    records = _with_keys(lambda keys: keys.list_records())
    table = Table("id", "name", "models", "rpm", "tpm", "max_tokens", "created", "expires")
    for r in records:
        table.add_row(
            r.id,
            r.name,
            ", ".join(r.models) or "all",
            str(r.rpm or "-"),
            str(r.tpm or "-"),
            str(r.max_tokens or "-"),
            _when(r.created_at),
            _when(r.expires_at),
        )
    console.print(table)
    _print_budgets(records)


@keys_app.command("revoke")
def revoke_key(id_or_name: Annotated[str, typer.Argument(help="Key id or name.")]) -> None:
    """Revoke (delete) keys by id or name."""
    revoked = _with_keys(lambda keys: keys.revoke(id_or_name))
    if not revoked:
        console.print(f"[red]No key with id or name '{id_or_name}'.[/red]")
        raise typer.Exit(1)
    for record in revoked:
        console.print(f"Revoked {record.id} ({record.name}).")


@keys_app.command("team-budget")
def team_budget(
    team: Annotated[str, typer.Argument(help="Team name (as given to keys create --team).")],
    budget: Annotated[
        float | None, typer.Option(min=0.0, help="Spend per window; omit to remove it.")
    ] = None,
    window: Annotated[Window, typer.Option(help="When the budget resets.")] = "monthly",
) -> None:
    """Set the budget a team's keys share."""
    _with_keys(lambda keys: keys.set_team_budget(team, budget, window))
    shown = f"{budget:g} per {window} window" if budget is not None else "no budget"
    console.print(f"Team {team}: {shown}.")


@captures_app.command("purge")
def purge_captures(
    key: Annotated[
        str | None, typer.Option("--key", help="Only this key's captures (name or id).")
    ] = None,
) -> None:
    """Delete captured content (messages and answers) now, of every key or of one."""
    settings = _load_settings()

    async def run() -> int:
        store = RedisStore(settings, timeout_seconds=max(settings.redis_timeout_seconds, 2.0))
        try:
            return int(await store.call(lambda r: _purge(r, key)))
        finally:
            await store.close()

    try:
        deleted = asyncio.run(run())
    except RedisUnavailable as exc:
        console.print(f"[red]Redis at {settings.redis_url} is unavailable:[/red] {exc}")
        raise typer.Exit(1) from None
    console.print(f"Deleted {deleted} captured exchange(s).")


async def _purge(redis: Any, key: str | None) -> int:
    deleted = 0
    async for name in redis.scan_iter(match=CAPTURE_PREFIX + "*", count=500):
        if key is not None:
            owner = await redis.hmget(name, ["key_id", "key_name"])
            if key.encode() not in owner:
                continue
        deleted += await redis.delete(name)
    return deleted


def _add_optional(module: str, name: str) -> None:
    try:
        sub_app = importlib.import_module(module).app
    except ImportError as exc:
        if exc.name and module.startswith(exc.name):
            return
        raise
    app.add_typer(sub_app, name=name)


_add_optional("gateway.rag.cli", "rag")
