"""Ingest a file or a folder into a collection: load, split, embed, store.

A file's source is its path relative to the folder given (for a single file, its
name), so the same tree ingested from anywhere maps to the same chunks. A file whose
content hash matches the manifest is skipped as unchanged; a changed file replaces its
chunks. Files that cannot be read are reported, never fatal.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from langchain_core.embeddings import Embeddings

from gateway.rag.loaders import SUPPORTED_SUFFIXES, UnreadableFileError, load_file, splitter_for
from gateway.rag.store import Chunk, VectorStore, validate_collection_name
from gateway.rag.telemetry import tracer


class FileTooLargeError(Exception):
    pass


class FileStatus(StrEnum):
    ADDED = "added"
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class FileResult:
    source: str
    status: FileStatus
    chunks: int = 0
    reason: str = ""


@dataclass
class IngestReport:
    collection: str
    files: list[FileResult] = field(default_factory=list)

    def with_status(self, *statuses: FileStatus) -> list[FileResult]:
        return [f for f in self.files if f.status in statuses]

    @property
    def chunks_written(self) -> int:
        return sum(f.chunks for f in self.with_status(FileStatus.ADDED, FileStatus.UPDATED))

    @property
    def skipped(self) -> list[FileResult]:
        return self.with_status(FileStatus.SKIPPED)


def discover(path: Path) -> tuple[Path, list[Path]]:
    """The base folder sources are relative to, and the files under `path`, sorted."""
    if path.is_file():
        return path.parent, [path]
    if path.is_dir():
        root = path.resolve()
        files = sorted(
            p for p in path.rglob("*") if p.is_file() and not _hidden(p, path) and _inside(p, root)
        )
        return path, files
    raise FileNotFoundError(f"no such file or folder: {path}")


def _inside(path: Path, root: Path) -> bool:
    """Whether `path`, its symlinks followed, lies in `root`: a link to a file outside
    the folder (`/etc/passwd`, another tenant's data) is not ingested."""
    return path.resolve().is_relative_to(root)


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def _embedding_text(title: str, chunk: str) -> str:
    # The title names what a chunk is about even when the chunk itself only says "it".
    return f"{title}\n{chunk}"


@dataclass
class Ingestor:
    store: VectorStore
    embeddings: Embeddings
    chunk_size: int
    chunk_overlap: int
    max_file_bytes: int

    async def ingest(
        self,
        path: Path,
        collection: str,
        on_file: Callable[[FileResult], None] | None = None,
        on_start: Callable[[int], None] | None = None,
    ) -> IngestReport:
        validate_collection_name(collection)
        base, files = discover(path)
        report = IngestReport(collection=collection)
        if on_start is not None:
            on_start(len(files))
        with tracer.start_as_current_span("rag.ingest") as span:
            span.set_attribute("rag.collection", collection)
            for file in files:
                result = await self._ingest_file(
                    file, file.relative_to(base).as_posix(), collection
                )
                report.files.append(result)
                if on_file is not None:
                    on_file(result)
            span.set_attribute("rag.files", len(files))
            span.set_attribute("rag.files_skipped", len(report.skipped))
            span.set_attribute("rag.chunks_written", report.chunks_written)
        return report

    async def _ingest_file(self, file: Path, source: str, collection: str) -> FileResult:
        if file.suffix.lower() not in SUPPORTED_SUFFIXES:
            reason = f"unsupported file type {file.suffix or '(none)'}"
            return FileResult(source, FileStatus.SKIPPED, reason=reason)
        try:
            content_hash = await asyncio.to_thread(self._content_hash, file)
        except OSError as exc:
            reason = f"cannot read: {exc.strerror or exc}"
            return FileResult(source, FileStatus.SKIPPED, reason=reason)
        except FileTooLargeError as exc:
            return FileResult(source, FileStatus.SKIPPED, reason=str(exc))
        previous = await self.store.file_record(collection, source)
        if previous is not None and previous.content_hash == content_hash:
            return FileResult(source, FileStatus.UNCHANGED, chunks=previous.chunks)
        try:
            loaded = await asyncio.to_thread(load_file, file)
        except UnreadableFileError as exc:
            return FileResult(source, FileStatus.SKIPPED, reason=str(exc))
        splitter = splitter_for(file, self.chunk_size, self.chunk_overlap)
        texts = splitter.split_text(loaded.text)
        vectors = await self.embeddings.aembed_documents(
            [_embedding_text(loaded.title, text) for text in texts]
        )
        chunks = [Chunk(text=text, position=n) for n, text in enumerate(texts)]
        await self.store.replace_file(
            collection, source, loaded.title, content_hash, chunks, vectors
        )
        status = FileStatus.ADDED if previous is None else FileStatus.UPDATED
        return FileResult(source, status, chunks=len(chunks))

    def _content_hash(self, file: Path) -> str:
        size = file.stat().st_size
        if size > self.max_file_bytes:
            raise FileTooLargeError(
                f"{size} bytes is over GATEWAY_RAG_MAX_FILE_BYTES ({self.max_file_bytes})"
            )
        return hashlib.sha256(file.read_bytes()).hexdigest()
