"""Where conversations live between turns: one versioned `Session` record per session id.

A record holds the dialogue state, the turns so far (user message, reply, recommended ids) and the owner
(the API key that created it). `SessionStore` is the interface: `load` and an atomic read-modify-write
`update` are what a store implements; `get`, `put`, `append` and `history` are built on them.
`InMemorySessionStore` is the in-process default; `serving.redis_store.RedisSessionStore` is the twin that
several API processes can share. `open_session_store` picks one from a `SessionStoreConfig`.

Both stores keep records as JSON and validate them with pydantic on every read, so a record never aliases
a caller's objects and an unreadable one raises `CorruptSessionError` instead of crashing a turn.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from serving.config import SessionStoreConfig
from serving.dialogue import DialogueState
from serving.errors import CorruptSessionError

log = logging.getLogger(__name__)

SESSION_ID_PATTERN = r"^[A-Za-z0-9_-]{1,128}$"
"""Session ids are URL-safe tokens; the service mints them with `secrets.token_urlsafe`."""

SESSION_SCHEMA_VERSION = 1
"""Version of the stored `Session` record; bump it on incompatible changes."""


class TurnRecord(BaseModel):
    """One completed turn, as logged for replay and evaluation."""

    model_config = ConfigDict(extra="forbid")

    user: str = Field(description="The user's message.")
    reply: str = Field(description="The full reply text sent back.")
    recommended: list[int] = Field(default_factory=list, description="Catalogue ids recommended this turn.")
    created: float = Field(default_factory=time.time, description="Unix time the turn finished.")


class Session(BaseModel):
    """Everything stored for one conversation."""

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = Field(SESSION_SCHEMA_VERSION, description="Version of this record's schema.")
    owner: str | None = Field(
        None, description="Fingerprint of the API key that created the session (never the key itself); None "
        "when the API runs without keys. Only the same owner may continue the session."
    )
    revision: int = Field(0, ge=0, description="Writes so far; the store increments it on every update.")
    state: DialogueState = Field(default_factory=DialogueState, description="The dialogue state after the last turn.")
    turns: list[TurnRecord] = Field(default_factory=list, description="Message history and recommendation log.")


SessionChange = Callable[[Session | None], Session]
"""Maps the stored session (None when unknown or expired) to the one to store. Must be pure: it may run
more than once when concurrent updates collide."""


def decode_session(session_id: str, raw: str | bytes) -> Session:
    """Validate a stored record; CorruptSessionError (with what is wrong) when it is not a current Session."""
    try:
        return Session.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise CorruptSessionError(
            f"stored session {session_id!r} is not a valid ilmrec session record (schema version "
            f"{SESSION_SCHEMA_VERSION}): {where + ': ' if where else ''}{first['msg']}; start a new session by "
            "omitting session_id"
        ) from exc


class SessionStore(ABC):
    """Sessions by id. A session expires `ttl_s` seconds after its last write."""

    ttl_s: float

    @abstractmethod
    def load(self, session_id: str) -> Session | None:
        """The stored session, or None when unknown or expired."""

    @abstractmethod
    def update(self, session_id: str, change: SessionChange) -> Session:
        """Atomically read the session, apply `change`, store the result with `revision + 1` and a fresh
        expiry, and return what was stored. Concurrent updates of one session never lose each other's writes."""

    def health(self) -> bool:
        """Whether the store can serve right now."""
        return True

    def close(self) -> None:
        """Release connections; the store is unusable afterwards."""

    def get(self, session_id: str) -> DialogueState | None:
        """The session's dialogue state, or None when unknown or expired."""
        session = self.load(session_id)
        return session.state if session else None

    def history(self, session_id: str) -> list[TurnRecord]:
        """The session's turns, oldest first; empty when unknown or expired."""
        session = self.load(session_id)
        return session.turns if session else []

    def put(self, session_id: str, state: DialogueState) -> None:
        """Create or replace the session's state."""
        self.update(session_id, lambda s: (s or Session()).model_copy(update={"state": state}))

    def append(self, session_id: str, record: TurnRecord) -> None:
        """Add a turn to the session's log."""
        def add(session: Session | None) -> Session:
            session = session or Session()
            return session.model_copy(update={"turns": [*session.turns, record]})

        self.update(session_id, add)

    @staticmethod
    def _apply(change: SessionChange, current: Session | None) -> Session:
        """`change(current)` with the revision bumped: the shared step of every store's `update`."""
        updated = change(current)
        return updated.model_copy(update={"revision": (current.revision if current else 0) + 1})


@dataclass
class _Entry:
    raw: str
    touched: float


class InMemorySessionStore(SessionStore):
    """A dict of JSON records under one lock, with expiry and a size cap: past `max_sessions`, the least
    recently written goes. Lost on restart and not shared between processes."""

    def __init__(self, ttl_s: float = 3600.0, max_sessions: int = 10_000,
                 clock: Callable[[], float] = time.monotonic):
        if ttl_s <= 0 or max_sessions < 1:
            raise ValueError(f"ttl_s must be > 0 and max_sessions >= 1, got {ttl_s} and {max_sessions}")
        self.ttl_s = ttl_s
        self.max_sessions = max_sessions
        self._clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.Lock()

    def load(self, session_id: str) -> Session | None:
        with self._lock:
            entry = self._live(session_id)
        return None if entry is None else decode_session(session_id, entry.raw)

    def update(self, session_id: str, change: SessionChange) -> Session:
        with self._lock:
            entry = self._live(session_id)
            updated = self._apply(change, None if entry is None else decode_session(session_id, entry.raw))
            self._entries[session_id] = _Entry(updated.model_dump_json(), self._clock())
            self._entries.move_to_end(session_id)
            self._expire()
            while len(self._entries) > self.max_sessions:
                self._entries.popitem(last=False)
        return updated

    def __len__(self) -> int:
        with self._lock:
            self._expire()
            return len(self._entries)

    def _live(self, session_id: str) -> _Entry | None:
        entry = self._entries.get(session_id)
        if entry is not None and self._clock() - entry.touched > self.ttl_s:
            del self._entries[session_id]
            return None
        return entry

    def _expire(self) -> None:
        """Drop expired sessions from the old end (ordered by last write)."""
        now = self._clock()
        while self._entries:
            oldest_id, oldest = next(iter(self._entries.items()))
            if now - oldest.touched <= self.ttl_s:
                break
            del self._entries[oldest_id]


def open_session_store(config: SessionStoreConfig) -> SessionStore:
    """The store `config.url` names: `memory`, or Redis (warns, without failing, when it is not reachable yet)."""
    if config.url == "memory":
        return InMemorySessionStore(config.ttl_s, config.max_sessions)
    from serving.redis_store import RedisSessionStore

    store = RedisSessionStore(
        config.url,
        ttl_s=config.ttl_s,
        key_prefix=config.key_prefix,
        password=config.password.get_secret_value() if config.password else None,
    )
    if not store.health():
        log.warning("the Redis session store at %s is not reachable yet; turns fail with 503 until it is",
                    store.where)
    return store
