"""`benchmarks.conversational --prior-from-tune`'s split of a CRSLab file by dialogue."""

from __future__ import annotations

import json

from benchmarks.conversational import split_redial
from tests.app.test_evaluation_importers import ROWS, write_crs


def test_split_redial_writes_each_split_with_its_entity_map(movielens_dir, tmp_path):
    source = write_crs(tmp_path / "crs")
    report, tune = split_redial(source, movielens_dir, tmp_path / "split")
    rows = {name: [json.loads(line) for line in path.read_text().splitlines()] for name, path in
            (("report", report), ("tune", tune))}
    dialogues = {name: {r["dialog_id"] for r in found} for name, found in rows.items()}
    assert dialogues["report"] and dialogues["tune"] and not dialogues["report"] & dialogues["tune"]
    assert sorted(map(json.dumps, rows["report"] + rows["tune"])) == sorted(map(json.dumps, ROWS))
    assert (tmp_path / "split" / "entity2id.json").read_text() == (tmp_path / "crs" / "entity2id.json").read_text()
