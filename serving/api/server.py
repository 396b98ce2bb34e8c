"""`build_app`: the FastAPI app with routes, state, error handlers, a body-size cap and optional API keys."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Awaitable, Callable, Sequence

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from serving.api.routes import router
from serving.api.serving import OpenAIServingChat, create_error_response
from serving.errors import AuthenticationError, RequestTooLargeError, ServingError
from serving.service import ChatService

MAX_BODY_BYTES = 1_000_000


def key_owner(api_key: str) -> str:
    """The owner id that sessions created with `api_key` are bound to: a SHA-256 fingerprint, the same in
    every process, so a shared session store never holds the key itself."""
    return hashlib.sha256(api_key.encode()).hexdigest()[:32]


def build_app(
    service: ChatService,
    model_name: str = "ilmrec",
    *,
    api_keys: Sequence[str] = (),
    max_body_bytes: int = MAX_BODY_BYTES,
) -> FastAPI:
    """The OpenAI-compatible API over `service`, serving it as `model_name`.

    With `api_keys`, `/v1/*` requires `Authorization: Bearer <key>` (401 otherwise); `/health` stays open.
    A session belongs to the key that created it: continuing it with another key gets 404.
    Bodies over `max_body_bytes` (by Content-Length) get 413. Run it bound to 127.0.0.1 unless it sits
    behind something that authenticates.
    """
    app = FastAPI(title="ilmrec", summary="Conversational movie recommendations, OpenAI-compatible")
    app.state.openai_serving_chat = OpenAIServingChat(service, model_name)
    app.include_router(router)
    owners = {k.encode(): key_owner(k) for k in api_keys}

    def error_json(exc: BaseException) -> JSONResponse:
        error = create_error_response(exc)
        return JSONResponse(error.model_dump(), status_code=error.status_code)

    async def handle(_: Request, exc: Exception) -> JSONResponse:
        return error_json(exc)

    for kind in (RequestValidationError, HTTPException, ServingError, Exception):
        app.add_exception_handler(kind, handle)

    @app.middleware("http")
    async def guard(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > max_body_bytes:
            return error_json(RequestTooLargeError(f"request body over {max_body_bytes} bytes; send less"))
        if owners and request.url.path.startswith("/v1/"):
            scheme, _, given = request.headers.get("authorization", "").partition(" ")
            matches = [owner for key, owner in owners.items() if secrets.compare_digest(given.encode(), key)]
            if scheme.lower() != "bearer" or not matches:
                return error_json(AuthenticationError("missing or wrong API key (Authorization: Bearer <key>)"))
            request.state.owner = matches[0]  # read by the chat route to bind sessions to this key
        return await call_next(request)

    return app
