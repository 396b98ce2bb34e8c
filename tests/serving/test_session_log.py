"""The session log writer: one validated, durable line per turn; size caps; thread safety."""

from __future__ import annotations

import json
import threading

import pytest
from pydantic import ValidationError

from serving.session_log import MAX_IDS, MAX_TEXT_CHARS, SCHEMA_VERSION, SessionLogRecord, SessionLogWriter


def _record(turn: int = 0, **overrides) -> SessionLogRecord:
    fields = dict(
        session_id="s1", turn=turn, user_text="I loved Heat (1995)", mentions=[17], candidates=[16, 39, 38],
        recommendations=[16, 39], reply="Try these.", model_id="smollm2-135m", checkpoint_id="ml-latest-small-abc",
        latency_ms=12.5,
    )
    return SessionLogRecord(**{**fields, **overrides})


def test_each_append_is_on_disk_before_close(tmp_path):
    path = tmp_path / "logs" / "sessions.jsonl"
    writer = SessionLogWriter(path)
    writer.append(_record(0))
    # read through a separate handle while the writer is still open: the line must already be there
    lines = path.read_text().splitlines()
    assert len(lines) == 1
    writer.append(_record(1, recommendations=[39]))
    lines = path.read_text().splitlines()
    writer.close()
    assert [json.loads(line)["turn"] for line in lines] == [0, 1]
    back = SessionLogRecord.model_validate_json(lines[1])
    assert back.recommendations == [39]
    assert back.schema_version == SCHEMA_VERSION == 1
    assert back.timestamp.tzinfo is not None
    assert back == _record(1, recommendations=[39], timestamp=back.timestamp)


def test_appends_to_an_existing_log(tmp_path):
    path = tmp_path / "sessions.jsonl"
    with SessionLogWriter(path) as writer:
        writer.append(_record(0))
    with SessionLogWriter(path) as writer:
        writer.append(_record(1))
    assert [json.loads(line)["turn"] for line in path.read_text().splitlines()] == [0, 1]


def test_closed_writer_refuses(tmp_path):
    writer = SessionLogWriter(tmp_path / "s.jsonl")
    writer.close()
    with pytest.raises(ValueError, match="closed"):
        writer.append(_record())


def test_threads_never_interleave_lines(tmp_path):
    path = tmp_path / "s.jsonl"
    writer = SessionLogWriter(path)

    def work(worker: int) -> None:
        for turn in range(25):
            writer.append(_record(turn, session_id=f"w{worker}", user_text="x" * 3000))

    threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    writer.close()
    records = [SessionLogRecord.model_validate_json(line) for line in path.read_text().splitlines()]
    assert len(records) == 100
    for worker in range(4):
        assert [r.turn for r in records if r.session_id == f"w{worker}"] == list(range(25))


def test_oversized_fields_are_cut_and_flagged():
    record = _record(user_text="a" * (MAX_TEXT_CHARS + 10), candidates=list(range(MAX_IDS + 5)))
    assert len(record.user_text) == MAX_TEXT_CHARS
    assert record.candidates == list(range(MAX_IDS))
    assert record.truncated is True
    assert _record().truncated is False


@pytest.mark.parametrize(
    "bad", [{"schema_version": 2}, {"latency_ms": -1.0}, {"session_id": ""}, {"unexpected": 1}, {"turn": -1}]
)
def test_invalid_records_are_rejected(bad):
    with pytest.raises(ValidationError):
        _record(**bad)
