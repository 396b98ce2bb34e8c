"""The conversation prior's statistics from the logged dialogues the settings name (`Settings.conversation_logs`)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from app.errors import SettingsError
from app.evaluation.importers import ImportedDataset, import_crs
from retrieval.catalogue import Catalogue
from serving.conversation_prior import DialogueStatistics, dialogue_statistics

log = logging.getLogger(__name__)


def dialogue_items(dataset: ImportedDataset) -> dict[str, set[int]]:
    """Dialogue id -> the catalogue ids mentioned (by either side) or recommended in that dialogue."""
    items: dict[str, set[int]] = {}
    for dialogue in dataset.dialogues:
        found = items.setdefault(dialogue.dialogue_id, set())
        for turn in dialogue.turns:
            found.update(turn.targets, turn.mentioned, (i for u in turn.context for i in u.mentions))
    return items


def logged_dialogue_statistics(
    paths: Sequence[Path], catalogue: Catalogue, popularity: np.ndarray | None = None
) -> DialogueStatistics:
    """In how many dialogues of the CRSLab-style files `paths` each catalogue movie, and each pair, is mentioned
    or recommended (linked as the evaluation harness links them; `popularity` breaks title ties)."""
    dialogues: list[set[int]] = []
    for path in paths:
        try:
            dataset = import_crs(Path(path).stem, path, catalogue, popularity).dataset
        except (OSError, ValueError) as exc:
            raise SettingsError(f"conversation log {path}: {str(exc).splitlines()[0]}") from None
        dialogues += dialogue_items(dataset).values()
    statistics = dialogue_statistics(dialogues, catalogue)
    named = int((statistics.counts > 0).sum())
    (log.info if named else log.warning)(
        "conversation prior: %d dialogues from %s name %d catalogue movies%s", len(dialogues),
        ", ".join(str(p) for p in paths), named, "" if named else " (the prior changes nothing)")
    return statistics
