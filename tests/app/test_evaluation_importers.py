"""Importers: CRSLab-style rows and our own session log -> evaluation turns over the synthetic catalogue.

Catalogue ids (tests/synthetic.py): Toy Story 1, Lion King 6, Memento 14, Heat (1995) 17, Matrix 29,
Inception 33.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.evaluation.importers import import_crs, import_session_log, popularity_counts
from retrieval.data import load_movielens
from serving.session_log import SessionLogRecord, SessionLogWriter

ENTITY2ID = {
    "<http://dbpedia.org/resource/Toy_Story>": 100,
    "<http://dbpedia.org/resource/The_Lion_King>": 101,
    "<http://dbpedia.org/resource/Heat_(1986_film)>": 102,
    "<http://dbpedia.org/resource/Inception>": 103,
    "<http://dbpedia.org/resource/Avengers:_Infinity_War>": 104,
    "<http://dbpedia.org/resource/Tom_Hanks>": 105,
    "<http://dbpedia.org/resource/Memento_(film)>": 106,
    "<http://dbpedia.org/resource/The_Matrix>": 107,
}

ROWS = [
    {"context": ["", "Hi! I loved Toy Story (1995), anything similar?"], "resp": "Try The Lion King (1994)",
     "rec": [101], "entity": [101], "entity_name": ["The Lion King (1994)"], "prev_entity": [100, 105],
     "dialog_id": "d1", "turn_id": 11, "is_user": 0},
    {"context": ["", "Hi! I loved Toy Story (1995), anything similar?", "Try The Lion King (1994)",
                 "Seen it. Something darker?"],
     "resp": "Memento (2000) or Avengers: Infinity War (2018)", "rec": [106, 104], "entity": [106, 104],
     "entity_name": ["Memento (2000)", "Avengers: Infinity War (2018)"], "prev_entity": [100, 101, 105],
     "dialog_id": "d1", "turn_id": 13, "is_user": 0},
    {"context": ["", "What do you like?", "Inception (2010) and The Matrix (1999)"],
     "resp": "Then The Matrix (1999) again, or Heat (1986)", "rec": [107, 102], "entity": [107, 102],
     "entity_name": ["Heat (1986)", "The Matrix (1999)"], "prev_entity": [103, 107],
     "dialog_id": "d2", "turn_id": "t2", "is_user": 0},
]


def write_crs(folder: Path, rows: list[dict] = ROWS, extra_lines: tuple[str, ...] = ()) -> Path:
    """A CRSLab-style `test.jsonl` with `entity2id.json` beside it; returns the jsonl path."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "entity2id.json").write_text(json.dumps(ENTITY2ID))
    path = folder / "test.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "".join(line + "\n" for line in extra_lines))
    return path


@pytest.fixture(scope="module")
def movielens(movielens_dir):
    return load_movielens("ml-latest-small", path=movielens_dir, download=False)


@pytest.fixture(scope="module")
def imported(movielens, tmp_path_factory):
    path = write_crs(tmp_path_factory.mktemp("crs"), extra_lines=("not json", '{"context": []}'))
    counts = popularity_counts(movielens.catalogue, movielens.ratings["item_id"].to_numpy())
    return import_crs("toy", path, movielens.catalogue, counts)


def test_dialogues_and_roles(imported):
    dataset = imported.dataset
    assert [d.dialogue_id for d in dataset.dialogues] == ["d1", "d2"]
    first, second = dataset.dialogues[0].turns
    assert [(u.role, u.text) for u in first.context] == [("user", ROWS[0]["context"][1])]
    # roles alternate backwards from the user's message right before the recommender's turn
    assert [u.role for u in second.context] == ["user", "assistant", "user"]
    other = dataset.dialogues[1].turns[0]
    assert [(u.role, u.text) for u in other.context] == [
        ("assistant", "What do you like?"), ("user", "Inception (2010) and The Matrix (1999)")
    ]
    assert second.turn_id == "13" and other.turn_id == "t2"
    assert second.reference == ROWS[1]["resp"]


def test_targets_and_unmatched_targets(imported):
    first, second = imported.dataset.dialogues[0].turns
    other = imported.dataset.dialogues[1].turns[0]
    assert first.targets == [6]
    assert second.targets == [14] and second.unmatched_targets == ["Avengers: Infinity War (2018)"]
    assert other.targets == [29] and other.unmatched_targets == ["Heat (1986)"]
    stats = imported.dataset.linking
    assert (stats.target_occurrences, stats.target_occurrences_linked) == (5, 3)


def test_context_mentions_come_from_text_and_earlier_mentions_from_annotations(imported, movielens, tmp_path):
    first, second = imported.dataset.dialogues[0].turns
    other = imported.dataset.dialogues[1].turns[0]
    assert first.context[0].mentions == [1]
    assert first.mentioned == [1]  # Tom Hanks (105) is no film
    assert [u.mentions for u in second.context] == [[1], [6], []]
    assert second.mentioned == [1, 6]
    assert other.mentioned == [33, 29]
    unannotated = {**ROWS[0], "context": ["", "Heat (1995) was fine"], "prev_entity": []}
    turn = import_crs("toy", write_crs(tmp_path / "crs", rows=[unannotated]), movielens.catalogue).dataset.turns[0]
    assert turn.context[0].mentions == [17] and turn.mentioned == []  # the text link is not an annotated mention


def test_malformed_lines_are_reported(imported):
    assert [m.line for m in imported.dataset.malformed] == [4, 5]


def test_mapping_is_json_serialisable(imported):
    payload = json.loads(imported.mapping.model_dump_json())
    assert payload["links"]["101"]["item_id"] == 6
    assert payload["stats"]["match_rate"] == pytest.approx(0.6)


def test_session_log_import(movielens, tmp_path):
    path = tmp_path / "sessions.jsonl"
    common = dict(model_id="m", checkpoint_id="c")
    with SessionLogWriter(path) as writer:
        writer.append(SessionLogRecord(session_id="a", turn=0, user_text="I loved Heat", mentions=[17],
                                       recommendations=[16, 39], reply="1. Usual Suspects, 2. Pulp Fiction",
                                       latency_ms=40.0, **common))
        writer.append(SessionLogRecord(session_id="b", turn=0, user_text="hello", latency_ms=5.0, **common))
        writer.append(SessionLogRecord(session_id="a", turn=1, user_text="Seen Pulp Fiction. And Memento?",
                                       mentions=[39, 14, 99999], recommendations=[19], reply="Zodiac",
                                       latency_ms=30.0, **common))
    dataset = import_session_log(path, movielens.catalogue)
    assert [d.dialogue_id for d in dataset.dialogues] == ["a", "b"]
    first, second = dataset.dialogues[0].turns
    assert [u.role for u in first.context] == ["user"]
    assert first.mentioned == [17]
    # targets: what the user names next that had not come up; 99999 is not a catalogue id
    assert first.targets == [39, 14] and first.unmatched_targets == ["99999"]
    assert first.recorded.recommendations == [16, 39] and first.recorded.latency_ms == 40.0
    assert [(u.role, u.mentions) for u in second.context] == [("user", [17]), ("assistant", [16, 39]), ("user", [39, 14])]
    assert second.mentioned == [17, 16, 39, 14]
    assert second.targets == [] and second.recorded.recommendations == [19]
    assert dataset.dialogues[1].turns[0].targets == []


def test_a_missing_or_malformed_entity2id_is_named(movielens, tmp_path):
    path = write_crs(tmp_path / "crs")
    (tmp_path / "crs" / "entity2id.json").unlink()
    with pytest.raises(FileNotFoundError, match="test.jsonl is in CRSLab format and needs its entity2id.json"):
        import_crs("toy", path, movielens.catalogue)
    (tmp_path / "crs" / "entity2id.json").write_text("{not json")
    with pytest.raises(ValueError, match="entity2id.json is not valid JSON"):
        import_crs("toy", path, movielens.catalogue)
    (tmp_path / "crs" / "entity2id.json").write_text('["a", "b"]')
    with pytest.raises(ValueError, match="must map entity names to integer ids"):
        import_crs("toy", path, movielens.catalogue)
