"""OpenAI chat-completions wire models, with ilmrec's extras.

Extras: a request may carry `session_id` (or the `X-Session-Id` header) to continue a stored conversation;
responses carry `session_id` and `recommendations` (catalogue ids with titles and reasons), the final stream
chunk included. Requests are capped in size; unknown request fields are ignored and logged, as vLLM does.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    StrictBool,
    StrictFloat,
    StrictInt,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from serving.engines.base import MAX_STOP_STRINGS, MAX_TOKENS_CAP, FinishReason, SamplingParams
from serving.session_store import SESSION_ID_PATTERN

log = logging.getLogger(__name__)

MAX_MESSAGES = 64
MAX_CONTENT_CHARS = 4000


class TextPart(BaseModel):
    """A text content part (`{"type": "text", "text": ...}`); the only kind this server reads."""

    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    """One chat message. Content may be a string or a list of text parts; it is kept as one string."""

    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant"]
    content: str = Field(max_length=MAX_CONTENT_CHARS)

    @field_validator("content", mode="before")
    @classmethod
    def _join_text_parts(cls, content: Any) -> Any:
        if isinstance(content, list):
            return "".join(TextPart.model_validate(part).text for part in content)
        return content


class Recommendation(BaseModel):
    """One recommended movie, grounded in the catalogue."""

    item_id: int = Field(description="Catalogue id (MovieLens movieId).")
    title: str
    year: int | None = None
    genres: list[str] = Field(default_factory=list)
    reason: str = Field(description="One line on why, from metadata: shared genres, the mood or a constraint.")


class PromptTokensDetails(BaseModel):
    cached_tokens: int = Field(0, description="Prompt rows whose KV came from the engine's prefix cache (0 when "
                               "it has none or does not report it).")


class UsageInfo(BaseModel):
    """Token counts of the LLM's part of a turn (its sentence); the grounded list is not generated."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    prompt_tokens_details: PromptTokensDetails = Field(default_factory=PromptTokensDetails)


class StreamOptions(BaseModel):
    include_usage: StrictBool = False


class ChatCompletionRequest(BaseModel):
    """`POST /v1/chat/completions` body. Scalars are strict, as OpenAI's are: `"stream": "yes"` or
    `"max_tokens": "5"` is a 400, not silently coerced."""

    model_config = ConfigDict(extra="allow")

    model: str
    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    max_tokens: StrictInt | None = Field(None, ge=1, le=MAX_TOKENS_CAP)
    max_completion_tokens: StrictInt | None = Field(None, ge=1, le=MAX_TOKENS_CAP)
    temperature: StrictFloat | None = Field(None, ge=0.0, le=2.0)
    top_p: StrictFloat | None = Field(None, gt=0.0, le=1.0)
    seed: StrictInt | None = None
    stop: str | list[str] | None = None
    n: StrictInt | None = 1
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    session_id: str | None = Field(None, pattern=SESSION_ID_PATTERN)

    @field_validator("n")
    @classmethod
    def _one_choice(cls, n: int | None) -> int:
        if n not in (None, 1):
            raise ValueError("only n=1 is supported; send one request per completion")
        return 1

    @field_validator("stop")
    @classmethod
    def _few_stops(cls, stop: str | list[str] | None) -> str | list[str] | None:
        if isinstance(stop, list) and len(stop) > MAX_STOP_STRINGS:
            raise ValueError(f"at most {MAX_STOP_STRINGS} stop strings are allowed")
        if stop is not None and not all([stop] if isinstance(stop, str) else stop):
            raise ValueError("stop strings must be non-empty")
        return stop

    @field_validator("stream_options")
    @classmethod
    def _only_when_streaming(cls, options: StreamOptions | None, info: ValidationInfo) -> StreamOptions | None:
        if options is not None and not info.data.get("stream"):
            raise ValueError("stream_options is only allowed when stream is true")
        return options

    @model_validator(mode="after")
    def _log_ignored_fields(self) -> ChatCompletionRequest:
        if self.model_extra:
            log.info("ignoring unsupported request fields: %s", sorted(self.model_extra))
        return self

    def to_sampling_params(self) -> SamplingParams:
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        given = {
            "max_tokens": self.max_completion_tokens or self.max_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "seed": self.seed,
            "stop": tuple(stop),
        }
        return SamplingParams(**{k: v for k, v in given.items() if v is not None})


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: FinishReason
    logprobs: None = None


class ChatCompletionResponse(BaseModel):
    id: str = Field(default_factory=completion_id)
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=now)
    model: str
    choices: list[Choice]
    usage: UsageInfo
    session_id: str
    recommendations: list[Recommendation]


class DeltaMessage(BaseModel):
    """What a chunk adds; unset fields are left out, as OpenAI does (`{}` on the finishing chunk)."""

    role: Literal["assistant"] | None = None
    content: str | None = None

    @model_serializer(mode="wrap")
    def _omit_unset(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return {k: v for k, v in handler(self).items() if v is not None}


class ChunkChoice(BaseModel):
    index: int = 0
    delta: DeltaMessage
    finish_reason: FinishReason | None = None
    logprobs: None = None


class ChatCompletionChunk(BaseModel):
    """One SSE event. `recommendations` is set on the first chunk (with the role) and on the one that
    carries `finish_reason`."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: UsageInfo | None = None
    session_id: str
    recommendations: list[Recommendation] | None = None

    def to_sse(self, include_usage: bool) -> str:
        """`data: <json>` as OpenAI sends it: `usage` (null until the last chunk) only when the client asked
        for it with `stream_options.include_usage`; `recommendations` only on the first and the finishing chunk."""
        omit = {"usage"} if not include_usage else set()
        if self.recommendations is None:
            omit.add("recommendations")
        return f"data: {self.model_dump_json(exclude=omit)}\n\n"


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = Field(default_factory=now)
    owned_by: str = "ilmrec"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorInfo(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """OpenAI's error body; `status_code` (the HTTP status) and `retry_after_s` (the `Retry-After` header) are
    not serialised."""

    error: ErrorInfo
    status_code: int = Field(500, exclude=True)
    retry_after_s: int | None = Field(None, exclude=True)
