"""Where conversations live between turns: the dialogue state plus an append-only log of turns.

`SessionStore` is the interface (get, put, append, history); `InMemorySessionStore` is the in-process
default. A Redis twin goes behind the same ABC so several API replicas can share sessions.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field

from serving.dialogue import DialogueState

SESSION_ID_PATTERN = r"^[A-Za-z0-9_-]{1,128}$"
"""Session ids are URL-safe tokens; the service mints them with `secrets.token_urlsafe`."""


class TurnRecord(BaseModel):
    """One completed turn, as logged for replay and evaluation."""

    model_config = ConfigDict(extra="forbid")

    user: str = Field(description="The user's message.")
    reply: str = Field(description="The full reply text sent back.")
    recommended: list[int] = Field(default_factory=list, description="Catalogue ids recommended this turn.")
    created: float = Field(default_factory=time.time, description="Unix time the turn finished.")


class SessionStore(ABC):
    """Sessions by id. A session expires `ttl_s` seconds after its last write."""

    @abstractmethod
    def get(self, session_id: str) -> DialogueState | None:
        """The session's state, or None when unknown or expired."""

    @abstractmethod
    def put(self, session_id: str, state: DialogueState) -> None:
        """Create or replace the session's state (and refresh its expiry)."""

    @abstractmethod
    def append(self, session_id: str, record: TurnRecord) -> None:
        """Add a turn to the session's log (and refresh its expiry)."""

    @abstractmethod
    def history(self, session_id: str) -> list[TurnRecord]:
        """The session's turns, oldest first; empty when unknown or expired."""


@dataclass
class _Session:
    state: DialogueState
    turns: list[TurnRecord] = field(default_factory=list)
    touched: float = 0.0


class InMemorySessionStore(SessionStore):
    """A thread-safe dict with expiry and a size cap: past `max_sessions`, the least recently written goes."""

    def __init__(self, ttl_s: float = 3600.0, max_sessions: int = 10_000,
                 clock: Callable[[], float] = time.monotonic):
        if ttl_s <= 0 or max_sessions < 1:
            raise ValueError(f"ttl_s must be > 0 and max_sessions >= 1, got {ttl_s} and {max_sessions}")
        self.ttl_s = ttl_s
        self.max_sessions = max_sessions
        self._clock = clock
        self._sessions: OrderedDict[str, _Session] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, session_id: str) -> DialogueState | None:
        with self._lock:
            session = self._live(session_id)
            return session.state.model_copy(deep=True) if session else None

    def put(self, session_id: str, state: DialogueState) -> None:
        with self._lock:
            session = self._live(session_id)
            if session is None:
                session = self._sessions[session_id] = _Session(state)
            session.state = state.model_copy(deep=True)
            self._touch(session_id, session)

    def append(self, session_id: str, record: TurnRecord) -> None:
        with self._lock:
            session = self._live(session_id)
            if session is None:
                session = self._sessions[session_id] = _Session(DialogueState())
            session.turns.append(record)
            self._touch(session_id, session)

    def history(self, session_id: str) -> list[TurnRecord]:
        with self._lock:
            session = self._live(session_id)
            return list(session.turns) if session else []

    def __len__(self) -> int:
        with self._lock:
            self._expire()
            return len(self._sessions)

    def _live(self, session_id: str) -> _Session | None:
        session = self._sessions.get(session_id)
        if session is not None and self._clock() - session.touched > self.ttl_s:
            del self._sessions[session_id]
            return None
        return session

    def _touch(self, session_id: str, session: _Session) -> None:
        session.touched = self._clock()
        self._sessions.move_to_end(session_id)
        self._expire()
        while len(self._sessions) > self.max_sessions:
            self._sessions.popitem(last=False)

    def _expire(self) -> None:
        """Drop expired sessions from the old end (ordered by last write)."""
        now = self._clock()
        while self._sessions:
            oldest_id, oldest = next(iter(self._sessions.items()))
            if now - oldest.touched <= self.ttl_s:
                break
            del self._sessions[oldest_id]
