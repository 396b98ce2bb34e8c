"""Reading JSONL logs back: valid records kept in order, malformed lines skipped and counted with line numbers."""

from __future__ import annotations

import pytest

from app.evaluation.logs import read_session_log
from serving.session_log import SessionLogRecord, SessionLogWriter


def _record(turn: int) -> SessionLogRecord:
    return SessionLogRecord(
        session_id="s", turn=turn, user_text=f"turn {turn}", model_id="m", checkpoint_id="c", latency_ms=1.0
    )


def test_malformed_lines_are_counted_with_line_numbers(tmp_path):
    path = tmp_path / "sessions.jsonl"
    with SessionLogWriter(path) as writer:
        writer.append(_record(0))
    good = _record(1).model_dump_json()
    with open(path, "a") as fh:
        fh.write("{not json\n")  # line 2
        fh.write("\n")  # line 3: blank, ignored
        fh.write(good.replace('"schema_version":1', '"schema_version":9') + "\n")  # line 4: unknown version
        fh.write(good + "\n")  # line 5
        fh.write('{"session_id": "s"}\n')  # line 6: missing fields
        fh.write(good[: len(good) // 2])  # line 7: a crash mid-write, no newline
    read = read_session_log(path)
    assert [r.turn for r in read.records] == [0, 1]
    assert [m.line for m in read.malformed] == [2, 4, 6, 7]
    assert read.malformed[0].reason.startswith("not JSON")
    assert "schema_version" in read.malformed[1].reason
    assert read.malformed[2].reason.startswith("5 invalid field(s)")


def test_missing_file_raises(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_session_log(tmp_path / "nope.jsonl")
