"""Configuration of the serving tier (a section of `app.settings.Settings`)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


class RankingConfig(BaseModel):
    """How dialogue state turns into candidates (`serving.dialogue.candidates`)."""

    model_config = ConfigDict(extra="forbid")

    pool: int = Field(300, ge=1, description="Candidates fetched from the recommender before filters and boosts.")
    ranked: int = Field(
        50, ge=1, le=500, description="Length of the ranking a turn returns beside its picks (`ChatTurn.ranked`), "
        "for evaluation at cut-offs beyond `n_recommendations`.",
    )
    cf_weight: float = Field(1.0, ge=0.0, description="Weight of the standardised session-vector (CF) scores.")
    cf_support: float = Field(
        5.0, ge=0.0, description="Shrinks a movie's standardised CF score towards the mean by n / (n + cf_support), "
        "n its popularity (rating count): a movie few people rated has a barely trained embedding, and with 0 (no "
        "shrinkage) 'I loved Toy Story and Finding Nemo' put Chocolat (1988) and The Diary of Anne Frank (1959), "
        "two ratings each, fourth and fifth, and 'I loved Amelie' four movies with 1-6 ratings on top. 5: on the "
        "ReDial report split (10 folds) Recall@10 0.187 -> 0.183 and Recall@1 0.039 -> 0.040 with the "
        "conversation prior, 0.058 -> 0.067 and 0.010 -> 0.011 without; on the tune split 0.165 -> 0.162 and "
        "0.060 -> 0.068 (benchmarks/results/dialogue_ranking_support_{tune,report}.md).",
    )
    text_weight: float = Field(
        0.0, ge=0.0, description="Weight of the standardised ITC text->item scores of the user's recent words "
        "(used when the service has a text scorer). 0 by default: re-tuned with the working ITC on the ReDial "
        "tune split (benchmarks/results/dialogue_ranking_tune.md), 0.1 tied Recall@10 and 0.25, 0.5 and 1 lowered it.",
    )
    popularity_weight: float = Field(
        0.25, ge=0.0, description="Weight of standardised log(1 + popularity) in the fused score (0.25 chosen on "
        "the ReDial tune split)."
    )
    prior_weight: float = Field(
        4.0, ge=0.0, description="Weight of the standardised log conversation prior in the fused score, when the "
        "service has one (`serving.conversation_prior`, learned from the dialogues of `conversation_logs`). 4 "
        "(with prior_strength 50) chosen on the ReDial tune split, cross-fitted "
        "(benchmarks/results/dialogue_ranking_prior_tune.md)."
    )
    co_mention_weight: float = Field(
        1.0, ge=0.0, description="Weight of the standardised log(1 + co-mentions) of the liked movies in the "
        "fused score, when the service has logged dialogues: how often each movie was recommended in a dialogue "
        "in which one this person likes came up. On the ReDial tune split (cross-fitted) 1 raised Recall@10 from "
        "0.112 to 0.124; 2 and 4 tied (benchmarks/results/dialogue_ranking_prior_boosts_tune.md). Counting what "
        "was recommended beside a movie rather than what came up beside it: tune split (10 folds) Recall@10 "
        "0.150 -> 0.160, 0.5 and 2 no better (benchmarks/results/dialogue_ranking_beside_cues_tune.md)."
    )
    cue_weight: float = Field(
        0.0, ge=0.0, description="Weight of the standardised word cues of the user's recent messages in the fused "
        "score, when the ranking has word cues from logged dialogues: how much likelier those words were in "
        "logged dialogues that recommended each movie (`serving.conversation_prior.WordCues.scores`). 0 (off): "
        "on the ReDial tune split (10 folds) 0.25 with cue_smoothing 3 and cue_turns 1 raised Recall@10 0.160 "
        "-> 0.163 and Recall@1 0.037 -> 0.041, 0.5 and more lowered Recall@10; on the report split it lowered "
        "Recall@10 0.167 -> 0.158 (benchmarks/results/dialogue_ranking_beside_cues_{tune,report}.md). With "
        "diversity 0.003, tune 0.165 -> 0.172 (0.25, mu 3) and 0.175 (0.5, mu 1), report 0.187 -> 0.181 and 0.175 "
        "(dialogue_ranking_beside_div0.003_cues_tune.md, dialogue_ranking_beside_div0003_cues_report.md)."
    )
    cue_smoothing: float = Field(
        3.0, gt=0.0, description="Pseudo-dialogues a movie's word rates are smoothed towards all dialogues' with "
        "(`WordCues.scores`' mu): the fewer dialogues recommended a movie, the less its words count."
    )
    cue_turns: int = Field(
        1, ge=1, le=3, description="How many of the latest user messages the word cues read (1 beat 2 and 3 on "
        "the ReDial tune split)."
    )
    prior_strength: float = Field(
        50.0, gt=0.0, description="Pseudo-dialogues of rating popularity the conversation prior is smoothed with "
        "(`smoothed_log_prior`'s a): the fewer logged dialogues, the more rating popularity decides."
    )
    text_turns: int = Field(2, ge=1, le=3, description="How many of the latest user messages form the ITC query.")
    disliked_weight: float = Field(
        -0.5, le=0.0, description="Fold-in weight of a disliked item (liked items weigh +1); negative pushes away."
    )
    neutral_weight: float = Field(
        0.5, description='Fold-in weight of a movie mentioned without a verdict ("I already saw X").'
    )
    recommended_weight: float = Field(
        0.0, ge=0.0, description="Fold-in weight of earlier recommendations the person gave no verdict on "
        "(0: not folded in). In replayed logs these are the human recommender's suggestions.",
    )
    deny_list: list[int] = Field(
        default_factory=list, description="Catalogue ids never recommended, whatever the conversation (an "
        "operator's block list).",
    )
    include_boost: float = Field(
        0.5, ge=0.0, description="Added to an item's score (base in (0, 1], by rank) times the share of the "
        "requested genres it has.",
    )
    mood_boost: float = Field(
        0.3, ge=0.0, description="Added for a genre the mood prefers, subtracted for one it pushes away."
    )
    diversity: float = Field(
        0.003, ge=0.0, description="Without liked items (cold start): penalty per unit of genre overlap (Jaccard) "
        "with earlier picks (on a base score of 1 - rank / n_allowed; 0.003 is ~27 of ML-latest-small's 9,742 "
        "ranks). 0.003 still spreads cold-start picks over genres; less costs recall: on the ReDial tune split "
        "(10 folds, prior and co-mentions) none gave Recall@10 0.168, 0.003 0.165, 0.01 0.162 and 0.03 0.160 "
        "(benchmarks/results/dialogue_ranking_beside_diversity_tune.md); on the report split 0.198, 0.187, 0.178 "
        "and 0.167 (dialogue_ranking_beside_diversity_report.md).",
    )


class ServingConfig(BaseModel):
    """What the chat service recommends and how long it lets the LLM talk."""

    model_config = ConfigDict(extra="forbid")

    n_recommendations: int = Field(5, ge=1, le=20, description="Movies recommended per turn.")
    reply_max_tokens: int = Field(
        48, ge=1, le=256, description="Cap on the LLM's introductory sentence; a client's max_tokens can only lower it."
    )
    reply_max_chars: int = Field(
        200, ge=20, description="The LLM's sentence is cut at this many characters (at a word boundary)."
    )
    prompt_items: int = Field(
        3, ge=1, le=20, description="How many of the picks (the best first) the LLM's prompt shows, each as its soft "
        "tokens and description; the reply lists all `n_recommendations`. Fewer rows to prefill: a sooner first "
        "token (about 34 rows per item with 8 soft tokens)."
    )
    max_user_tokens_in_prompt: int = Field(
        128, ge=1, description="The latest user message is cut to this many of the LLM's tokens inside its prompt "
        "(tokens, not characters: an emoji can take several)."
    )
    ranking: RankingConfig = Field(default_factory=RankingConfig)
    engine: Literal["transformers", "vllm", "vllm-remote"] = Field(
        "transformers",
        description="LLM engine: in-process transformers; in-process vLLM (needs `vllm`, e.g. the `make vllm` "
        "venv); or a vLLM server at `vllm_url` started with --enable-prompt-embeds (docs/vllm.md).",
    )
    llm_precision: Literal["float32", "bfloat16", "int8"] = Field(
        "float32",
        description="Transformers engine only: the frozen LLM's arithmetic while serving. float32 (greedy replies "
        "match the vLLM engines'); bfloat16; or int8 (torch's dynamic int8 quantisation of the Linear layers, CPU "
        "only). Faster, and worse: in benchmarks/results/serving_profile.md int8 prefills 2.1x and decodes 1.6x "
        "faster than float32, and the bundled 135M LLM's sentence often goes off topic.",
    )
    vllm_url: str = Field(
        "http://127.0.0.1:8001",
        pattern=r"^https?://",
        description="Base URL of the vLLM OpenAI-compatible server (engine `vllm-remote`); keep it on loopback "
        "or a private network.",
    )
    vllm_max_model_len: int = Field(
        2048, ge=64, description="Context length of the in-process vLLM engine (prompt plus reply tokens)."
    )
    generation_timeout_s: float = Field(
        60.0, gt=0, description="A reply the LLM has not finished within this many seconds of starting it fails "
        "with 504 (and Retry-After), so no request hangs on a stuck engine. Waiting for the engine does not count "
        "(see queue_timeout_s)."
    )
    queue_timeout_s: float = Field(
        60.0, gt=0, description="A reply the engine has not started within this many seconds (it serves others "
        "first) fails with 503 and Retry-After before anything is streamed. 60 s: 16 concurrent sessions on the "
        "transformers engine queue for up to ~30 s on a busy 2-core machine."
    )


class SessionStoreConfig(BaseModel):
    """Where conversations live between turns (`serving.session_store.open_session_store`)."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(
        "memory",
        description="`memory` (in-process, lost on restart) or a Redis URL such as redis://127.0.0.1:6379/0, "
        "which several API processes can share. Put the password in `password`, not in the URL.",
    )
    password: SecretStr | None = Field(None, description="Redis password (AUTH); None when Redis has none.")
    ttl_s: float = Field(3600.0, gt=0, description="A session expires this many seconds after its last write.")
    max_sessions: int = Field(10_000, ge=1, description="Memory store only: past this, the least recent goes.")
    key_prefix: str = Field("ilmrec:session:", min_length=1, description="Redis only: prefix of session keys.")

    @field_validator("url")
    @classmethod
    def _known_store(cls, url: str) -> str:
        if url != "memory" and not url.startswith(REDIS_SCHEMES):
            raise ValueError(f"session store must be `memory` or a URL starting with {' or '.join(REDIS_SCHEMES)}, "
                             f"got {url!r}")
        return url
