"""Ingestion into a real Redis with vector search, embeddings from a real HTTP server
(the scripted upstream's deterministic bag-of-words vectors: fast, lexical)."""

from __future__ import annotations

import re
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis
from typer.testing import CliRunner

from gateway.rag.cli import app as rag_cli
from gateway.rag.embeddings import OpenAICompatibleEmbeddings
from gateway.rag.ingest import FileStatus, Ingestor, discover
from gateway.rag.loaders import load_file
from gateway.rag.store import CollectionNotFoundError, InvalidCollectionNameError, VectorStore
from tests.support.gateway import MOCK_EMBEDDER, MockUpstream
from tests.support.processes import free_port
from tests.support.redis import RedisServer

SAMPLE_DOCS = Path(__file__).resolve().parents[1] / "gateway" / "rag" / "sample_docs"


def minimal_pdf(text: str, title: str) -> bytes:
    """A one-page PDF with `text` in Helvetica and `title` in its info dictionary."""
    content = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        f"<< /Title ({title}) >>".encode(),
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R /Info 6 0 R >>\n" % (len(objects) + 1)
    out += b"startxref\n%d\n%%%%EOF\n" % xref
    return bytes(out)


@pytest.fixture(scope="module")
def embed_upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MockUpstream]:
    server = MockUpstream("rag-embed", tmp_path_factory.mktemp("rag-embed")).start()
    yield server
    server.stop()


@pytest.fixture
async def store(redis_search_server: RedisServer) -> AsyncIterator[VectorStore]:
    redis = Redis.from_url(redis_search_server.url)
    yield VectorStore(redis)
    await redis.aclose()


@pytest.fixture
async def ingestor(store: VectorStore, embed_upstream: MockUpstream) -> AsyncIterator[Ingestor]:
    async with httpx.AsyncClient(base_url=f"{embed_upstream.base_url}/v1/") as client:
        yield Ingestor(
            store=store,
            embeddings=OpenAICompatibleEmbeddings(client, MOCK_EMBEDDER),
            chunk_size=800,
            chunk_overlap=120,
            max_file_bytes=1_000_000,
        )


def new_collection() -> str:
    return f"test-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    target = tmp_path / "docs"
    shutil.copytree(SAMPLE_DOCS, target)
    return target


async def test_sample_corpus_ingests_every_file(ingestor: Ingestor, store: VectorStore) -> None:
    collection = new_collection()
    report = await ingestor.ingest(SAMPLE_DOCS, collection)

    sample_files = sorted(p.name for p in SAMPLE_DOCS.iterdir())
    assert sorted(f.source for f in report.files) == sample_files
    assert all(f.status is FileStatus.ADDED and f.chunks > 0 for f in report.files)
    info = await store.info(collection)
    assert info.files == len(sample_files)
    assert info.chunks == report.chunks_written
    # chunks + manifest + dims: nothing else is written per collection
    assert await store.count_keys(collection) == info.chunks + 2


async def test_reingest_is_idempotent_and_replaces_changed_files(
    ingestor: Ingestor, store: VectorStore, docs: Path
) -> None:
    collection = new_collection()
    first = await ingestor.ingest(docs, collection)
    keys_after_first = await store.count_keys(collection)

    again = await ingestor.ingest(docs, collection)
    assert {f.status for f in again.files} == {FileStatus.UNCHANGED}
    assert await store.count_keys(collection) == keys_after_first
    assert (await store.info(collection)).chunks == first.chunks_written

    # A file that shrinks to one chunk must leave none of its old chunks behind.
    before = next(f for f in first.files if f.source == "api-keys.md")
    assert before.chunks > 1
    (docs / "api-keys.md").write_text("# API keys\n\nKeys are rotated every 30 days now.\n")
    changed = await ingestor.ingest(docs, collection)
    statuses = {f.source: f.status for f in changed.files}
    assert statuses.pop("api-keys.md") is FileStatus.UPDATED
    assert set(statuses.values()) == {FileStatus.UNCHANGED}
    assert await store.count_keys(collection) == keys_after_first - before.chunks + 1


async def test_delete_collection_removes_its_keys_and_index(
    ingestor: Ingestor, store: VectorStore, redis_search_server: RedisServer
) -> None:
    kept, doomed = new_collection(), new_collection()
    await ingestor.ingest(SAMPLE_DOCS, kept)
    await ingestor.ingest(SAMPLE_DOCS, doomed)
    kept_keys = await store.count_keys(kept)

    removed = await store.delete_collection(doomed)

    client = redis_search_server.client()
    assert removed > 0
    assert list(client.scan_iter(match=f"rag:collection:{doomed}:*")) == []
    assert store.index_name(doomed) not in client.execute_command("FT._LIST")
    assert doomed not in [c.name for c in await store.collections()]
    assert await store.count_keys(kept) == kept_keys
    with pytest.raises(CollectionNotFoundError):
        await store.delete_collection(doomed)


async def test_unreadable_files_are_reported_not_fatal(ingestor: Ingestor, tmp_path: Path) -> None:
    (tmp_path / "good.md").write_text("# Good\n\nThe backup window opens at 02:00 UTC.\n")
    (tmp_path / "broken.pdf").write_bytes(b"%PDF-1.4 this is not really a pdf")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 cr\xe8me".encode("latin-1"))
    (tmp_path / "empty.html").write_text("<html><body>   </body></html>")
    (tmp_path / "diagram.png").write_bytes(b"\x89PNG\r\n")
    (tmp_path / "manual.pdf").write_bytes(minimal_pdf("Backups are kept for 35 days.", "Backups"))

    report = await ingestor.ingest(tmp_path, new_collection())

    reasons = {f.source: f.reason for f in report.skipped}
    assert set(reasons) == {"broken.pdf", "latin1.txt", "empty.html", "diagram.png"}
    assert reasons["latin1.txt"] == "not UTF-8 text"
    assert reasons["empty.html"] == "no extractable text"
    assert reasons["diagram.png"] == "unsupported file type .png"
    assert reasons["broken.pdf"]  # pypdf's own words
    added = {f.source for f in report.with_status(FileStatus.ADDED)}
    assert added == {"good.md", "manual.pdf"}


def test_loaders_extract_titles_and_text(tmp_path: Path) -> None:
    pdf = tmp_path / "manual.pdf"
    pdf.write_bytes(minimal_pdf("Backups are kept for 35 days.", "Backup policy"))
    loaded_pdf = load_file(pdf)
    assert "Backups are kept for 35 days." in loaded_pdf.text
    assert loaded_pdf.title == "Backup policy"

    html = load_file(SAMPLE_DOCS / "caching.html")
    assert html.title == "Response caching"
    assert "<p>" not in html.text and "Lyrebird team" in html.text
    assert load_file(SAMPLE_DOCS / "api-keys.md").title == "API keys"
    assert load_file(SAMPLE_DOCS / "rate-limits.txt").title == "Rate limits"


async def test_search_filters_by_source_and_threshold(
    ingestor: Ingestor, store: VectorStore
) -> None:
    collection = new_collection()
    await ingestor.ingest(SAMPLE_DOCS, collection)
    vector = await ingestor.embeddings.aembed_query(
        "Lyrebird team Dana Okafor cache hit-rate review"
    )

    hits = await store.search(collection, vector, k=3)
    assert hits[0].source == "caching.html"
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)

    only_keys = await store.search(collection, vector, k=3, sources=["api-keys.md"])
    assert only_keys and {h.source for h in only_keys} == {"api-keys.md"}
    assert await store.search(collection, vector, k=3, score_threshold=0.99) == []


async def test_collection_names_are_validated(ingestor: Ingestor) -> None:
    with pytest.raises(InvalidCollectionNameError):
        await ingestor.ingest(SAMPLE_DOCS, "bad name:*")


def test_cli_ingest_list_delete(
    redis_search_server: RedisServer,
    embed_upstream: MockUpstream,
    docs: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GATEWAY_REDIS_URL", redis_search_server.url)
    monkeypatch.setenv("GATEWAY_RAG_EMBEDDINGS_BASE_URL", f"{embed_upstream.base_url}/v1")
    monkeypatch.setenv("GATEWAY_RAG_EMBEDDING_MODEL", MOCK_EMBEDDER)
    monkeypatch.setenv("COLUMNS", "200")
    (docs / "broken.pdf").write_bytes(b"not a pdf")
    collection = new_collection()
    runner = CliRunner()

    ingested = runner.invoke(rag_cli, ["ingest", str(docs), "--collection", collection])
    assert ingested.exit_code == 0, ingested.output
    assert re.search(r"│\s+7\s+│\s+6\s+│\s+0\s+│\s+0\s+│\s+1\s+│", ingested.output), ingested.output
    assert "broken.pdf" in ingested.output and "skipped files" in ingested.output

    listed = runner.invoke(rag_cli, ["list"])
    assert listed.exit_code == 0 and collection in listed.output

    deleted = runner.invoke(rag_cli, ["delete", collection, "--yes"])
    assert deleted.exit_code == 0, deleted.output
    assert collection not in runner.invoke(rag_cli, ["list"]).output
    missing = runner.invoke(rag_cli, ["delete", collection, "--yes"])
    assert missing.exit_code == 1 and "No collection" in missing.output


def test_cli_reports_unreachable_embedding_service(
    redis_search_server: RedisServer, docs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GATEWAY_REDIS_URL", redis_search_server.url)
    monkeypatch.setenv("GATEWAY_RAG_EMBEDDINGS_BASE_URL", "http://127.0.0.1:9/v1")
    result = CliRunner().invoke(rag_cli, ["ingest", str(docs), "-c", new_collection()])
    assert result.exit_code == 1
    assert (
        "Embedding failed" in result.output and "GATEWAY_RAG_EMBEDDINGS_BASE_URL" in result.output
    )


def test_ingestion_does_not_follow_symlinks_out_of_the_folder(tmp_path: Path) -> None:
    folder, outside = tmp_path / "docs", tmp_path / "outside"
    (folder / "sub").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret.md").write_text("# Secret\nanother tenant's data")
    (folder / "kept.md").write_text("# Kept\nhello")
    (folder / "leak.md").symlink_to(outside / "secret.md")
    (folder / "linked-dir").symlink_to(outside, target_is_directory=True)
    (folder / "sub" / "alias.md").symlink_to(folder / "kept.md")  # inside: followed
    base, files = discover(folder)
    assert base == folder
    assert [f.relative_to(folder).as_posix() for f in files] == ["kept.md", "sub/alias.md"]


def test_cli_masks_the_redis_password(monkeypatch: pytest.MonkeyPatch, docs: Path) -> None:
    # Nothing listens on a fresh free port: the CLI reports Redis as unusable.
    url = f"redis://default:hunter2-secret@127.0.0.1:{free_port()}/0"
    monkeypatch.setenv("GATEWAY_REDIS_URL", url)
    monkeypatch.setenv("COLUMNS", "200")
    result = CliRunner().invoke(rag_cli, ["list"])
    assert result.exit_code == 1
    assert "hunter2-secret" not in result.output
    assert "redis://default:***@127.0.0.1" in result.output
