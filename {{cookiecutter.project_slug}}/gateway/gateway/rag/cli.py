"""`gateway rag ingest|list|delete`: manage RAG collections from the command line.

Embeddings come from `GATEWAY_RAG_EMBEDDINGS_BASE_URL` (default: the embedding service
at http://127.0.0.1:8001/v1; point it at the gateway's /v1 with
`GATEWAY_RAG_EMBEDDINGS_API_KEY` to go through the gateway instead).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, TypeVar

import httpx
import typer
from pydantic import ValidationError
from redis.asyncio import Redis
from redis.exceptions import RedisError
from redisvl.exceptions import RedisSearchError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from gateway.rag.embeddings import EmbeddingError, OpenAICompatibleEmbeddings
from gateway.rag.ingest import FileResult, FileStatus, Ingestor, IngestReport
from gateway.rag.store import (
    CollectionNotFoundError,
    DimensionMismatchError,
    InvalidCollectionNameError,
    VectorStore,
)
from gateway.redis_store import masked_url
from gateway.settings import Settings

T = TypeVar("T")
app = typer.Typer(help="Manage RAG document collections in Redis.", no_args_is_help=True)
console = Console()


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        messages = "; ".join(str(e.get("msg")) for e in exc.errors())
        console.print(f"[red]Invalid gateway settings:[/red] {messages}")
        raise typer.Exit(2) from None


def _run(settings: Settings, work: Callable[[VectorStore], Awaitable[T]]) -> T:
    """Run `work` against the store, turning connection failures into clear messages."""

    async def main() -> T:
        redis = Redis.from_url(
            settings.redis_url,
            socket_timeout=settings.rag_redis_timeout_seconds,
            socket_connect_timeout=settings.rag_redis_timeout_seconds,
        )
        try:
            return await work(VectorStore(redis, settings.rag_key_prefix))
        finally:
            await redis.aclose()

    try:
        return asyncio.run(main())
    except (RedisError, RedisSearchError, OSError) as exc:
        where = masked_url(settings.redis_url)
        console.print(
            f"[red]Redis with vector search is not usable at {where}[/red] "
            f"({type(exc).__name__}: {exc}). Set GATEWAY_REDIS_URL."
        )
        raise typer.Exit(1) from None
    except EmbeddingError as exc:
        console.print(
            f"[red]Embedding failed[/red] at {settings.rag_embeddings_base_url}: {exc}. "
            "Is the embedding service running? (GATEWAY_RAG_EMBEDDINGS_BASE_URL)"
        )
        raise typer.Exit(1) from None
    except (InvalidCollectionNameError, DimensionMismatchError, FileNotFoundError) as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None


@app.command()
def ingest(
    path: Annotated[Path, typer.Argument(help="A file or a folder (searched recursively).")],
    collection: Annotated[str, typer.Option("--collection", "-c", help="Collection name.")],
) -> None:
    """Load, split, embed and store Markdown, text, HTML and PDF files."""
    settings = _settings()
    headers = {}
    if settings.rag_embeddings_api_key is not None:
        headers["authorization"] = f"Bearer {settings.rag_embeddings_api_key.get_secret_value()}"

    async def work(store: VectorStore) -> IngestReport:
        async with httpx.AsyncClient(
            base_url=settings.rag_embeddings_base_url.rstrip("/") + "/",
            headers=headers,
            timeout=settings.rag_request_timeout_seconds,
        ) as client:
            ingestor = Ingestor(
                store=store,
                embeddings=OpenAICompatibleEmbeddings(
                    client, settings.rag_embedding, settings.rag_embedding_batch_size
                ),
                chunk_size=settings.rag_chunk_size,
                chunk_overlap=settings.rag_chunk_overlap,
                max_file_bytes=settings.rag_max_file_bytes,
            )
            with Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("{task.fields[current]}"),
                console=console,
                transient=False,
            ) as progress:
                task = progress.add_task(f"ingest → {collection}", total=None, current="")

                def on_start(total: int) -> None:
                    progress.update(task, total=total)

                def on_file(result: FileResult) -> None:
                    progress.update(task, advance=1, current=result.source)

                return await ingestor.ingest(path, collection, on_file=on_file, on_start=on_start)

    report = _run(settings, work)
    _print_report(report)
    ingested = report.with_status(FileStatus.ADDED, FileStatus.UPDATED, FileStatus.UNCHANGED)
    if report.files and not ingested:
        raise typer.Exit(1)


def _print_report(report: IngestReport) -> None:
    summary = Table(title=f"collection {report.collection}")
    summary.add_column("files", justify="right")
    for status in FileStatus:
        summary.add_column(status.value, justify="right")
    summary.add_column("chunks written", justify="right")
    summary.add_row(
        str(len(report.files)),
        *(str(len(report.with_status(status))) for status in FileStatus),
        str(report.chunks_written),
    )
    console.print(summary)
    if report.skipped:
        skipped = Table(title="skipped files")
        skipped.add_column("file")
        skipped.add_column("reason")
        for result in report.skipped:
            skipped.add_row(result.source, result.reason)
        console.print(skipped)


@app.command("list")
def list_collections() -> None:
    """List collections with their file and chunk counts."""
    settings = _settings()
    infos = _run(settings, lambda store: store.collections())
    if not infos:
        console.print("No collections yet: `gateway rag ingest PATH --collection NAME`.")
        return
    table = Table()
    table.add_column("collection")
    table.add_column("files", justify="right")
    table.add_column("chunks", justify="right")
    for info in infos:
        table.add_row(info.name, str(info.files), str(info.chunks))
    console.print(table)


@app.command()
def delete(
    name: Annotated[str, typer.Argument(help="The collection to delete.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete a collection: its index, chunks and manifest."""
    settings = _settings()
    if not yes:
        typer.confirm(f"Delete collection {name!r} and all its chunks?", abort=True)
    try:
        removed = _run(settings, lambda store: store.delete_collection(name))
    except CollectionNotFoundError:
        console.print(f"[red]No collection named {name!r}.[/red]")
        raise typer.Exit(1) from None
    console.print(f"Deleted collection {name!r} ({removed} keys).")
