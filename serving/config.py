"""Configuration of the serving tier (a section of `app.settings.Settings`)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class RankingConfig(BaseModel):
    """How dialogue state turns into candidates (`serving.dialogue.candidates`)."""

    model_config = ConfigDict(extra="forbid")

    pool: int = Field(300, ge=1, description="Candidates fetched from the recommender before filters and boosts.")
    disliked_weight: float = Field(
        -0.5, le=0.0, description="Fold-in weight of a disliked item (liked items weigh +1); negative pushes away."
    )
    include_boost: float = Field(
        0.5, ge=0.0, description="Added to an item's score (base in (0, 1], by rank) when it has a requested genre."
    )
    mood_boost: float = Field(
        0.3, ge=0.0, description="Added for a genre the mood prefers, subtracted for one it pushes away."
    )
    diversity: float = Field(
        0.3, ge=0.0, description="Cold start only: penalty per unit of genre overlap (Jaccard) with earlier picks."
    )


class ServingConfig(BaseModel):
    """What the chat service recommends and how long it lets the LLM talk."""

    model_config = ConfigDict(extra="forbid")

    n_recommendations: int = Field(5, ge=1, le=20, description="Movies recommended per turn.")
    reply_max_tokens: int = Field(
        48, ge=1, le=256, description="Cap on the LLM's introductory sentence; a client's max_tokens can only lower it."
    )
    max_user_chars_in_prompt: int = Field(
        400, ge=1, description="The latest user message is cut to this many characters inside the LLM prompt."
    )
    ranking: RankingConfig = Field(default_factory=RankingConfig)
