"""`build_app`: the FastAPI app with routes, state, error handlers, a body-size cap and optional API keys."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.api.routes import router
from serving.api.serving import OpenAIServingChat, create_error_response
from serving.errors import AuthenticationError, RequestTooLargeError, ServingError
from serving.service import ChatService

MAX_BODY_BYTES = 1_000_000
Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]


def key_owner(api_key: str) -> str:
    """The owner id that sessions created with `api_key` are bound to: a SHA-256 fingerprint, the same in
    every process, so a shared session store never holds the key itself."""
    return hashlib.sha256(api_key.encode()).hexdigest()[:32]


def closing(service: ChatService) -> Lifespan:
    """A lifespan that closes `service` (its LLM engine) once the server has shut down, for the process that
    owns it: an in-process vLLM engine's EngineCore process otherwise outlives the server."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await asyncio.to_thread(service.close)  # waits for a generation still running

    return lifespan


def build_app(
    service: ChatService,
    model_name: str = "ilmrec",
    *,
    api_keys: Sequence[str] = (),
    max_body_bytes: int = MAX_BODY_BYTES,
    lifespan: Lifespan | None = None,
) -> FastAPI:
    """The OpenAI-compatible API over `service`, serving it as `model_name`.

    With `api_keys`, `/v1/*` requires `Authorization: Bearer <key>` (401 otherwise); `/health` stays open.
    A session belongs to the key that created it: continuing it with another key gets 404.
    Bodies over `max_body_bytes` get 413: at once by Content-Length, or once that many bytes of a chunked
    body have arrived. 503 and 504 answers carry `Retry-After`. Run it bound to 127.0.0.1 unless it sits
    behind something that authenticates. `lifespan`, e.g. `closing(service)`, runs around the server's life.
    """
    app = FastAPI(title="ilmrec", summary="Conversational movie recommendations, OpenAI-compatible",
                  lifespan=lifespan)
    app.state.openai_serving_chat = OpenAIServingChat(service, model_name)
    app.include_router(router)
    owners = {k.encode(): key_owner(k) for k in api_keys}

    async def handle(_: Request, exc: Exception) -> JSONResponse:
        return _error_json(exc)

    for kind in (RequestValidationError, HTTPException, ServingError, Exception):
        app.add_exception_handler(kind, handle)

    app.add_middleware(Guard, max_bytes=max_body_bytes, owners=owners)
    app.openapi = lambda: _openapi(app, authenticated=bool(owners))  # type: ignore[method-assign]
    return app


class Guard:
    """ASGI middleware in front of every route: the body-size cap and the API-key check.

    A body over `max_bytes` gets 413, at once by Content-Length, else as soon as that many bytes of a chunked
    body have arrived (raised from `receive`, which FastAPI's body reading passes on to the error handlers).
    With `owners` (key -> owner id), a /v1 request without a matching bearer key gets 401; a matching one sets
    `request.state.owner`, which the chat route binds sessions to.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, owners: dict[bytes, str]):
        self.app = app
        self.max_bytes = max_bytes
        self.owners = owners

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        too_large = RequestTooLargeError(f"request body over {self.max_bytes} bytes; send less")
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_bytes:
            await _error_json(too_large)(scope, receive, send)
            return
        if self.owners and scope["path"].startswith("/v1/"):
            scheme, _, given = headers.get("authorization", "").partition(" ")
            matches = [owner for key, owner in self.owners.items() if secrets.compare_digest(given.encode(), key)]
            if scheme.lower() != "bearer" or not matches:
                error = AuthenticationError("missing or wrong API key (Authorization: Bearer <key>)")
                await _error_json(error)(scope, receive, send)
                return
            scope.setdefault("state", {})["owner"] = matches[0]
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise HTTPException(413, too_large.message)
            return message

        await self.app(scope, counted, send)


def _error_json(exc: BaseException) -> JSONResponse:
    """The OpenAI-style error response for `exc`, with `Retry-After` when retrying later can help."""
    error = create_error_response(exc)
    headers = {"Retry-After": str(error.retry_after_s)} if error.retry_after_s is not None else None
    return JSONResponse(error.model_dump(), status_code=error.status_code, headers=headers)


def _openapi(app: FastAPI, *, authenticated: bool) -> dict[str, Any]:
    """FastAPI's schema as this app answers: validation errors are 400s in OpenAI's error schema (FastAPI's own
    422 entries go), and with API keys every /v1 operation needs a bearer token."""
    if app.openapi_schema is None:
        schema = FastAPI.openapi(app)
        for path, operations in schema["paths"].items():
            for operation in operations.values():
                operation["responses"].pop("422", None)
                if authenticated and path.startswith("/v1/"):
                    operation["security"] = [{"bearer": []}]
        components = schema.setdefault("components", {})
        for name in ("HTTPValidationError", "ValidationError"):
            components.get("schemas", {}).pop(name, None)
        if authenticated:
            components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        app.openapi_schema = schema
    return app.openapi_schema
