"""Handler logic behind the routes, and the one mapping from exceptions to OpenAI's error schema."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import Any

from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.exceptions import HTTPException

from serving.api.protocol import (
    AssistantMessage,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    Choice,
    ChunkChoice,
    DeltaMessage,
    ErrorInfo,
    ErrorResponse,
    ModelCard,
    ModelList,
    completion_id,
    now,
)
from serving.errors import (
    EngineUnavailableError,
    InvalidRequestError,
    RequestTooLargeError,
    ServingError,
    SessionStoreUnavailableError,
    UnknownModelError,
)
from serving.service import ChatService, ChatTurn, TurnStream

log = logging.getLogger(__name__)


def create_error_response(exc: BaseException) -> ErrorResponse:
    """OpenAI's `{"error": {message, type, param, code}}` with its HTTP status; never a traceback.

    ServingError -> its own status and type; request validation -> 400; HTTP errors (unknown route, wrong
    method) -> their status; NotImplementedError -> 501; anything else -> 500 "Internal server error"
    (logged here with its traceback).
    """
    if isinstance(exc, ServingError):
        error = _error(exc.status_code, exc.message, exc.error_type, exc.param, exc.code)
        return error.model_copy(update={"retry_after_s": exc.retry_after_s})
    if isinstance(exc, (RequestValidationError, ValidationError)):
        errors = exc.errors()
        first = errors[0] if errors else {"loc": (), "msg": str(exc)}
        body_problem = _body_problem(first, getattr(exc, "body", None))
        if body_problem is not None:
            return _error(400, body_problem, "invalid_request_error", None, "invalid_request")
        param = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or None
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        message = f"{param}: {first['msg']}{more}" if param else f"{first['msg']}{more}"
        return _error(400, message, "invalid_request_error", param, "invalid_request")
    if isinstance(exc, HTTPException) and exc.status_code == 413:  # the body cap, hit while reading
        return _error(413, str(exc.detail), "invalid_request_error", None, RequestTooLargeError.code)
    if isinstance(exc, HTTPException):
        kind = "invalid_request_error" if exc.status_code < 500 else "internal_server_error"
        return _error(exc.status_code, str(exc.detail), kind, None, None)
    if isinstance(exc, NotImplementedError):
        return _error(501, str(exc) or "not implemented", "not_implemented", None, "not_implemented")
    log.error("unhandled error while serving a request", exc_info=exc)
    return _error(500, "Internal server error", "internal_server_error", None, None)


def _body_problem(error: Mapping[str, Any], body: object) -> str | None:
    """What is wrong with the body as a whole (not JSON, empty, not an object), or None for a field error.
    For bad JSON, where: FastAPI reports a character offset, which becomes a line and column."""
    loc = tuple(error.get("loc", ()))
    if error.get("type") == "json_invalid":
        offset = next((p for p in loc if isinstance(p, int)), 0)
        where = f"character {offset}"
        if isinstance(body, str):
            line = body.count("\n", 0, offset) + 1
            where = f"line {line}, column {offset - body.rfind(chr(10), 0, offset)} ({where})"
        reason = (error.get("ctx") or {}).get("error", "malformed")
        return f"the request body is not valid JSON: {reason} at {where}; send one JSON object"
    if loc != ("body",):
        return None
    if error.get("type") == "missing":
        return "the request body is empty; send a JSON object with `model` and `messages`"
    return "the request body must be a JSON object with `model` and `messages` (Content-Type: application/json)"


def _error(status: int, message: str, kind: str, param: str | None, code: str | None) -> ErrorResponse:
    return ErrorResponse(error=ErrorInfo(message=message, type=kind, param=param, code=code), status_code=status)


class OpenAIServingChat:
    """`/v1/chat/completions` and `/v1/models` over a ChatService, for one served model name."""

    def __init__(self, service: ChatService, model_name: str):
        self.service = service
        self.model_name = model_name

    def list_models(self) -> ModelList:
        return ModelList(data=[ModelCard(id=self.model_name)])

    def retrieve_model(self, model: str) -> ModelCard:
        self._check_model(model)
        return ModelCard(id=self.model_name)

    def check_health(self) -> None:
        """Raise the 503 error of the first part that cannot serve: the LLM engine or the session store."""
        if not self.service.engine.health():
            raise EngineUnavailableError("the LLM engine is not available")
        if not self.service.store.health():
            raise SessionStoreUnavailableError("the session store is unreachable; retry shortly")

    def create_chat_completion(
        self, request: ChatCompletionRequest, header_session_id: str | None = None, owner: str | None = None
    ) -> ChatCompletionResponse | SSEStream:
        """A full response, or (with `stream: true`) the SSE events; errors before streaming raise.

        `owner` identifies the caller (an API-key fingerprint): new sessions are bound to it, and only it
        may continue them.
        """
        self._check_model(request.model)
        if header_session_id is not None and request.session_id not in (None, header_session_id):
            raise InvalidRequestError(
                "the X-Session-Id header and the session_id field disagree; send one of them", param="session_id"
            )
        session_id = request.session_id or header_session_id
        params = request.to_sampling_params()
        if request.stream:
            turns = self.service.chat_stream(session_id, request.messages, params, owner=owner)
            include_usage = bool(request.stream_options and request.stream_options.include_usage)
            return SSEStream(turns, self.model_name, include_usage)
        turn = self.service.chat(session_id, request.messages, params, owner=owner)
        return ChatCompletionResponse(
            model=self.model_name,
            choices=[Choice(message=AssistantMessage(content=turn.reply), finish_reason=turn.finish_reason)],
            usage=turn.usage,
            session_id=turn.session_id,
            recommendations=turn.recommendations,
        )

    def _check_model(self, model: str) -> None:
        if model != self.model_name:
            raise UnknownModelError(
                f"model {model!r} is not served here; use {self.model_name!r} (see GET /v1/models)", param="model"
            )


class SSEStream(Iterator[str]):
    """`data: <chunk JSON>` events for one streamed turn, then `data: [DONE]`.

    First a chunk with the assistant role and the turn's `recommendations` (known before the LLM starts, so a
    client can show the picks at once), then one per text delta, then a chunk with `finish_reason`,
    `recommendations` (the same) and `session_id`; with `stream_options.include_usage`, a last chunk with no
    choices and the usage. An error after streaming has begun is sent as an `{"error": ...}` event before
    `[DONE]`.
    """

    def __init__(self, turns: TurnStream, model: str, include_usage: bool):
        self.session_id = turns.session_id
        self._turns = turns
        self._events = self._generate(turns, model, include_usage)

    def __next__(self) -> str:
        return next(self._events)

    def close(self) -> None:
        self._events.close()
        self._turns.close()

    def _generate(self, turns: TurnStream, model: str, include_usage: bool) -> Iterator[str]:
        chunk_id, created = completion_id(), now()

        def chunk(**fields: object) -> str:
            body = ChatCompletionChunk(id=chunk_id, created=created, model=model, session_id=self.session_id,
                                       **fields)
            return body.to_sse(include_usage)

        try:
            yield chunk(choices=[ChunkChoice(delta=DeltaMessage(role="assistant", content=""))],
                        recommendations=turns.recommendations)
            for event in turns:
                if isinstance(event, ChatTurn):
                    yield chunk(
                        choices=[ChunkChoice(delta=DeltaMessage(), finish_reason=event.finish_reason)],
                        recommendations=event.recommendations,
                    )
                    if include_usage:
                        yield chunk(choices=[], usage=event.usage)
                else:
                    yield chunk(choices=[ChunkChoice(delta=DeltaMessage(content=event))])
        except Exception as exc:  # noqa: BLE001 - the status line is sent already: report in-band
            yield f"data: {create_error_response(exc).model_dump_json()}\n\n"
        yield "data: [DONE]\n\n"
