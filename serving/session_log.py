"""The session log: one JSON line per served chat turn, appended as the turn completes.

Every conversation served by the API or the UI goes through `SessionLogWriter.append`, which validates the
record (`SessionLogRecord`, schema version `SCHEMA_VERSION`), writes it as one line, then flushes and
fsyncs before returning, so a crash loses at most the turn in flight. The evaluation harness reads the file
back with `app.evaluation.logs.read_session_log`.

Fields are size-capped so one pathological request cannot bloat the log: texts are cut to
`MAX_TEXT_CHARS` (with `truncated` set), id lists to `MAX_IDS` (they are ranked, so the head is what
matters).
"""

from __future__ import annotations

import os
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

SCHEMA_VERSION = 1
MAX_TEXT_CHARS = 4000
"""User texts and replies longer than this are cut (and the record marked `truncated`)."""
MAX_IDS = 100
"""Id lists (mentions, candidates, recommendations) keep at most this many leading ids."""
MAX_ID_CHARS = 200
"""Session, model and checkpoint ids longer than this are rejected: they are keys, not free text."""


class SessionLogRecord(BaseModel):
    """One served turn. Item ids are catalogue ids (MovieLens movieIds)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = Field(SCHEMA_VERSION, description="Bumped on any incompatible change.")
    timestamp: datetime = Field(
        default_factory=lambda: datetime.now(UTC), description="When the turn completed (timezone-aware, UTC)."
    )
    session_id: str = Field(min_length=1, max_length=MAX_ID_CHARS, description="The conversation's id.")
    turn: int = Field(ge=0, description="0-based index of this turn within the session.")
    user_text: str = Field(description="What the user wrote this turn.")
    mentions: list[int] = Field(default_factory=list, description="Catalogue ids linked in the user text.")
    candidates: list[int] = Field(default_factory=list, description="Candidates the ranker produced, best first.")
    recommendations: list[int] = Field(default_factory=list, description="Ids recommended in the reply, in order.")
    reply: str = Field("", description="The reply text shown to the user.")
    model_id: str = Field(max_length=MAX_ID_CHARS, description="The LLM that wrote the reply.")
    checkpoint_id: str = Field(max_length=MAX_ID_CHARS, description="The trained artefacts (e.g. their folder name).")
    latency_ms: float = Field(ge=0.0, description="Wall time from request to complete reply, milliseconds.")
    first_token_ms: float | None = Field(
        None, ge=0.0, description="Wall time from request to the first streamed text (state, ranking, prompt "
        "prefill), milliseconds; None in records written before it was logged."
    )
    truncated: bool = Field(False, description="True when a text or id list was cut to its cap.")

    @model_validator(mode="before")
    @classmethod
    def _cap_sizes(cls, data: object) -> object:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        cut = bool(data.get("truncated", False))
        for name in ("user_text", "reply"):
            value = data.get(name)
            if isinstance(value, str) and len(value) > MAX_TEXT_CHARS:
                data[name] = value[:MAX_TEXT_CHARS]
                cut = True
        for name in ("mentions", "candidates", "recommendations"):
            value = data.get(name)
            if isinstance(value, list | tuple) and len(value) > MAX_IDS:
                data[name] = list(value[:MAX_IDS])
                cut = True
        data["truncated"] = cut
        return data


class SessionLogWriter:
    """Append-only JSONL writer, safe to share between threads.

    Each `append` writes exactly one line under a lock, then flushes and fsyncs, so lines never interleave
    and a finished turn survives a crash. The file is opened in append mode: several processes appending to
    one file keep whole lines (each line is one `write` call on an O_APPEND descriptor).
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._file = open(self.path, "ab")  # noqa: SIM115 - held open for the writer's lifetime

    def append(self, record: SessionLogRecord) -> None:
        """Write `record` as one line and make it durable before returning."""
        line = record.model_dump_json().encode() + b"\n"
        with self._lock:
            if self._file.closed:
                raise ValueError(f"session log {self.path} is closed")
            self._file.write(line)
            self._file.flush()
            os.fsync(self._file.fileno())

    def close(self) -> None:
        with self._lock:
            self._file.close()

    def __enter__(self) -> SessionLogWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
