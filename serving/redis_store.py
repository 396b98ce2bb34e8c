"""`RedisSessionStore`: sessions in Redis (redis-py), so several API processes share conversations.

One key per session (`<key_prefix><session_id>`) holding the `Session` record as JSON, with a TTL refreshed on
every write. `update` is an optimistic transaction: WATCH the key, read, apply the change, MULTI/SET/EXEC; when
another writer got in between, EXEC fails and the whole read-modify-write is retried (with jittered backoff),
so no concurrent update is lost. A down Redis raises `SessionStoreUnavailableError` (HTTP 503).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

from serving.errors import CorruptSessionError, SessionConflictError, SessionStoreUnavailableError
from serving.session_store import Session, SessionChange, SessionStore, decode_session

log = logging.getLogger(__name__)


class RedisSessionStore(SessionStore):
    """Sessions in the Redis at `url` (redis://host:port/db, rediss://..., unix:///path.sock).

    `timeout_s` bounds connecting and each command (connection errors are retried twice); `max_attempts` bounds how often one update is retried
    while other turns of the same session keep winning (then SessionConflictError, HTTP 409).
    """

    def __init__(
        self,
        url: str,
        *,
        ttl_s: float = 3600.0,
        key_prefix: str = "ilmrec:session:",
        password: str | None = None,
        timeout_s: float = 5.0,
        max_attempts: int = 50,
    ):
        try:
            import redis
            from redis.backoff import EqualJitterBackoff
            from redis.retry import Retry
        except ImportError as exc:  # pragma: no cover - redis is a core dependency
            raise ImportError("RedisSessionStore needs redis-py: pip install 'redis>=5'") from exc
        if ttl_s <= 0 or max_attempts < 1:
            raise ValueError(f"ttl_s must be > 0 and max_attempts >= 1, got {ttl_s} and {max_attempts}")
        self.ttl_s = ttl_s
        self.key_prefix = key_prefix
        self.max_attempts = max_attempts
        parts = urlsplit(url)  # `where` is the URL without credentials, for logs
        self.where = f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}{parts.path}"
        self._redis = redis.Redis.from_url(  # few, short retries: a down Redis should answer 503 quickly
            url, password=password, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
            retry=Retry(EqualJitterBackoff(cap=0.2, base=0.02), retries=2),
        )
        self._watch_error = redis.WatchError
        self._response_error = redis.ResponseError
        self._redis_error = redis.RedisError

    def load(self, session_id: str) -> Session | None:
        with self._translated(session_id):
            raw = self._redis.get(self._key(session_id))
        return None if raw is None else decode_session(session_id, raw)

    def update(self, session_id: str, change: SessionChange) -> Session:
        key = self._key(session_id)
        with self._translated(session_id), self._redis.pipeline() as pipe:
            for attempt in range(self.max_attempts):
                try:
                    pipe.watch(key)
                    raw = pipe.get(key)
                    updated = self._apply(change, None if raw is None else decode_session(session_id, raw))
                    pipe.multi()
                    pipe.set(key, updated.model_dump_json(), px=max(1, round(1000 * self.ttl_s)))
                    pipe.execute()
                    return updated
                except self._watch_error:
                    time.sleep(random.uniform(0, min(0.05, 0.001 * 2**attempt)))
        raise SessionConflictError(
            f"session {session_id!r} kept changing under {self.max_attempts} attempts to save this turn; send "
            "one turn of a session at a time",
            param="session_id",
        )

    def health(self) -> bool:
        try:
            return bool(self._redis.ping())
        except self._redis_error:
            return False

    def close(self) -> None:
        self._redis.close()

    def _key(self, session_id: str) -> str:
        return f"{self.key_prefix}{session_id}"

    @contextmanager
    def _translated(self, session_id: str) -> Iterator[None]:
        """redis-py errors -> CorruptSessionError (a key of another type) or SessionStoreUnavailableError."""
        try:
            yield
        except self._response_error as exc:
            if str(exc).startswith("WRONGTYPE"):
                raise CorruptSessionError(
                    f"stored session {session_id!r} is not an ilmrec session record (a Redis value of another "
                    "type); start a new session by omitting session_id"
                ) from exc
            raise self._unavailable(exc) from exc
        except self._redis_error as exc:
            raise self._unavailable(exc) from exc

    def _unavailable(self, exc: Exception) -> SessionStoreUnavailableError:
        log.warning("Redis session store %s failed: %s", self.where, exc)
        return SessionStoreUnavailableError("the session store (Redis) is unavailable; retry shortly")
