"""One HTTP server: the OpenAI-compatible API under /v1 and/or the Gradio UI under /ui, with /health."""

from __future__ import annotations

from collections.abc import Collection
from typing import Literal

import gradio as gr
import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse, RedirectResponse
from rich.console import Console

from app.settings import Settings
from app.ui import CSS, THEME, build_ui
from serving.api.server import build_app, closing
from serving.service import ChatService

UI_PATH = "/ui"
Part = Literal["api", "ui"]
PARTS: tuple[Part, ...] = ("api", "ui")


def create_app(
    settings: Settings, service: ChatService, parts: Collection[Part] = PARTS, *, owns_service: bool = False
) -> FastAPI:
    """The API app with the UI mounted beside it (`/` redirects to the UI); `parts` drops either one. With
    `owns_service`, the app closes `service` when the server shuts down."""
    if not parts or set(parts) - set(PARTS):
        raise ValueError(f"parts must be a non-empty subset of {PARTS}, got {tuple(parts)}")
    lifespan = closing(service) if owns_service else None
    if "api" in parts:
        keys = [key.get_secret_value() for key in settings.server.api_keys]
        app = build_app(service, settings.server.model_name, api_keys=keys, lifespan=lifespan)
    else:
        app = FastAPI(title="ilmrec UI", lifespan=lifespan)

        @app.get("/health")
        def _health() -> JSONResponse:
            ready = service.health()
            return JSONResponse({"status": "ok" if ready else "unavailable"}, status_code=200 if ready else 503)

    if "ui" not in parts:
        return app

    @app.get("/", include_in_schema=False)
    def _root() -> RedirectResponse:
        return RedirectResponse(f"{UI_PATH}/")

    return gr.mount_gradio_app(app, build_ui(service), path=UI_PATH, css=CSS, theme=THEME, footer_links=["api"])


def serve(settings: Settings, service: ChatService, parts: Collection[Part] = PARTS) -> int:
    host, port = settings.server.host, settings.server.port
    base = f"http://{host}:{port}"
    lines = ["", "[bold green]ilmrec is up[/]"]
    if "ui" in parts:
        lines.append(f"  chat UI:  {base}{UI_PATH}/")
    if "api" in parts:
        lines.append(f"  API:      {base}/v1  (OpenAI-compatible: POST /v1/chat/completions, GET /v1/models)")
    lines.append(f"  health:   {base}/health\n")
    Console().print("\n".join(lines))
    uvicorn.run(create_app(settings, service, parts, owns_service=True), host=host, port=port, log_level="warning")
    return 0
