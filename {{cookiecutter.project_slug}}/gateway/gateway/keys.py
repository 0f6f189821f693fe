"""API keys: stored in Redis by SHA-256 hash only, never in plain text.

A key record lives in the hash `gw:key:<sha256>` (no TTL, so `volatile-lru` never
evicts it); `gw:keys` indexes the hashes for listing. Verified records are copied into
process memory for `key_cache_ttl_seconds`: during a Redis outage only those copies
are honoured, so an unverified key never gets in. A copy younger than
`key_refresh_seconds` is used without asking Redis at all (one round trip less per
request); a revoked key therefore stops working within that time on every replica.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway.redis_store import RedisStore, RedisUnavailable

KEY_PREFIX = "gw:key:"
INDEX_KEY = "gw:keys"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def hash_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


def new_api_key() -> str:
    return "sk-gw-" + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class KeyRecord:
    """What the gateway knows about a caller's key (never the key itself)."""

    id: str
    name: str
    models: tuple[str, ...] = ()
    rpm: int | None = None
    tpm: int | None = None
    max_tokens: int | None = None
    expires_at: float | None = None
    created_at: float = field(default_factory=time.time)
    is_master: bool = False
    collections: tuple[str, ...] = ()  # RAG collections it may read; "*": all

    def allows_model(self, model: str) -> bool:
        return not self.models or model in self.models

    def allows_collection(self, collection: str) -> bool:
        """Only granted collections (none by default); the master key reads every one."""
        return self.is_master or "*" in self.collections or collection in self.collections

    def expired(self, now: float | None = None) -> bool:
        return self.expires_at is not None and (now or time.time()) >= self.expires_at

    def to_redis(self, key_hash: str) -> dict[str, str]:
        return {
            "hash": key_hash,
            "id": self.id,
            "name": self.name,
            "models": orjson.dumps(list(self.models)).decode(),
            "rpm": "" if self.rpm is None else str(self.rpm),
            "tpm": "" if self.tpm is None else str(self.tpm),
            "max_tokens": "" if self.max_tokens is None else str(self.max_tokens),
            "expires_at": "" if self.expires_at is None else repr(self.expires_at),
            "created_at": repr(self.created_at),
            "collections": orjson.dumps(list(self.collections)).decode(),
        }

    @classmethod
    def from_redis(cls, data: Mapping[Any, Any]) -> KeyRecord:
        fields = {_text(k): _text(v) for k, v in data.items()}

        def optional_int(name: str) -> int | None:
            raw = fields.get(name, "")
            return int(raw) if raw else None

        expires = fields.get("expires_at", "")
        return cls(
            id=fields["id"],
            name=fields.get("name", ""),
            models=tuple(orjson.loads(fields.get("models") or "[]")),
            rpm=optional_int("rpm"),
            tpm=optional_int("tpm"),
            max_tokens=optional_int("max_tokens"),
            expires_at=float(expires) if expires else None,
            created_at=float(fields.get("created_at") or 0),
            collections=tuple(orjson.loads(fields.get("collections") or "[]")),
        )

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "models": list(self.models),
            "rpm": self.rpm,
            "tpm": self.tpm,
            "max_tokens": self.max_tokens,
            "expires_at": self.expires_at,
            "created_at": self.created_at,
            "collections": list(self.collections),
        }


class KeyLookupUnavailable(Exception):
    """Redis is down and this key has no recent verified copy in memory."""


class InvalidKeyGuard:
    """In memory, per gateway process: keys recently found unknown (answered 401
    without Redis for `cache_seconds`) and each client's count of invalid keys in the
    current minute (429 past `per_client_per_minute`), so a flood of bad keys neither
    loads Redis nor, by timing out there, opens the Redis breaker for everyone."""

    MAX_ENTRIES = 10_000

    def __init__(self, cache_seconds: float, per_client_per_minute: int) -> None:
        self.cache_seconds = cache_seconds
        self.per_client = per_client_per_minute
        self._unknown: dict[str, float] = {}
        self._clients: dict[str, tuple[int, int]] = {}  # client -> (minute, count)

    def known_invalid(self, key_hash: str) -> bool:
        seen = self._unknown.get(key_hash)
        return seen is not None and time.monotonic() - seen < self.cache_seconds

    def remember_invalid(self, key_hash: str) -> None:
        if self.cache_seconds <= 0:
            return
        if len(self._unknown) >= self.MAX_ENTRIES:
            self._unknown.clear()
        self._unknown[key_hash] = time.monotonic()

    def client_blocked(self, client: str) -> bool:
        minute, count = self._clients.get(client, (0, 0))
        return minute == int(time.time() // 60) and count >= self.per_client

    def count_failure(self, client: str) -> None:
        now = int(time.time() // 60)
        minute, count = self._clients.get(client, (now, 0))
        if len(self._clients) >= self.MAX_ENTRIES:
            self._clients.clear()
        self._clients[client] = (now, count + 1 if minute == now else 1)


class KeyStore:
    def __init__(
        self,
        store: RedisStore,
        master_key: str,
        cache_ttl_seconds: float,
        refresh_seconds: float = 0.0,
        invalid: InvalidKeyGuard | None = None,
    ) -> None:
        self.store = store
        self._master_hash = hash_key(master_key)
        self.master = KeyRecord(id="master", name="master", is_master=True, created_at=0.0)
        self._cache_ttl = cache_ttl_seconds
        self._refresh = min(refresh_seconds, cache_ttl_seconds)
        self._verified: dict[str, tuple[KeyRecord, float]] = {}
        self.invalid = invalid or InvalidKeyGuard(0, 1_000_000)

    def is_master(self, api_key: str) -> bool:
        return hmac.compare_digest(hash_key(api_key), self._master_hash)

    async def verify(self, api_key: str) -> KeyRecord | None:
        """The key's record, or None when unknown/expired. Raises KeyLookupUnavailable."""
        key_hash = hash_key(api_key)
        if hmac.compare_digest(key_hash, self._master_hash):
            return self.master
        fresh = self._verified.get(key_hash)
        if fresh is not None and time.monotonic() - fresh[1] < self._refresh:
            return None if fresh[0].expired() else fresh[0]
        if self.invalid.known_invalid(key_hash):
            return None
        try:
            raw = await self._fetch(key_hash)
        except RedisUnavailable:
            return self._verified_copy(key_hash)
        if not raw:
            self._verified.pop(key_hash, None)
            self.invalid.remember_invalid(key_hash)
            return None
        record = KeyRecord.from_redis(raw)
        stored_hash = _text(raw.get(b"hash", b""))
        if not hmac.compare_digest(stored_hash, key_hash) or record.expired():
            return None
        self._remember(key_hash, record)
        return record

    def known_good(self, api_key: str) -> KeyRecord | None:
        """The master key's or a recently verified key's record, without Redis (a client
        over its invalid-key limit may still use a key that works)."""
        key_hash = hash_key(api_key)
        if hmac.compare_digest(key_hash, self._master_hash):
            return self.master
        entry = self._verified.get(key_hash)
        if entry is None or time.monotonic() - entry[1] > self._cache_ttl:
            return None
        return None if entry[0].expired() else entry[0]

    def _remember(self, key_hash: str, record: KeyRecord) -> None:
        if self._cache_ttl <= 0:
            return
        if len(self._verified) > 10_000:
            self._verified.clear()
        self._verified[key_hash] = (record, time.monotonic())

    def _verified_copy(self, key_hash: str) -> KeyRecord:
        entry = self._verified.get(key_hash)
        if entry is None or time.monotonic() - entry[1] > self._cache_ttl:
            raise KeyLookupUnavailable()
        if entry[0].expired():
            raise KeyLookupUnavailable()
        return entry[0]

    async def create(
        self,
        name: str,
        models: list[str] | None = None,
        rpm: int | None = None,
        tpm: int | None = None,
        max_tokens: int | None = None,
        expires_at: float | None = None,
        collections: list[str] | None = None,
    ) -> tuple[str, KeyRecord]:
        api_key = new_api_key()
        key_hash = hash_key(api_key)
        record = KeyRecord(
            id="key_" + key_hash[:12],
            name=name,
            models=tuple(models or ()),
            rpm=rpm,
            tpm=tpm,
            max_tokens=max_tokens,
            expires_at=expires_at,
            collections=tuple(collections or ()),
        )

        async def write(r: Any) -> None:
            async with r.pipeline(transaction=True) as pipe:
                pipe.hset(KEY_PREFIX + key_hash, mapping=record.to_redis(key_hash))
                pipe.sadd(INDEX_KEY, key_hash)
                await pipe.execute()

        await self.store.call(write)
        return api_key, record

    async def list_records(self) -> list[KeyRecord]:
        hashes = await self.store.call(lambda r: r.smembers(INDEX_KEY))
        records = []
        for raw_hash in sorted(hashes):
            key_hash = _text(raw_hash)
            raw = await self._fetch(key_hash)
            if raw:
                records.append(KeyRecord.from_redis(raw))
        return sorted(records, key=lambda rec: rec.created_at)

    async def _fetch(self, key_hash: str) -> Mapping[Any, Any]:
        result: Mapping[Any, Any] = await self.store.call(
            lambda r: r.hgetall(KEY_PREFIX + key_hash)
        )
        return result

    async def revoke(self, id_or_name: str) -> list[KeyRecord]:
        """Delete every key whose id or name matches; returns what was revoked."""
        revoked = []
        for record in await self.list_records():
            if id_or_name in (record.id, record.name):
                key_hash = await self._hash_of(record.id)
                if key_hash is None:
                    continue

                async def delete(r: Any, h: str = key_hash) -> None:
                    async with r.pipeline(transaction=True) as pipe:
                        pipe.delete(KEY_PREFIX + h)
                        pipe.srem(INDEX_KEY, h)
                        await pipe.execute()

                await self.store.call(delete)
                self._verified.pop(key_hash, None)
                revoked.append(record)
        return revoked

    async def _hash_of(self, key_id: str) -> str | None:
        hashes = await self.store.call(lambda r: r.smembers(INDEX_KEY))
        for raw_hash in hashes:
            key_hash = _text(raw_hash)
            if "key_" + key_hash[:12] == key_id:
                return key_hash
        return None
