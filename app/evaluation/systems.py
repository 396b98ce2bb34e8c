"""The systems the harness compares. Each is a named object with `recommend(context, k) -> SystemOutput`.

A system sees only what a deployed recommender would: the dialogue so far (`SystemContext`: utterances with
roles, and the movies `serving.linking.TitleLinker` finds in them), never the targets or the data set's
entity annotations. It returns catalogue ids, best first, and, when it talks, its reply text together with
the movie names the reply contains and which of those are not in the catalogue.

  popularity  the training popularity ranking, whatever was said.
  retrieval   every movie mentioned so far, folded into a session vector by the two-tower recommender.
  fusion      retrieval's session-vector scores plus the ILM's ITC text->item scores of the user's words,
              each standardised over the catalogue, weighted and summed.
  dialogue    the full `serving.service.ChatService` in process (state tracking, filters, LLM reply): the
              movies it recommends, then (by default) its own ranker's next candidates to fill the list.
  text-llm    the frozen LLM alone, prompted with the dialogue and the titles of retrieval's top candidates
              as text, asked to name one; the name is parsed back to a catalogue id.
  endpoint    any OpenAI-compatible chat endpoint; ilmrec's `recommendations` extra field when present,
              else the movies linked in the reply text.
  logged      what our system answered when the turn was served (session-log turns only; it skips others).

Popularity, retrieval and fusion never return a movie they saw mentioned (as a deployed recommender would
not); the dialogue system applies its own filters. Systems receive trained objects in their constructors;
nothing here trains.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from rapidfuzz import fuzz, process

from app.evaluation.importers import RecordedOutput, Utterance
from retrieval.catalogue import Catalogue
from retrieval.recommender import PopularityRecommender, Recommender, TwoTowerRecommender
from serving.linking import TitleLinker

if TYPE_CHECKING:
    from ilm_model.modeling import ItemLanguageModel
    from serving.engines.base import LLMEngine
    from serving.service import ChatService

COLD_START_MESSAGE = "Hi! Can you recommend a movie?"
"""Sent as the user's message to chat systems when the recommender spoke first (the context has no user text)."""
TITLE_MATCH_SHARE = 0.8
"""A named title counts as in the catalogue when linked mentions cover this share of its characters."""


class SystemFailure(RuntimeError):
    """A system could not answer one turn (e.g. the endpoint timed out); the harness counts it as a miss."""


class SystemContext(BaseModel):
    """What a system may see of a turn."""

    model_config = ConfigDict(frozen=True)

    dialogue_id: str
    turn_id: str
    utterances: list[Utterance]
    recorded: RecordedOutput | None = None

    def mentioned_ids(self, roles: Sequence[str] = ("user", "assistant")) -> list[int]:
        """Catalogue ids linked in the utterances of `roles`, in order of first mention."""
        return list(dict.fromkeys(i for u in self.utterances if u.role in roles for i in u.mentions))

    def chat_messages(self) -> list[dict[str, str]]:
        """The context as OpenAI-style messages ending with a user message."""
        messages = [{"role": u.role, "content": u.text} for u in self.utterances]
        if not any(m["role"] == "user" for m in messages):
            messages.append({"role": "user", "content": COLD_START_MESSAGE})
        return messages


class SystemOutput(BaseModel):
    """A system's answer to one turn."""

    item_ids: list[int] = Field(description="Catalogue ids, best first.")
    reply: str | None = Field(None, description="The reply text, for systems that talk.")
    named_titles: list[str] = Field(default_factory=list, description="Movie names the reply contains.")
    unresolved_titles: list[str] = Field(default_factory=list, description="Named titles not in the catalogue.")
    latency_ms: float | None = Field(None, description="Set when the system knows its latency (logged turns).")


class System(ABC):
    """A named, configured recommender under evaluation."""

    name: str

    @abstractmethod
    def recommend(self, context: SystemContext, k: int) -> SystemOutput:
        """Up to k catalogue ids for this turn (chat systems return what they recommend, maybe fewer)."""

    def supports(self, context: SystemContext) -> bool:
        """Whether this system can answer the turn at all (turns it cannot are not replayed for it)."""
        return True

    def describe(self) -> dict[str, Any]:
        """Name and configuration, for the report."""
        return {"name": self.name}


class PopularitySystem(System):
    """The most rated movies, minus those mentioned so far."""

    def __init__(self, popularity: PopularityRecommender, name: str = "popularity"):
        self.popularity, self.name = popularity, name

    def recommend(self, context: SystemContext, k: int) -> SystemOutput:
        ids, _ = self.popularity.recommend(context.mentioned_ids(), k)
        return SystemOutput(item_ids=[int(i) for i in ids])


class RetrievalConfig(BaseModel):
    """Which mentions the retrieval system folds in."""

    model_config = ConfigDict(extra="forbid")

    roles: tuple[str, ...] = Field(
        ("user", "assistant"), description="Fold in movies mentioned by these speakers (both by default)."
    )


class RetrievalSystem(System):
    """Mentions folded into a session vector; no mentions falls back to the recommender's popularity order.

    Movies mentioned by anyone are never returned, also when only some speakers' mentions are folded in.
    """

    def __init__(self, recommender: Recommender, config: RetrievalConfig | None = None, name: str = "retrieval"):
        self.recommender, self.config, self.name = recommender, config or RetrievalConfig(), name

    def recommend(self, context: SystemContext, k: int) -> SystemOutput:
        history = context.mentioned_ids(self.config.roles)
        ids, _ = self.recommender.recommend(history, k, exclude=context.mentioned_ids())
        return SystemOutput(item_ids=[int(i) for i in ids])

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, **self.config.model_dump()}


class FusionConfig(BaseModel):
    """How CF and text scores are combined (untuned defaults; tune on dev data only)."""

    model_config = ConfigDict(extra="forbid")

    cf_weight: float = Field(1.0, ge=0.0, description="Weight of the standardised session-vector scores.")
    text_weight: float = Field(1.0, ge=0.0, description="Weight of the standardised ITC text->item scores.")
    user_turns: int = Field(2, ge=1, description="How many of the latest user messages form the ITC query.")
    roles: tuple[str, ...] = Field(("user", "assistant"), description="Speakers whose mentions are folded in.")
    batch_size: int = Field(256, ge=1, description="Items per batch when precomputing ITC item features.")


class FusionSystem(System):
    """score = cf_weight * z(session vector . item vectors) + text_weight * z(max_K ITC(text, item)).

    z() standardises over the catalogue. Without mentions only the text term counts; without user text
    only the CF term; with neither, the recommender's popularity order. Mentioned movies are never returned.
    """

    def __init__(
        self,
        recommender: TwoTowerRecommender,
        ilm: ItemLanguageModel,
        config: FusionConfig | None = None,
        name: str = "fusion",
    ):
        import torch

        self.recommender, self.ilm, self.config, self.name = recommender, ilm, config or FusionConfig(), name
        self.catalogue = recommender.catalogue
        self._items = recommender.item_embeddings()
        device = next(ilm.parameters()).device
        features = []
        with torch.no_grad():
            for start in range(0, len(self._items), self.config.batch_size):
                batch = torch.from_numpy(self._items[start : start + self.config.batch_size]).to(device)
                features.append(ilm.encode_items(batch).float().cpu())
        self._item_features = torch.cat(features)  # [n_items, K, d]

    def recommend(self, context: SystemContext, k: int) -> SystemOutput:
        import torch

        history = context.mentioned_ids(self.config.roles)
        user_texts = [u.text for u in context.utterances if u.role == "user"][-self.config.user_turns :]
        scores = np.zeros(len(self.catalogue))
        used = False
        if history:
            query = self.recommender.fold_in(history)
            if np.any(query):
                scores += self.config.cf_weight * _standardise(self._items @ query)
                used = True
        if user_texts:
            with torch.no_grad():
                text = self.ilm.encode_text([" ".join(user_texts)]).float().cpu()[0]  # [d]
                itc = (self._item_features @ text).amax(dim=1).numpy()  # [n_items]
            scores += self.config.text_weight * _standardise(itc)
            used = True
        mentioned = context.mentioned_ids()
        if not used:
            ids, _ = self.recommender.popularity.recommend(mentioned, k)
            return SystemOutput(item_ids=[int(i) for i in ids])
        order = np.lexsort((np.arange(len(scores)), -scores))
        seen = set(mentioned)
        ids = [int(i) for i in self.catalogue.ids[order[: k + len(seen)]] if int(i) not in seen]
        return SystemOutput(item_ids=ids[:k])

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, **self.config.model_dump(exclude={"batch_size"})}


class DialogueConfig(BaseModel):
    """How the chat service's answer becomes a ranked list."""

    model_config = ConfigDict(extra="forbid")

    fill: bool = Field(
        True,
        description="After the movies the reply recommends, list the service's own next candidates (its ranker "
        "on the state after the turn, which excludes what it just recommended), so Recall@k for k above the "
        "number of recommendations per turn measures the service's ranking rather than being capped.",
    )


class DialogueSystem(System):
    """The full chat service, in process: a new session per turn, rebuilt from the context messages.

    The service's session log is detached: replayed turns are not conversations anyone had.
    """

    def __init__(self, service: ChatService, config: DialogueConfig | None = None, seed: int = 0, name: str = "dialogue"):
        self.service, self.config, self.seed, self.name = service, config or DialogueConfig(), seed, name
        self.service.session_log = None
        self.linker = service.linker

    def recommend(self, context: SystemContext, k: int) -> SystemOutput:
        from serving.api.protocol import MAX_CONTENT_CHARS, MAX_MESSAGES, ChatMessage
        from serving.engines.base import SamplingParams

        messages = [
            ChatMessage(role=m["role"], content=m["content"][:MAX_CONTENT_CHARS])
            for m in context.chat_messages()
        ][-MAX_MESSAGES:]
        turn = self.service.chat(None, messages, SamplingParams(seed=self.seed))
        titles = read_titles(turn.reply, self.linker)
        ids = [r.item_id for r in turn.recommendations]
        if self.config.fill and len(ids) < k:
            from serving.dialogue import candidates

            service = self.service
            more = candidates(
                turn.state, service.recommender, service.catalogue, k - len(ids),
                config=service.config.ranking, arrays=service.arrays,
            )
            ids += [i for i in more if i not in ids]
        return SystemOutput(
            item_ids=ids[:k],
            reply=turn.reply,
            named_titles=titles.named,
            unresolved_titles=titles.unresolved,
        )

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "n_recommendations": self.service.config.n_recommendations, **self.config.model_dump()}


class TextLLMConfig(BaseModel):
    """The text-only prompt baseline."""

    model_config = ConfigDict(extra="forbid")

    n_candidates: int = Field(10, ge=1, le=50, description="Retrieval candidates listed (as titles) in the prompt.")
    max_tokens: int = Field(24, ge=1, le=128, description="Tokens the LLM may spend on its answer.")
    max_context_chars: int = Field(1500, ge=100, description="The dialogue is cut to its last this many chars.")
    append_candidates: bool = Field(
        True, description="Rank the named movie first, then the remaining candidates in retrieval order."
    )


TEXT_LLM_SYSTEM = "You are a movie recommender. You only recommend movies from the list you are given."
TEXT_LLM_INSTRUCTION = "Which one movie from the list should the user watch next? Answer with its title only."


class TextLLMSystem(System):
    """The frozen LLM picks one of retrieval's candidates, seeing titles as plain text (no soft tokens)."""

    def __init__(
        self,
        engine: LLMEngine,
        candidates: System,
        catalogue: Catalogue,
        linker: TitleLinker,
        config: TextLLMConfig | None = None,
        seed: int = 0,
        name: str = "text-llm",
    ):
        self.engine, self.candidates, self.catalogue, self.linker = engine, candidates, catalogue, linker
        self.config, self.seed, self.name = config or TextLLMConfig(), seed, name

    def prompt(self, context: SystemContext, candidate_ids: Sequence[int]) -> str:
        """The user message: the dialogue, the numbered candidate titles, the instruction."""
        lines = [f"{'User' if m['role'] == 'user' else 'Recommender'}: {m['content']}" for m in context.chat_messages()]
        dialogue = "\n".join(lines)[-self.config.max_context_chars :]
        listing = "\n".join(f"{n}. {self.catalogue[i].display_title}" for n, i in enumerate(candidate_ids, start=1))
        return f"Conversation:\n{dialogue}\n\nMovies:\n{listing}\n\n{TEXT_LLM_INSTRUCTION}"

    def recommend(self, context: SystemContext, k: int) -> SystemOutput:
        from serving.engines.base import SamplingParams

        candidate_ids = self.candidates.recommend(context, max(k, self.config.n_candidates)).item_ids
        shown = candidate_ids[: self.config.n_candidates]
        tokenizer = self.engine.tokenizer
        messages = [{"role": "system", "content": TEXT_LLM_SYSTEM}, {"role": "user", "content": self.prompt(context, shown)}]
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        embeds = self.engine.embed_tokens(tokenizer(text, add_special_tokens=False)["input_ids"])
        stream = self.engine.generate(embeds, SamplingParams(max_tokens=self.config.max_tokens, seed=self.seed, stop=("\n",)))
        try:
            reply = "".join(stream).strip()
        finally:
            stream.close()
        name = _clean_name(reply)
        picked = self._resolve(name, shown)
        ranked = [picked] if picked is not None else []
        if self.config.append_candidates or picked is None:
            ranked += [i for i in candidate_ids if i != picked]
        return SystemOutput(
            item_ids=ranked[:k],
            reply=reply,
            named_titles=[name] if name else [],
            unresolved_titles=[name] if name and picked is None else [],
        )

    def _resolve(self, name: str, shown: Sequence[int]) -> int | None:
        """A candidate whose title the answer contains or closely resembles, else any catalogue movie in it."""
        if not name:
            return None
        ids = [i for i in shown for _ in range(2)]
        titles = [t for i in shown for t in (self.catalogue[i].display_title, self.catalogue[i].title)]
        best = process.extractOne(name, titles, scorer=fuzz.WRatio, score_cutoff=90)
        if best is not None:
            return ids[best[2]]
        mentions = _covering(name, self.linker)
        return mentions[0] if mentions else None

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "candidates_from": self.candidates.name, **self.config.model_dump()}


class EndpointSystem(System):
    """An OpenAI-compatible chat endpoint (`--endpoint URL`), called with the official `openai` client."""

    def __init__(
        self,
        base_url: str,
        linker: TitleLinker,
        model: str = "ilmrec",
        api_key: str = "not-needed",
        timeout_s: float = 60.0,
        seed: int = 0,
        name: str = "endpoint",
        http_client: Any = None,
    ):
        """`http_client`: an `httpx.Client` for the openai client (proxies, custom transports); None = default."""
        try:
            import openai
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError("the endpoint system needs the openai client: pip install 'ilmrec[eval]'") from exc
        self._errors = (openai.APIError,)
        self.client = openai.OpenAI(
            base_url=base_url, api_key=api_key, timeout=timeout_s, max_retries=1, http_client=http_client
        )
        self.base_url, self.linker, self.model, self.seed, self.name = base_url, linker, model, seed, name

    def recommend(self, context: SystemContext, k: int) -> SystemOutput:
        from serving.api.protocol import MAX_CONTENT_CHARS, MAX_MESSAGES

        messages = [{"role": m["role"], "content": m["content"][:MAX_CONTENT_CHARS]} for m in context.chat_messages()]
        try:
            response = self.client.chat.completions.create(
                model=self.model, messages=messages[-MAX_MESSAGES:], temperature=0.0, seed=self.seed
            )
        except self._errors as exc:
            raise SystemFailure(f"{self.base_url}: {exc}") from exc
        reply = (response.choices[0].message.content or "") if response.choices else ""
        extra = response.model_extra or {}
        structured = extra.get("recommendations")
        titles = read_titles(reply, self.linker)
        if structured is not None:
            ids = [int(r["item_id"]) if isinstance(r, dict) else int(r) for r in structured]
        else:
            ids = titles.item_ids
        return SystemOutput(
            item_ids=list(dict.fromkeys(ids))[:k], reply=reply, named_titles=titles.named,
            unresolved_titles=titles.unresolved,
        )

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "endpoint": self.base_url, "model": self.model}


class LoggedSystem(System):
    """What was served at each logged turn, with its recorded latency."""

    def __init__(self, linker: TitleLinker, name: str = "logged"):
        self.linker, self.name = linker, name

    def supports(self, context: SystemContext) -> bool:
        return context.recorded is not None

    def recommend(self, context: SystemContext, k: int) -> SystemOutput:
        if context.recorded is None:
            raise ValueError("the logged system needs session-log turns (import with --log)")
        titles = read_titles(context.recorded.reply, self.linker)
        return SystemOutput(
            item_ids=context.recorded.recommendations[:k],
            reply=context.recorded.reply,
            named_titles=titles.named,
            unresolved_titles=titles.unresolved,
            latency_ms=context.recorded.latency_ms,
        )


_LIST_ITEM = re.compile(r"^\s*(?:\d{1,2}[.)]|[-*\u2022])\s+(?P<item>[^\n]+)$", re.M)
_THROUGH_YEAR = re.compile(r"(.*?\((?:18|19|20)\d\d\))")
_BEFORE_COLON = re.compile(r"([^:]*?)\s*(?::(?:\s|$)|$)")
_QUOTED = re.compile(r"\*\*(?P<a>[^*\n]{2,80})\*\*|\"(?P<b>[^\"\n]{2,80})\"|\u201c(?P<c>[^\u201d\n]{2,80})\u201d")
_WITH_YEAR = re.compile(
    r"(?P<title>(?:[A-Z0-9][\w'\u2019.,:!?&-]*\s+(?:(?:of|the|a|an|and|in|on|to|for|with|at|from|by|&|-)\s+)*){0,8}"
    r"[A-Z0-9][\w'\u2019.,:!?&-]*)\s*\((?:18|19|20)\d\d\)"
)
_YEAR_SUFFIX = re.compile(r"\s*\((?:18|19|20)\d\d\)\s*$")


class ReplyTitles(BaseModel):
    """Movie names found in a reply, those not in the catalogue, and the catalogue ids it mentions, in order."""

    named: list[str]
    unresolved: list[str]
    item_ids: list[int]


def read_titles(text: str, linker: TitleLinker) -> ReplyTitles:
    """Movie names in `text`, which of them are not catalogue movies, and the catalogue ids mentioned.

    A name is a list item's text up to its first "(Year)" or up to a colon, whichever reading is a catalogue
    title ("1. Thor: Ragnarok (2017): ..." and "1. Heat: ..."; the year reading when neither is), a quoted or
    bold span, or capitalised words followed by a year ("... like Heat (1995)"), starting where a catalogue
    mention that ends at the year, or a displayed title, starts ("Action and Comedy with Heat (1995)" names
    Heat). A name is in the catalogue when it is a title as we display it ("Matrix, The (1999)") or the linker's
    mentions cover `TITLE_MATCH_SHARE` of it (year excluded). The ids are the
    linker's mentions in order, except those inside a name that is not in the catalogue ("Up" inside "Made Up
    Film (2001)"). Heuristic: unquoted names without a year outside lists go unseen, so the out-of-catalogue
    count is a lower bound.
    """
    mentions = linker.find(text)

    def core_end(start: int, end: int) -> int:
        return start + len(_YEAR_SUFFIX.sub("", text[start:end]).rstrip())

    def resolves(start: int, end: int) -> bool:
        if linker.displayed(text[start:end].strip()) is not None:  # "Matrix, The (1999)", as we display it
            return True
        stop = core_end(start, end)
        covered = sum(min(m.end, stop) - m.start for m in mentions if start <= m.start and m.end <= end
                      and m.start < stop)
        return covered >= TITLE_MATCH_SHARE * max(stop - start, 1)

    spans: list[tuple[int, int]] = []  # in order of precedence: list items, quotes, then "Title (Year)"
    for match in _LIST_ITEM.finditer(text):
        start, item = match.start("item"), match["item"]
        readings = [start + len(m[1]) for m in (_THROUGH_YEAR.match(item), _BEFORE_COLON.match(item)) if m]
        readings = [end for end in readings if text[start:end].strip()] or [start + len(item.rstrip())]
        spans.append((start, next((end for end in readings if resolves(start, end)), readings[0])))
    for match in _QUOTED.finditer(text):
        group = next(g for g in ("a", "b", "c") if match[g] is not None)
        spans.append((match.start(group), match.end(group)))
    for match in _WITH_YEAR.finditer(text):
        start, stop = match.start("title"), core_end(match.start("title"), match.end())
        start = min((m.start for m in mentions if m.end in (stop, match.end()) and start <= m.start), default=start)
        words = [w.start() + start for w in re.finditer(r"\S+", text[start:stop])]
        start = next((w for w in words if linker.displayed(text[w : match.end()]) is not None), start)
        spans.append((start, match.end()))
    kept: list[tuple[int, int]] = []
    for start, end in spans:
        if not any(start < b and a < end for a, b in kept):
            kept.append((start, end))
    kept.sort()
    unresolved = [(start, end) for start, end in kept if not resolves(start, end)]
    ids = [m.item_id for m in mentions if not any(a <= m.start and m.end <= b for a, b in unresolved)]
    return ReplyTitles(
        named=[text[a:b].strip() for a, b in kept],
        unresolved=[text[a:b].strip() for a, b in unresolved],
        item_ids=list(dict.fromkeys(ids)),
    )


def _covering(name: str, linker: TitleLinker) -> list[int]:
    """Catalogue ids whose mentions cover most of `name` (year excluded); empty when the name is not a title."""
    core = _YEAR_SUFFIX.sub("", name).strip()
    if not core:
        return []
    mentions = linker.find(name)
    covered = sum(min(m.end, len(core)) - m.start for m in mentions if m.start < len(core))
    return [m.item_id for m in mentions] if covered >= TITLE_MATCH_SHARE * len(core) else []


def _clean_name(reply: str) -> str:
    """The first quoted or bold span of the answer's first line ('You should watch "Heat"' -> "Heat"), else
    that line without list markers, quotes and trailing punctuation."""
    line = next((line for line in reply.splitlines() if line.strip()), "")
    quoted = _QUOTED.search(line)
    if quoted is not None:
        return next(g for g in quoted.groups() if g is not None).strip()
    line = re.sub(r"^\s*(?:\d{1,2}[.)]|[-*\u2022])\s*", "", line)
    return line.strip().strip("\"'*\u201c\u201d").rstrip(".!").strip()


def _standardise(scores: np.ndarray) -> np.ndarray:
    """(x - mean) / std over the catalogue; all-equal scores give zeros."""
    std = float(scores.std())
    return (scores - scores.mean()) / std if std > 0 else np.zeros_like(scores, dtype=np.float64)
