"""Conversation data -> evaluation turns: CRSLab-style ReDial/INSPIRED files and our own session log.

Every source becomes `Dialogue`s of `EvalTurn`s: the context a system sees (utterances with roles, the
movies linked in each), the target catalogue ids, the targets that did not link (counted, never dropped
silently) and the catalogue ids mentioned earlier in the dialogue (for the `rec`/`dis` split and for
excluding seen items).

CRSLab rows: `context` strictly alternates speakers (CRSLab merges consecutive messages of one speaker) and
the row is the recommender's turn, so the last context utterance is the user's and roles alternate
backwards from there. (The files' `input` field labels ReDial roles forwards from the first utterance,
which is wrong whenever the recommender opened the conversation.) The empty first utterance is dropped.
Each utterance carries the movies `serving.linking.TitleLinker` finds in its text (what a system may use).
The movies mentioned earlier (which decide `rec`/`dis` and what "seen excluded" removes) are the dataset's
`prev_entity` annotations that link to the catalogue, as in the published protocol: the title linker also
finds movies nobody named ("2001" in "Shrek (2001)", "War" in a longer title), which must not turn targets
into `dis` rows or count as repeats.

Session logs: see `import_session_log`.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field

from app.evaluation.entity_linking import CatalogueMatcher, CRSRow, EntityMapping, LinkingStats, link_entities
from app.evaluation.logs import MalformedLine, read_jsonl, read_session_log
from retrieval.catalogue import Catalogue
from serving.linking import TitleLinker

Role = Literal["user", "assistant"]


class Utterance(BaseModel):
    """One message of the context, with the catalogue ids linked in its text."""

    role: Role
    text: str
    mentions: list[int] = Field(default_factory=list)


class RecordedOutput(BaseModel):
    """What our system answered at a logged turn (session logs only)."""

    recommendations: list[int]
    reply: str
    latency_ms: float


class EvalTurn(BaseModel):
    """One recommendation turn: the context up to it and what should be recommended."""

    dataset: str
    dialogue_id: str
    turn_id: str
    context: list[Utterance]
    reference: str | None = Field(None, description="The human recommender's reply, when the data has one.")
    targets: list[int] = Field(default_factory=list, description="Target catalogue ids, in the data's order.")
    unmatched_targets: list[str] = Field(
        default_factory=list, description="Targets with no catalogue movie (title or URI), counted as uncovered."
    )
    mentioned: list[int] = Field(default_factory=list, description="Catalogue ids mentioned earlier, first first.")
    recorded: RecordedOutput | None = None


class Dialogue(BaseModel):
    dialogue_id: str
    turns: list[EvalTurn]


class ImportedDataset(BaseModel):
    """A source file turned into dialogues, with what was skipped and how well it linked."""

    name: str
    source: str
    dialogues: list[Dialogue]
    malformed: list[MalformedLine] = Field(default_factory=list)
    linking: LinkingStats | None = None

    @property
    def turns(self) -> list[EvalTurn]:
        return [turn for dialogue in self.dialogues for turn in dialogue.turns]


class CRSImport(BaseModel):
    """`import_crs`'s result: the dataset and the entity mapping (written as JSON next to reports)."""

    dataset: ImportedDataset
    mapping: EntityMapping


def popularity_counts(catalogue: Catalogue, item_ids: Sequence[int] | np.ndarray) -> np.ndarray:
    """`[n_items]` number of occurrences of each catalogue row in `item_ids` (e.g. the ratings' item column)."""
    ids = np.asarray(item_ids, dtype=np.int64)
    known = np.fromiter((int(i) in catalogue for i in ids), dtype=bool, count=len(ids))
    return np.bincount(catalogue.rows(ids[known]), minlength=len(catalogue)).astype(np.float64)


def _read_entity2id(entity2id_path: Path, data_path: Path) -> dict[str, int]:
    """The CRSLab entity -> id map; a missing or malformed one is named with what it is for."""
    if not entity2id_path.is_file():
        raise FileNotFoundError(
            f"{data_path.name} is in CRSLab format and needs its entity2id.json; {entity2id_path} does not exist"
        )
    try:
        entity2id = json.loads(entity2id_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{entity2id_path} is not valid JSON: {exc}") from None
    if not isinstance(entity2id, dict) or not all(isinstance(v, int) for v in entity2id.values()):
        raise ValueError(f"{entity2id_path} must map entity names to integer ids")
    return entity2id


def import_crs(
    name: str,
    path: Path,
    catalogue: Catalogue,
    popularity: Sequence[float] | np.ndarray | None = None,
    entity2id_path: Path | None = None,
) -> CRSImport:
    """Read a CRSLab-style file (`entity2id.json` beside it unless given) and link it to `catalogue`."""
    path = Path(path)
    entity2id_path = Path(entity2id_path) if entity2id_path is not None else path.parent / "entity2id.json"
    entity2id = _read_entity2id(entity2id_path, path)
    read = read_jsonl(path, CRSRow)
    matcher = CatalogueMatcher(catalogue, popularity)
    mapping = link_entities(name, read.records, entity2id, matcher)
    linker = TitleLinker(catalogue, popularity)
    mentions_of: dict[str, list[int]] = {}

    def linked(text: str) -> list[int]:
        if text not in mentions_of:
            mentions_of[text] = list(dict.fromkeys(m.item_id for m in linker.find(text)))
        return mentions_of[text]

    by_dialogue: dict[str, list[EvalTurn]] = defaultdict(list)
    for row in read.records:
        n = len(row.context)
        context = [
            Utterance(role="user" if (n - 1 - i) % 2 == 0 else "assistant", text=text, mentions=linked(text))
            for i, text in enumerate(row.context)
            if text.strip()
        ]
        targets: list[int] = []
        unmatched: list[str] = []
        for entity in dict.fromkeys(row.rec):
            item = mapping.item_id(entity)
            if item is not None:
                targets.append(item)
            else:
                link = mapping.links[entity]
                unmatched.append(f"{link.title} ({link.year})" if link.year else (link.title or str(entity)))
        from_entities = [mapping.item_id(e) for e in row.prev_entity]
        mentioned = list(dict.fromkeys(i for i in from_entities if i is not None))
        by_dialogue[row.dialog_id].append(
            EvalTurn(
                dataset=name, dialogue_id=row.dialog_id, turn_id=str(row.turn_id), context=context,
                reference=row.resp, targets=list(dict.fromkeys(targets)), unmatched_targets=unmatched,
                mentioned=mentioned,
            )
        )
    dataset = ImportedDataset(
        name=name,
        source=str(path),
        dialogues=[Dialogue(dialogue_id=d, turns=turns) for d, turns in by_dialogue.items()],
        malformed=read.malformed,
        linking=mapping.stats,
    )
    return CRSImport(dataset=dataset, mapping=mapping)


def import_session_log(path: Path, catalogue: Catalogue, name: str = "session-log") -> ImportedDataset:
    """Our own session log as evaluation turns, one per logged turn, sessions in order of first appearance.

    The context of turn t is every earlier user message (with its logged mentions) and reply (with its
    recommended ids as mentions), then the user message of turn t. Logs have no human recommender, so the
    targets are a proxy: the catalogue movies the user names in their *next* message that had not come up
    before (the user went on to talk about them). Turns without a next message have no targets and count
    only for the target-free figures (latency, repeats, out-of-catalogue). `recorded` keeps what our system
    answered, so the `logged` system can be scored on the same turns. Ids outside `catalogue` are dropped
    from mentions and counted as unmatched targets.
    """
    read = read_session_log(path)
    sessions: dict[str, list] = defaultdict(list)
    for record in read.records:
        sessions[record.session_id].append(record)
    dialogues = []
    for session_id, records in sessions.items():
        records.sort(key=lambda r: r.turn)
        turns: list[EvalTurn] = []
        context: list[Utterance] = []
        for index, record in enumerate(records):
            user = Utterance(role="user", text=record.user_text, mentions=[i for i in record.mentions if i in catalogue])
            mentioned = list(dict.fromkeys(i for u in context for i in u.mentions))
            later = records[index + 1].mentions if index + 1 < len(records) else []
            new = [i for i in dict.fromkeys(later) if i not in mentioned and i not in user.mentions]
            turns.append(
                EvalTurn(
                    dataset=name, dialogue_id=session_id, turn_id=str(record.turn), context=[*context, user],
                    targets=[i for i in new if i in catalogue],
                    unmatched_targets=[str(i) for i in new if i not in catalogue],
                    mentioned=list(dict.fromkeys([*mentioned, *user.mentions])),
                    recorded=RecordedOutput(
                        recommendations=record.recommendations, reply=record.reply, latency_ms=record.latency_ms
                    ),
                )
            )
            reply_ids = [i for i in record.recommendations if i in catalogue]
            context = [*context, user, Utterance(role="assistant", text=record.reply, mentions=reply_ids)]
        dialogues.append(Dialogue(dialogue_id=session_id, turns=turns))
    return ImportedDataset(name=name, source=str(path), dialogues=dialogues, malformed=read.malformed)
