"""Collections of embedded chunks in Redis, indexed for vector search.

Layout under the key prefix P (default `rag`):

- `P:collection:NAME:chunk:<source digest>:<n>`: one hash per chunk (text, source,
  title, chunk position, content hash, float32 embedding), indexed by the search
  index `P:collection:NAME`;
- `P:collection:NAME:files`: the manifest, source path -> content hash and chunk count,
  so re-ingesting an unchanged file is a no-op and a changed one replaces its chunks;
- `P:collections`: the set of collection names.

Writes to one file's chunks run in a MULTI/EXEC transaction, so a search never sees a
file half replaced. RedisVL builds the index and the queries.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redisvl.index import AsyncSearchIndex
from redisvl.query import VectorQuery
from redisvl.query.filter import Tag
from redisvl.redis.utils import array_to_buffer

COLLECTION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
VECTOR_FIELD = "embedding"
RETURN_FIELDS = ["text", "source", "title", "chunk"]


class InvalidCollectionNameError(ValueError):
    pass


class CollectionNotFoundError(LookupError):
    pass


class DimensionMismatchError(ValueError):
    pass


def validate_collection_name(name: str) -> str:
    if not COLLECTION_NAME.match(name):
        raise InvalidCollectionNameError(
            f"invalid collection name {name!r}: use 1-64 letters, digits, '_', '-' or '.', "
            "starting with a letter or digit"
        )
    return name


@dataclass(frozen=True)
class Chunk:
    text: str
    position: int


@dataclass(frozen=True)
class ScoredChunk:
    text: str
    source: str
    title: str
    chunk: int
    score: float  # cosine similarity, 1.0 = same direction


@dataclass(frozen=True)
class CollectionInfo:
    name: str
    files: int
    chunks: int


@dataclass(frozen=True)
class FileRecord:
    content_hash: str
    chunks: int


class VectorStore:
    def __init__(self, redis: Redis, prefix: str = "rag") -> None:
        self.redis = redis
        self.prefix = prefix

    # -- key layout -------------------------------------------------------------
    def index_name(self, collection: str) -> str:
        """The search index's name, which is also the prefix of the collection's keys."""
        return f"{self.prefix}:collection:{collection}"

    def _manifest_key(self, collection: str) -> str:
        return f"{self.index_name(collection)}:files"

    def _registry_key(self) -> str:
        return f"{self.prefix}:collections"

    def _chunk_key(self, collection: str, source: str, position: int) -> str:
        digest = hashlib.sha256(source.encode()).hexdigest()[:24]
        return f"{self.index_name(collection)}:chunk:{digest}:{position}"

    def _index(self, collection: str, dims: int) -> AsyncSearchIndex:
        schema = {
            "index": {
                "name": self.index_name(collection),
                "prefix": f"{self.index_name(collection)}:chunk",
                "storage_type": "hash",
            },
            "fields": [
                {"name": "text", "type": "text"},
                {"name": "title", "type": "text"},
                {"name": "source", "type": "tag"},
                {"name": "content_hash", "type": "tag"},
                {"name": "chunk", "type": "numeric"},
                {
                    "name": VECTOR_FIELD,
                    "type": "vector",
                    "attrs": {
                        "dims": dims,
                        "algorithm": "flat",
                        "distance_metric": "cosine",
                        "datatype": "float32",
                    },
                },
            ],
        }
        return AsyncSearchIndex.from_dict(schema, redis_client=self.redis)

    # -- collections ------------------------------------------------------------
    async def exists(self, collection: str) -> bool:
        return bool(await self.redis.sismember(self._registry_key(), collection))

    async def collections(self) -> list[CollectionInfo]:
        names = sorted(_text(n) for n in await self.redis.smembers(self._registry_key()))
        return [await self.info(name) for name in names]

    async def info(self, collection: str) -> CollectionInfo:
        manifest = await self.files(collection)
        return CollectionInfo(
            name=collection,
            files=len(manifest),
            chunks=sum(record.chunks for record in manifest.values()),
        )

    async def files(self, collection: str) -> dict[str, FileRecord]:
        raw = await self.redis.hgetall(self._manifest_key(collection))
        return {_text(k): FileRecord(**json.loads(v)) for k, v in raw.items()}

    async def file_record(self, collection: str, source: str) -> FileRecord | None:
        raw = await self.redis.hget(self._manifest_key(collection), source)
        return FileRecord(**json.loads(raw)) if raw else None

    async def dims(self, collection: str) -> int | None:
        raw = await self.redis.get(f"{self.index_name(collection)}:dims")
        return int(raw) if raw else None

    async def count_keys(self, collection: str) -> int:
        count = 0
        async for _ in self.redis.scan_iter(match=f"{self.index_name(collection)}:*"):
            count += 1
        return count

    async def delete_collection(self, collection: str) -> int:
        """Drop the index and every key of the collection; returns the keys removed."""
        if not await self.exists(collection):
            raise CollectionNotFoundError(collection)
        removed = 0
        batch: list[Any] = []
        async for key in self.redis.scan_iter(match=f"{self.index_name(collection)}:*"):
            batch.append(key)
            if len(batch) >= 500:
                removed += await self.redis.unlink(*batch)
                batch.clear()
        if batch:
            removed += await self.redis.unlink(*batch)
        if self.index_name(collection) in {
            _text(n) for n in await self.redis.execute_command("FT._LIST")
        }:
            await self.redis.execute_command("FT.DROPINDEX", self.index_name(collection))
        await self.redis.srem(self._registry_key(), collection)
        return removed

    # -- writing ----------------------------------------------------------------
    async def ensure_collection(self, collection: str, dims: int) -> None:
        existing = await self.dims(collection)
        if existing is not None and existing != dims:
            raise DimensionMismatchError(
                f"collection {collection!r} holds {existing}-dimensional embeddings, the "
                f"embedding model returned {dims}: delete the collection or use another name"
            )
        index = self._index(collection, dims)
        if not await index.exists():
            await index.create(overwrite=False)
        await self.redis.set(f"{self.index_name(collection)}:dims", dims)
        await self.redis.sadd(self._registry_key(), collection)

    async def replace_file(
        self,
        collection: str,
        source: str,
        title: str,
        content_hash: str,
        chunks: Sequence[Chunk],
        vectors: Sequence[Sequence[float]],
    ) -> None:
        """Store a file's chunks, removing whatever an earlier version of it left."""
        if len(chunks) != len(vectors):
            raise ValueError(f"{len(chunks)} chunks but {len(vectors)} vectors")
        if vectors:
            await self.ensure_collection(collection, len(vectors[0]))
        previous = await self.file_record(collection, source)
        async with self.redis.pipeline(transaction=True) as pipe:
            if previous is not None:
                stale = [self._chunk_key(collection, source, n) for n in range(previous.chunks)]
                if stale:
                    pipe.unlink(*stale)
            for chunk, vector in zip(chunks, vectors, strict=True):
                pipe.hset(
                    self._chunk_key(collection, source, chunk.position),
                    mapping={
                        "text": chunk.text,
                        "source": source,
                        "title": title,
                        "chunk": chunk.position,
                        "content_hash": content_hash,
                        VECTOR_FIELD: array_to_buffer(list(vector), "float32"),
                    },
                )
            record = {"content_hash": content_hash, "chunks": len(chunks)}
            pipe.hset(self._manifest_key(collection), source, json.dumps(record))
            await pipe.execute()

    # -- reading ----------------------------------------------------------------
    async def search(
        self,
        collection: str,
        vector: Sequence[float],
        k: int,
        score_threshold: float | None = None,
        sources: Sequence[str] | None = None,
    ) -> list[ScoredChunk]:
        """The k nearest chunks, best first, dropping those below the threshold."""
        dims = await self.dims(collection)
        if dims is None:
            raise CollectionNotFoundError(collection)
        if len(vector) != dims:
            raise DimensionMismatchError(
                f"collection {collection!r} holds {dims}-dimensional embeddings, "
                f"the query embedding has {len(vector)}"
            )
        query = VectorQuery(
            vector=list(vector),
            vector_field_name=VECTOR_FIELD,
            return_fields=RETURN_FIELDS,
            filter_expression=Tag("source") == list(sources) if sources else None,
            num_results=k,
        )
        rows = await self._index(collection, dims).query(query)
        results = [
            ScoredChunk(
                text=row["text"],
                source=row["source"],
                title=row["title"],
                chunk=int(row["chunk"]),
                score=1.0 - float(row["vector_distance"]),
            )
            for row in rows
        ]
        if score_threshold is not None:
            results = [r for r in results if r.score >= score_threshold]
        return sorted(results, key=lambda r: r.score, reverse=True)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
