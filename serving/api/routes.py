"""Thin routes: fetch the handler from `app.state`, call it, return JSON or SSE."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import iterate_in_threadpool

from serving.api.protocol import ChatCompletionRequest, ChatCompletionResponse, ErrorResponse, ModelCard, ModelList
from serving.api.serving import OpenAIServingChat, SSEStream
from serving.session_store import SESSION_ID_PATTERN

router = APIRouter()


ERROR_STATUSES = {
    400: "Invalid request: the message names the bad parameter",
    401: "Missing or wrong API key",
    404: "Unknown model, session or route",
    409: "Another turn of the same session is being saved; retry",
    413: "Request body too large",
    500: "Internal error (no details are sent)",
    503: "The LLM engine is busy (the reply did not start within serving.queue_timeout_s) or unavailable, or the "
         "session store is unavailable; see Retry-After",
    504: "The LLM engine did not finish the reply within serving.generation_timeout_s of starting it; see "
         "Retry-After",
}

def _errors(*statuses: int) -> dict[int | str, dict[str, object]]:
    """OpenAPI entries for the error statuses a route can answer, all in OpenAI's error schema."""
    return {status: {"model": ErrorResponse, "description": ERROR_STATUSES[status]} for status in statuses}


CHAT_RESPONSES: dict[int | str, dict[str, object]] = {
    200: {"model": ChatCompletionResponse,
          "content": {"text/event-stream": {"schema": {"type": "string", "description": "SSE chunks, then [DONE]"}}},
          "description": "The completion, or with `stream: true` its chunks as server-sent events"},
    **_errors(400, 401, 404, 409, 413, 500, 503, 504),
}


def _handler(request: Request) -> OpenAIServingChat:
    return request.app.state.openai_serving_chat


@router.post("/v1/chat/completions", response_model=None, responses=CHAT_RESPONSES)
def create_chat_completion(
    body: ChatCompletionRequest,
    request: Request,
    x_session_id: Annotated[str | None, Header(pattern=SESSION_ID_PATTERN)] = None,
) -> JSONResponse | StreamingResponse:
    owner = getattr(request.state, "owner", None)  # set by the API-key check in `build_app`
    result = _handler(request).create_chat_completion(body, x_session_id, owner)
    headers = {"X-Session-Id": result.session_id}
    if isinstance(result, SSEStream):
        return StreamingResponse(_drain(result), media_type="text/event-stream", headers=headers)
    return JSONResponse(result.model_dump(mode="json"), headers=headers)


async def _drain(events: SSEStream) -> AsyncIterator[str]:
    """Run the blocking stream in the thread pool; close it if the client goes away (frees the engine)."""
    try:
        async for event in iterate_in_threadpool(events):
            yield event
    finally:
        events.close()


@router.get("/v1/models", responses=_errors(401))
def list_models(request: Request) -> ModelList:
    return _handler(request).list_models()


@router.get("/v1/models/{model:path}", responses=_errors(401, 404))
def retrieve_model(model: str, request: Request) -> ModelCard:
    return _handler(request).retrieve_model(model)


@router.get("/health", responses=_errors(503))
def health(request: Request) -> dict[str, str]:
    _handler(request).check_health()
    return {"status": "ok"}
