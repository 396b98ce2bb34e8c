"""Read JSONL files line by line into pydantic records, skipping and counting malformed lines.

Used for our own session log (`serving.session_log`) and for the CRSLab-style conversation files. A line
that is not JSON or does not validate is skipped and reported with its 1-based line number and the reason;
blank lines are ignored.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

from pydantic import BaseModel, ValidationError

from serving.session_log import SessionLogRecord

log = logging.getLogger(__name__)

Record = TypeVar("Record", bound=BaseModel)
MAX_REASON_CHARS = 200


class MalformedLine(BaseModel):
    """A skipped line: where it is and why."""

    line: int
    reason: str


@dataclass
class JsonlRead(Generic[Record]):
    """What a JSONL file held: the valid records in file order, and the lines that were skipped."""

    path: Path
    records: list[Record] = field(default_factory=list)
    malformed: list[MalformedLine] = field(default_factory=list)


def read_jsonl(path: Path, model: type[Record]) -> JsonlRead[Record]:
    """Validate each line of `path` as `model`; FileNotFoundError when the file is missing."""
    path = Path(path)
    result: JsonlRead[Record] = JsonlRead(path)
    with open(path, encoding="utf-8", errors="replace") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                result.records.append(model.model_validate(json.loads(line)))
            except json.JSONDecodeError as exc:
                result.malformed.append(MalformedLine(line=number, reason=f"not JSON: {exc.msg}"))
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first["loc"]) or "record"
                reason = f"{exc.error_count()} invalid field(s), first {where}: {first['msg']}"
                result.malformed.append(MalformedLine(line=number, reason=reason[:MAX_REASON_CHARS]))
    if result.malformed:
        lines = ", ".join(str(m.line) for m in result.malformed[:10])
        more = "" if len(result.malformed) <= 10 else f" and {len(result.malformed) - 10} more"
        log.warning("%s: skipped %d malformed line(s): %s%s", path, len(result.malformed), lines, more)
    return result


def read_session_log(path: Path) -> JsonlRead[SessionLogRecord]:
    """Our own session log, written by `serving.session_log.SessionLogWriter`."""
    return read_jsonl(path, SessionLogRecord)
