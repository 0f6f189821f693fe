"""Console sessions, CSRF tokens and the security headers of every /ui response.

- Sign-in with the master key creates a random session token; the browser holds it in
  an HttpOnly, SameSite=Strict cookie and Redis holds its SHA-256 (TTL
  GATEWAY_CONSOLE_SESSION_SECONDS), so sign-out ends it on every replica.
- Every page sets a random `gw_ui_csrf` cookie (before sign-in too); each form carries
  HMAC(secret, that cookie) and a POST whose field does not match is refused (403).
  The secret is derived from the master key, so replicas agree without sharing state.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from gateway.redis_store import RedisStore, RedisUnavailable

SESSION_COOKIE = "gw_ui_session"
CSRF_COOKIE = "gw_ui_csrf"
SESSION_PREFIX = "gw:ui:session:"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cache-control": "no-store",
}


class Sessions:
    def __init__(self, store: RedisStore, master_key: str, ttl_seconds: int, secure: bool) -> None:
        self.store = store
        self.ttl = ttl_seconds
        self.secure = secure  # production: cookies only over HTTPS
        self._secret = hmac.new(master_key.encode(), b"gateway console", "sha256").digest()

    @staticmethod
    def _redis_key(token: str) -> str:
        return SESSION_PREFIX + hashlib.sha256(token.encode()).hexdigest()

    async def start(self) -> str:
        token = secrets.token_urlsafe(32)
        await self.store.call(lambda r: r.set(self._redis_key(token), "1", ex=self.ttl))
        return token

    async def valid(self, request: Request) -> bool:
        token = request.cookies.get(SESSION_COOKIE)
        if not token:
            return False
        try:
            found = await self.store.call(lambda r: r.exists(self._redis_key(token)))
        except RedisUnavailable:
            return False
        return bool(found)

    async def end(self, request: Request) -> None:
        token = request.cookies.get(SESSION_COOKIE)
        if token:
            await self.store.call(lambda r: r.delete(self._redis_key(token)))

    def csrf_seed(self, request: Request) -> str:
        return request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(24)

    def csrf_token(self, seed: str) -> str:
        return hmac.new(self._secret, seed.encode(), "sha256").hexdigest()

    def csrf_ok(self, request: Request, form: dict[str, str]) -> bool:
        seed = request.cookies.get(CSRF_COOKIE)
        sent = form.get("csrf_token", "") or request.headers.get("x-csrf-token", "")
        return bool(seed) and hmac.compare_digest(sent, self.csrf_token(seed or ""))

    def set_cookies(self, response: Response, seed: str, session: str | None = None) -> None:
        options: dict[str, Any] = {
            "httponly": True,
            "samesite": "strict",
            "path": "/ui",
            "secure": self.secure,
        }
        response.set_cookie(CSRF_COOKIE, seed, **options)
        if session is not None:
            response.set_cookie(SESSION_COOKIE, session, max_age=self.ttl, **options)

    @staticmethod
    def clear(response: Response) -> None:
        response.delete_cookie(SESSION_COOKIE, path="/ui", httponly=True, samesite="strict")
