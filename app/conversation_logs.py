"""The conversation prior's statistics from the logged dialogues the settings name (`Settings.conversation_logs`)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from app.errors import SettingsError
from app.evaluation.importers import ImportedDataset, import_crs
from retrieval.catalogue import Catalogue
from serving.conversation_prior import DialogueStatistics, dialogue_statistics, word_cues

log = logging.getLogger(__name__)


def dialogue_items(dataset: ImportedDataset) -> dict[str, set[int]]:
    """Dialogue id -> the catalogue ids mentioned (by either side) or recommended in that dialogue."""
    items: dict[str, set[int]] = {}
    for dialogue in dataset.dialogues:
        found = items.setdefault(dialogue.dialogue_id, set())
        for turn in dialogue.turns:
            found.update(turn.targets, turn.mentioned, (i for u in turn.context for i in u.mentions))
    return items


def dialogue_requests(dataset: ImportedDataset) -> dict[str, tuple[list[str], set[int]]]:
    """Dialogue id -> (the distinct messages of the person asking, in order; the catalogue ids recommended to
    them), what `serving.conversation_prior.word_cues` learns from."""
    requests: dict[str, tuple[list[str], set[int]]] = {}
    for dialogue in dataset.dialogues:
        texts, recommended = requests.setdefault(dialogue.dialogue_id, ([], set()))
        for turn in dialogue.turns:
            recommended.update(turn.targets)
            texts += [u.text for u in turn.context if u.role == "user" and u.text not in texts]
    return requests


def logged_dialogue_statistics(
    paths: Sequence[Path], catalogue: Catalogue, popularity: np.ndarray | None = None
) -> DialogueStatistics:
    """In how many dialogues of the CRSLab-style files `paths` each catalogue movie is mentioned or recommended,
    and each movie was recommended beside each other one (linked as the evaluation harness links them;
    `popularity` breaks title ties), and which movies were recommended after which words
    (`DialogueStatistics.word_cues`)."""
    dialogues: list[set[int]] = []
    requests: list[tuple[list[str], set[int]]] = []
    for path in paths:
        try:
            dataset = import_crs(Path(path).stem, path, catalogue, popularity).dataset
        except (OSError, ValueError) as exc:
            raise SettingsError(f"conversation log {path}: {str(exc).splitlines()[0]}") from None
        items, asked = dialogue_items(dataset), dialogue_requests(dataset)
        dialogues += items.values()
        requests += (asked[d] for d in items)
    statistics = replace(dialogue_statistics(dialogues, catalogue, [given for _, given in requests]),
                         word_cues=word_cues(requests, catalogue))
    named = int((statistics.counts > 0).sum())
    (log.info if named else log.warning)(
        "conversation prior: %d dialogues from %s name %d catalogue movies%s", len(dialogues),
        ", ".join(str(p) for p in paths), named, "" if named else " (the prior changes nothing)")
    return statistics
