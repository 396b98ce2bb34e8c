"""The conversation prior's counts from CRSLab files, and the setting that names them."""

from __future__ import annotations

import json

import pytest

from app.conversation_logs import dialogue_items, dialogue_requests, logged_dialogue_statistics
from app.errors import SettingsError
from app.evaluation.importers import import_crs
from app.settings import load_settings
from retrieval.data import load_movielens
from tests.app.test_evaluation_importers import ROWS, write_crs


@pytest.fixture(scope="module")
def catalogue(movielens_dir):
    return load_movielens("ml-latest-small", path=movielens_dir, download=False).catalogue


def test_dialogue_items_gather_targets_entities_and_linked_mentions(catalogue, tmp_path):
    dataset = import_crs("toy", write_crs(tmp_path), catalogue).dataset
    # d1: Toy Story (said and an entity), Lion King and Memento (recommended); Avengers is not in the catalogue.
    # d2: Inception and Matrix (said), Matrix and Heat (recommended; Heat 1986 is not Heat 1995)
    assert dialogue_items(dataset) == {"d1": {1, 6, 14}, "d2": {33, 29}}


def test_counts_add_up_dialogues_over_files(catalogue, tmp_path):
    one = write_crs(tmp_path / "one")
    two = write_crs(tmp_path / "two", rows=ROWS[:1])
    stats = logged_dialogue_statistics([one, two], catalogue)
    assert {int(catalogue.ids[r]): c for r, c in enumerate(stats.counts) if c} == {1: 2, 6: 2, 14: 1, 33: 1, 29: 1}
    beside_toy_story = stats.co_mentions.weighted_rows([catalogue.row(1)], [1.0])
    assert {int(catalogue.ids[r]): c for r, c in enumerate(beside_toy_story) if c} == {6: 2, 14: 1}
    beside_lion_king = stats.co_mentions.weighted_rows([catalogue.row(6)], [1.0])
    assert {int(catalogue.ids[r]): c for r, c in enumerate(beside_lion_king) if c} == {14: 1}, \
        "what was recommended beside it, not Toy Story, which only came up"


def test_the_setting_needs_existing_files(tmp_path):
    with pytest.raises(ValueError, match="conversation log .* does not exist"):
        load_settings(conversation_logs=[tmp_path / "missing.jsonl"])
    path = write_crs(tmp_path)
    assert load_settings(conversation_logs=[path]).conversation_logs == [path.resolve()]


def test_a_bad_entity_map_is_a_settings_error_naming_the_log(catalogue, tmp_path):
    path = write_crs(tmp_path)
    (tmp_path / "entity2id.json").write_text("{oops")
    with pytest.raises(SettingsError, match=r"conversation log .*test.jsonl: .*entity2id.json is not valid JSON"):
        logged_dialogue_statistics([path], catalogue)


def test_the_environment_takes_one_path_several_or_a_json_list(tmp_path, monkeypatch):
    one, two = write_crs(tmp_path / "one"), write_crs(tmp_path / "two")
    for value, expected in ((str(one), [one]), (f"{one}, {two}", [one, two]), (json.dumps([str(two)]), [two]),
                            (f"{one},{one}", [one])):
        monkeypatch.setenv("ILMREC_CONVERSATION_LOGS", value)
        assert load_settings().conversation_logs == [p.resolve() for p in expected]


def test_dialogue_requests_gather_what_the_person_said_and_what_was_recommended(catalogue, tmp_path):
    dataset = import_crs("toy", write_crs(tmp_path), catalogue).dataset
    requests = dialogue_requests(dataset)
    assert requests["d1"] == (["Hi! I loved Toy Story (1995), anything similar?", "Seen it. Something darker?"],
                              {6, 14})
    assert requests["d2"] == (["Inception (2010) and The Matrix (1999)"], {29})  # The Matrix; Heat 1986 is not ours


def test_logged_statistics_carry_the_word_cues(catalogue, tmp_path):
    stats = logged_dialogue_statistics([write_crs(tmp_path)], catalogue)
    cues = stats.word_cues
    assert cues.dialogues == 2 and cues.word_dialogues[cues.vocabulary["darker"]] == 1
    darker = cues.scores(["darker"], 1.0)
    assert darker[catalogue.row(14)] == darker.max() and darker[catalogue.row(1)] < darker.max()
