"""`build_app`: the FastAPI app with routes, state, error handlers, a body-size cap and optional API keys."""

from __future__ import annotations

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


def build_app(
    service: ChatService,
    model_name: str = "ilmrec",
    *,
    api_keys: Sequence[str] = (),
    max_body_bytes: int = MAX_BODY_BYTES,
) -> FastAPI:
    """The OpenAI-compatible API over `service`, serving it as `model_name`.

    With `api_keys`, `/v1/*` requires `Authorization: Bearer <key>` (401 otherwise); `/health` stays open.
    Bodies over `max_body_bytes` (by Content-Length) get 413. Run it bound to 127.0.0.1 unless it sits
    behind something that authenticates.
    """
    app = FastAPI(title="ilmrec", summary="Conversational movie recommendations, OpenAI-compatible")
    app.state.openai_serving_chat = OpenAIServingChat(service, model_name)
    app.include_router(router)
    keys = [k.encode() for k in api_keys]

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
        if keys and request.url.path.startswith("/v1/"):
            scheme, _, given = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not any(secrets.compare_digest(given.encode(), k) for k in keys):
                return error_json(AuthenticationError("missing or wrong API key (Authorization: Bearer <key>)"))
        return await call_next(request)

    return app
