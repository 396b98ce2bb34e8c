"""One conversational turn: messages in, a grounded reply with catalogue recommendations out.

Per turn: update the dialogue state from the user's words -> candidates (fold-in retrieval, filters,
boosts) -> prompt with the candidates' soft tokens -> the LLM's one short sentence -> a list of the
recommended movies, each with a reason drawn from metadata. The LLM only introduces the picks, in one
sentence cut before anything title-like (`serving.reply_text.SentenceGuard`); which movies are recommended
is decided by retrieval and the state, so every recommended id is a catalogue id.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import get_args

import numpy as np
from pydantic import BaseModel, Field

from ilm_model.item_text import NO_GENRES
from ilm_model.soft_tokens import SoftTokenTable
from retrieval.catalogue import Catalogue, Movie
from retrieval.recommender import PopularityRecommender, Recommender
from serving.api.protocol import ChatMessage, PromptTokensDetails, Recommendation, UsageInfo
from serving.config import ServingConfig
from serving.conversation_prior import DialogueStatistics, smoothed_log_prior
from serving.dialogue import (
    MOOD_GENRES,
    CatalogueArrays,
    DialogueState,
    FeedbackKind,
    apply_feedback,
    candidates,
    read_history,
    update_state,
    year_range_text,
)
from serving.engines.base import FinishReason, LLMEngine, SamplingParams
from serving.engines.deadline import generate_within
from serving.errors import ConfigurationError, InvalidRequestError, UnknownSessionError
from serving.linking import Mention, TitleLinker
from serving.prompts import build_prompt
from serving.reply_opening import join_words, opening
from serving.reply_text import SentenceGuard
from serving.session_log import SessionLogRecord, SessionLogWriter
from serving.session_store import SESSION_ID_PATTERN, Session, SessionChange, SessionStore, TurnRecord
from serving.stop_strings import StopFilter
from serving.text_scores import TextScorer

log = logging.getLogger(__name__)

FALLBACK_CONTINUATION = "here are a few picks you might enjoy:"
"""Finishes the opening clause when the LLM's continuation of it was dropped (a fragment, or nothing)."""
NOTHING_FITS = (
    "I couldn't find a movie that fits everything you asked for. Try relaxing a constraint, such as a genre "
    "you ruled out or the year range."
)
CLARIFYING_QUESTION = "What's a movie you loved lately, or a genre you're in the mood for?"
"""Asked while no liked movie is known (cold start), so the next turn can personalise."""
UNKNOWN_TITLES = "I don't know {titles}, so I went by the rest of what you said."
AMBIGUOUS_TITLE = "I took \"{surface}\" to be {chosen}; if you meant {other}, tell me the year."
AMBIGUITY_RATIO = 0.25
"""Ask about a name when another movie of that name has at least this share of the chosen one's popularity."""
REPLY_STOP = "\n"  # the sentence ends at a newline: the grounded list follows it; a client's `stop` strings
# cut the whole reply instead (`_finish`)


class ChatTurn(BaseModel):
    """The outcome of one turn."""

    session_id: str
    reply: str
    recommendations: list[Recommendation]
    ranked: list[int] = Field(default_factory=list, description="The candidate ranking the recommendations head "
                              "(`config.ranking.ranked` long), for evaluation at deeper cut-offs.")
    state: DialogueState
    usage: UsageInfo
    finish_reason: FinishReason = "stop"


@dataclass(frozen=True)
class _Opened:
    """The session a turn belongs to: its id, its owner and the revision the turn read (None when new)."""

    session_id: str
    owner: str | None
    revision: int | None


class TurnStream(Iterator["str | ChatTurn"]):
    """Text deltas of the reply, then the final `ChatTurn`. `session_id` and `recommendations` (the turn's
    picks, as the final `ChatTurn` has them) are known before the first delta."""

    def __init__(
        self, session_id: str, events: Iterator[str | ChatTurn], recommendations: list[Recommendation],
        release: Callable[[], None] = lambda: None,
    ):
        self.session_id = session_id
        self.recommendations = recommendations
        self._events = events
        self._release = release

    def __next__(self) -> str | ChatTurn:
        return next(self._events)

    def close(self) -> None:
        """Stop early (the turn is then not saved) and release the engine, even before the first event."""
        self._events.close()
        self._release()


class ChatService:
    """Conversational recommendation over a catalogue, a retrieval model, an ILM soft-token table and an LLM.

    `popularity` `[n_items]` (catalogue rows, e.g. rating counts) breaks title ties and drives cold start;
    by default the recommender's own popularity counts when it has them (`TwoTowerRecommender` does), else
    the catalogue order stands in. `conversation` (`serving.conversation_prior.dialogue_statistics` of logged
    dialogues) adds the conversation prior, smoothed towards `popularity`, and the movies named beside the
    liked ones to the ranking, and orders cold start by the prior. With `text_scorer` (e.g. `serving.text_scores.ITCTextScorer`), the user's
    latest words are scored against every movie and fused with the CF scores. With `session_log`, every completed turn is appended to it, tagged with
    `model_id` (the LLM) and `checkpoint_id` (the trained artefacts).
    """

    def __init__(
        self,
        catalogue: Catalogue,
        recommender: Recommender,
        soft_tokens: SoftTokenTable,
        engine: LLMEngine,
        store: SessionStore,
        config: ServingConfig | None = None,
        *,
        popularity: Sequence[float] | np.ndarray | None = None,
        conversation: DialogueStatistics | None = None,
        text_scorer: TextScorer | None = None,
        session_log: SessionLogWriter | None = None,
        model_id: str = "unknown",
        checkpoint_id: str = "unknown",
    ):
        self.catalogue = catalogue
        self.recommender = recommender
        self.soft_tokens = soft_tokens
        self.engine = engine
        self.store = store
        self.config = config or ServingConfig()
        self.session_log = session_log
        self.text_scorer = text_scorer
        self.model_id, self.checkpoint_id = model_id, checkpoint_id
        if popularity is None and isinstance(getattr(recommender, "popularity", None), PopularityRecommender):
            popularity = recommender.popularity.counts
        self.popularity = None if popularity is None else np.asarray(popularity, dtype=np.float64)
        self.linker = TitleLinker(catalogue, self.popularity)
        log_prior = None
        if conversation is not None:
            base = np.zeros(len(catalogue)) if self.popularity is None else self.popularity
            log_prior = smoothed_log_prior(conversation.counts, base, self.config.ranking.prior_strength)
        self.arrays = CatalogueArrays.build(catalogue, self.popularity, log_prior,
                                            None if conversation is None else conversation.co_mentions,
                                            None if conversation is None else conversation.word_cues)
        if soft_tokens.hidden_size != engine.hidden_size:
            raise ConfigurationError(
                f"the soft-token table is {soft_tokens.hidden_size} wide but the LLM's hidden size is "
                f"{engine.hidden_size}: serve the ILM artefacts trained for this LLM"
            )
        missing = [int(i) for i in catalogue.ids if int(i) not in soft_tokens]
        if missing:
            raise ConfigurationError(
                f"{len(missing)} catalogue items have no soft tokens (e.g. {missing[:3]}): rebuild the soft-token "
                "table for this catalogue"
            )

    def chat(
        self,
        session_id: str | None,
        messages: Sequence[ChatMessage],
        params: SamplingParams | None = None,
        *,
        owner: str | None = None,
    ) -> ChatTurn:
        """One turn, all at once. See `chat_stream`."""
        turn = None
        for event in self.chat_stream(session_id, messages, params, owner=owner):
            if isinstance(event, ChatTurn):
                turn = event
        assert turn is not None, "chat_stream always ends with a ChatTurn"
        return turn

    def chat_stream(
        self,
        session_id: str | None,
        messages: Sequence[ChatMessage],
        params: SamplingParams | None = None,
        *,
        owner: str | None = None,
    ) -> TurnStream:
        """Answer the last message of `messages` (which must be the user's).

        With `session_id`, continue that stored conversation (UnknownSessionError when unknown, expired or
        created by another `owner`) from the last message only; without, start a new session owned by `owner`
        (an opaque id of the caller, e.g. an API-key fingerprint) whose state is rebuilt from every message
        in order (user messages update it; movies named in assistant messages count as already recommended).
        Validation, retrieval and prompt building happen before this returns; the stream then yields text
        deltas and finally the `ChatTurn`, after which the session is saved atomically (a concurrent turn of
        the same session is not lost: see `_commit`).
        """
        started = time.perf_counter()
        messages = list(messages)
        if not messages or messages[-1].role != "user":
            raise InvalidRequestError("the last message must be the user's", param="messages")
        if not messages[-1].content.strip():
            raise InvalidRequestError("the last user message is empty", param="messages")
        if session_id is None:
            opened = _Opened(secrets.token_urlsafe(16), owner, None)
            before = self.read_history(messages[:-1])
        else:
            stored = self.session(session_id, owner=owner)
            opened = _Opened(session_id, owner, stored.revision)
            before = stored.state
        state = self._read(before, messages[-1].content)
        ranked = self.rank(state)
        picks = ranked[: self.config.n_recommendations]
        params = params or SamplingParams()
        events, release = self._answer(opened, state, messages[-1].content, picks, ranked, params, started,
                                       opening(before, state, self.catalogue))
        return TurnStream(opened.session_id, events, self.describe(picks, state), release)

    def rank(self, state: DialogueState) -> list[int]:
        """The candidate ranking for `state` (`config.ranking.ranked` long at most); a turn recommends its head."""
        ranking = self.config.ranking
        text_scores = None
        if self.text_scorer is not None and state.user_texts and ranking.text_weight > 0:
            text_scores = self.text_scorer.scores(" ".join(state.user_texts[-ranking.text_turns :]))
        return candidates(
            state, self.recommender, self.catalogue, max(self.config.n_recommendations, ranking.ranked),
            config=ranking, text_scores=text_scores, arrays=self.arrays,
        )

    def health(self) -> bool:
        """Whether both the LLM engine and the session store can serve."""
        return self.engine.health() and self.store.health()

    def close(self) -> None:
        """Close the LLM engine, after a generation still running (the worker of a reply cut short) has
        stopped: exiting the process under a running torch op aborts it."""
        self.engine.close()

    def feedback(
        self, session_id: str, item_id: int, kind: FeedbackKind, *, owner: str | None = None
    ) -> DialogueState:
        """Record a verdict on one movie in a stored session (`serving.dialogue.apply_feedback`) and return
        the new state; the next turn folds it in or excludes it.

        InvalidRequestError for a malformed session id, an unknown kind or a movie outside the catalogue;
        UnknownSessionError when the session is unknown, expired or created by another `owner`.
        """
        _check_session_id(session_id)
        if kind not in get_args(FeedbackKind):
            raise InvalidRequestError(f"kind must be one of {', '.join(get_args(FeedbackKind))}, got {kind!r}",
                                      param="kind")
        if item_id not in self.catalogue:
            raise InvalidRequestError(f"item_id {item_id} is not in the catalogue", param="item_id")

        def change(current: Session | None) -> Session:
            if current is None or current.owner != owner:
                raise _unknown_session(session_id)
            return current.model_copy(update={"state": apply_feedback(current.state, item_id, kind)})

        return self.store.update(session_id, change).state

    def session(self, session_id: str, *, owner: str | None = None) -> Session:
        """A stored conversation (state and turns), e.g. to show it again; the same errors as `feedback`."""
        _check_session_id(session_id)
        stored = self.store.load(session_id)
        if stored is None or stored.owner != owner:
            raise _unknown_session(session_id)
        return stored

    def describe(self, item_ids: Sequence[int], state: DialogueState) -> list[Recommendation]:
        """Recommendations for `item_ids` (catalogue ids) as a turn presents them, reasons read from `state`
        (so verdicts given since that turn show up in them: a movie liked later is cited, never by itself)."""
        return [self._recommendation(self.catalogue[i], state) for i in item_ids]

    def _read(self, state: DialogueState, user_text: str) -> DialogueState:
        return update_state(state, user_text, self.linker, self.catalogue)

    def read_history(self, messages: Sequence[ChatMessage]) -> DialogueState:
        """The state a whole message history builds (`serving.dialogue.read_history`)."""
        return read_history(((m.role, m.content) for m in messages), self.linker, self.catalogue)

    def _answer(
        self,
        opened: _Opened,
        state: DialogueState,
        user_text: str,
        picks: list[int],
        ranked: list[int],
        params: SamplingParams,
        started: float,
        opener: str,
    ) -> tuple[Iterator[str | ChatTurn], Callable[[], None]]:
        """Start the generation of the sentence that `opener` (`serving.reply_opening`) begins, now (so errors,
        a busy engine included, surface before streaming); return the event generator and what releases the
        engine when the turn is dropped."""
        if not picks:
            return self._finish(
                opened, state, user_text, picks, ranked,
                self._framed(self._fixed(NOTHING_FITS), state, user_text, picks), UsageInfo(), "stop",
                params.stop, started,
            ), lambda: None
        prompt = build_prompt(
            self.engine, user_text, state, picks[: self.config.prompt_items], self.catalogue, self.soft_tokens,
            max_user_tokens=self.config.max_user_tokens_in_prompt, opening=opener,
        )
        generation = generate_within(
            self.engine, self.config.generation_timeout_s, prompt.embeds,
            params.model_copy(
                update={"max_tokens": min(params.max_tokens, self.config.reply_max_tokens), "stop": (REPLY_STOP,)}
            ),
            queue_timeout_s=self.config.queue_timeout_s,
        )

        def sentence() -> Iterator[str]:
            yield opener
            guard = SentenceGuard(self.config.reply_max_chars, opening=opener)
            try:
                for delta in generation:
                    shown = guard.feed(delta)
                    if shown:
                        yield shown
                    if guard.done:
                        break
                tail = guard.close()
                if tail:
                    yield tail
            finally:
                generation.close()
            if not guard.shown:
                yield " " + FALLBACK_CONTINUATION

        def usage() -> UsageInfo:
            u = generation.usage
            return UsageInfo(prompt_tokens=u.prompt_tokens, completion_tokens=u.completion_tokens,
                             total_tokens=u.total_tokens,
                             prompt_tokens_details=PromptTokensDetails(cached_tokens=u.cached_tokens))

        return self._finish(
            opened, state, user_text, picks, ranked, self._framed(sentence, state, user_text, picks), usage,
            lambda: generation.finish_reason, params.stop, started,
        ), generation.close

    def _framed(
        self, sentence: Callable[[], Iterator[str]], state: DialogueState, user_text: str, picks: list[int]
    ) -> Callable[[], Iterator[str]]:
        """The sentence, after notes on titles the linker could not find or had to choose between, and, while
        nothing liked is known and there are picks, followed by `CLARIFYING_QUESTION`."""
        mentions = self.linker.find(user_text)
        unknown = self.linker.unrecognised(user_text, mentions)
        notes = [UNKNOWN_TITLES.format(titles=join_words([f'"{t}"' for t in unknown]))] if unknown else []
        notes += [
            AMBIGUOUS_TITLE.format(surface=m.surface, chosen=self.catalogue[m.item_id].display_title,
                                   other=join_words([self.catalogue[i].display_title for i in others], "or"))
            for m in mentions if (others := self._rivals(m))
        ]
        before = " ".join(notes) + " " if notes else ""
        after = " " + CLARIFYING_QUESTION if picks and not state.liked else ""

        def framed() -> Iterator[str]:
            if before:
                yield before
            inner = sentence()
            try:
                yield from inner
            finally:
                inner.close()
            if after:
                yield after

        return framed

    def _rivals(self, mention: Mention) -> list[int]:
        """Same-name movies popular enough (`AMBIGUITY_RATIO`) that the choice of `mention` is worth a question."""
        if self.popularity is None:
            return list(mention.alternatives[:2])
        chosen = self.popularity[self.catalogue.row(mention.item_id)]
        return [i for i in mention.alternatives[:2]
                if self.popularity[self.catalogue.row(i)] >= AMBIGUITY_RATIO * chosen]

    def _finish(
        self,
        opened: _Opened,
        state: DialogueState,
        user_text: str,
        picks: list[int],
        ranked: list[int],
        sentence: Callable[[], Iterator[str]],
        usage: UsageInfo | Callable[[], UsageInfo],
        finish_reason: FinishReason | Callable[[], FinishReason | None],
        stops: Sequence[str],
        started: float,
    ) -> Iterator[str | ChatTurn]:
        """Stream the sentence, then the grounded list, both cut before the first of `stops`; save (and log)
        the session; end with the ChatTurn (whose recommendations are all the picks, whatever the cut)."""
        parts: list[str] = []
        first_token_ms: float | None = None
        cut = StopFilter(stops)
        deltas = sentence()
        try:
            for delta in deltas:
                shown = cut.feed(delta)
                if shown:
                    if first_token_ms is None:
                        first_token_ms = 1000 * (time.perf_counter() - started)
                    parts.append(shown)
                    yield shown
                if cut.stopped:
                    break
        finally:
            deltas.close()  # on an early close too: frees the engine
        recommendations = [self._recommendation(self.catalogue[i], state) for i in picks]
        listing = "".join(
            f"\n{n}. {self.catalogue[r.item_id].display_title}: {r.reason}"
            for n, r in enumerate(recommendations, start=1)
        )
        shown = cut.feed("\n" + listing if listing else "") + cut.close()
        if shown:
            if first_token_ms is None:
                first_token_ms = 1000 * (time.perf_counter() - started)
            parts.append(shown)
            yield shown
        reply = "".join(parts)
        record = TurnRecord(user=user_text, reply=reply, recommended=picks)
        state = self.store.update(opened.session_id, self._commit(opened, state, record)).state
        if self.session_log is not None:
            self.session_log.append(
                SessionLogRecord(
                    session_id=opened.session_id,
                    turn=state.turn - 1,
                    user_text=user_text,
                    mentions=[m.item_id for m in self.linker.find(user_text)],
                    candidates=ranked,
                    recommendations=picks,
                    reply=reply,
                    model_id=self.model_id,
                    checkpoint_id=self.checkpoint_id,
                    latency_ms=1000 * (time.perf_counter() - started),
                    first_token_ms=first_token_ms,
                )
            )
        yield ChatTurn(
            session_id=opened.session_id,
            reply=reply,
            recommendations=recommendations,
            ranked=ranked,
            state=state,
            usage=usage() if callable(usage) else usage,
            finish_reason="stop" if cut.stopped else (finish_reason() if callable(finish_reason) else finish_reason)
            or "stop",
        )

    def _commit(self, opened: _Opened, state: DialogueState, record: TurnRecord) -> SessionChange:
        """The store update that saves a turn: its state (with its picks marked recommended) and its record.

        When another turn of the session was saved after this one read it, this turn's message is read
        again on top of the newer state, so neither turn's update is lost. A session that expired meanwhile
        is saved afresh.
        """

        def change(current: Session | None) -> Session:
            if current is None:
                current, read = Session(owner=opened.owner), state
            else:
                read = state if current.revision == opened.revision else self._read(current.state, record.user)
            recommended = list(dict.fromkeys(read.recommended + record.recommended))
            shown = record.recommended or read.shown  # "the second one" names a pick of the last list shown
            return current.model_copy(
                update={"state": read.model_copy(update={"recommended": recommended, "shown": shown}),
                        "turns": [*current.turns, record]}
            )

        return change

    @staticmethod
    def _fixed(text: str) -> Callable[[], Iterator[str]]:
        def sentence() -> Iterator[str]:
            yield text

        return sentence

    def _recommendation(self, movie: Movie, state: DialogueState) -> Recommendation:
        return Recommendation(
            item_id=movie.item_id,
            title=movie.title,
            year=movie.year,
            genres=[g for g in movie.genres if g != NO_GENRES],
            reason=self._reason(movie, state),
        )

    def _reason(self, movie: Movie, state: DialogueState) -> str:
        """One line grounded in metadata: shared genres with a liked movie, then what was asked for; else the
        collaborative signal (with liked movies) or popularity (without)."""
        genres = [g for g in movie.genres if g != NO_GENRES]
        parts: list[str] = []
        liked = [self.catalogue[i] for i in state.liked if i in self.catalogue and i != movie.item_id]
        if liked:
            best = max(liked, key=lambda m: _genre_overlap(m, genres))
            shared = [g for g in genres if g in best.genres]
            if shared:
                parts.append(f"shares {join_words(shared[:3])} with {best.display_title}")
        asked = [g for g in genres if g in state.include_genres]
        if asked:
            parts.append(f"the {join_words(asked)} you asked for")
        if state.mood:
            fitting = [g for g in genres if g in MOOD_GENRES[state.mood][0]]
            if fitting:
                parts.append(f"{state.mood} in tone ({join_words(fitting[:2])})")
        if state.exclude_genres:
            parts.append(f"no {join_words(state.exclude_genres)}")
        if (state.year_min or state.year_max) and movie.year:
            parts.append(f"from {movie.year} ({year_range_text(state)})")
        if not parts and liked:  # no metadata in common: the session vector (collaborative filtering) chose it
            parts.append(f"people who liked {join_words([m.display_title for m in liked[:2]])} liked it too")
        if not parts:
            parts.append(f"a popular {genres[0]} pick" if genres else "a popular pick")
        text = "; ".join(parts)
        return text[0].upper() + text[1:]


def _genre_overlap(liked: Movie, genres: Sequence[str]) -> tuple[int, float]:
    """How many genres a liked movie shares with a pick's, then their Jaccard similarity, so that of two liked
    movies sharing as many genres the closer one is cited (not always the first-named)."""
    shared, union = set(liked.genres) & set(genres), set(liked.genres) | set(genres)
    return len(shared), len(shared) / len(union) if union else 0.0


def _check_session_id(session_id: str) -> None:
    if not re.fullmatch(SESSION_ID_PATTERN, session_id):
        raise InvalidRequestError("session_id must be 1-128 of A-Z a-z 0-9 _ -", param="session_id")


def _unknown_session(session_id: str) -> UnknownSessionError:
    return UnknownSessionError(
        f"session {session_id!r} does not exist or has expired; omit session_id to start a new one",
        param="session_id",
    )


