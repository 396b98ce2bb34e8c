"""One HTTP server: the OpenAI-compatible API under /v1 and the Gradio UI under /ui."""

from __future__ import annotations

import gradio as gr
import uvicorn
from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from rich.console import Console

from app.settings import Settings
from app.ui import CSS, build_ui
from serving.api.server import build_app
from serving.service import ChatService

UI_PATH = "/ui"


def create_app(settings: Settings, service: ChatService) -> FastAPI:
    """The API app with the UI mounted beside it; `/` redirects to the UI."""
    keys = [key.get_secret_value() for key in settings.server.api_keys]
    app = build_app(service, settings.server.model_name, api_keys=keys)

    @app.get("/", include_in_schema=False)
    def _root() -> RedirectResponse:
        return RedirectResponse(f"{UI_PATH}/")

    return gr.mount_gradio_app(app, build_ui(service), path=UI_PATH, css=CSS, footer_links=["api"])


def serve(settings: Settings, service: ChatService) -> int:
    host, port = settings.server.host, settings.server.port
    base = f"http://{host}:{port}"
    Console().print(
        f"\n[bold green]ilmrec is up[/]\n  chat UI:  {base}{UI_PATH}/\n  API:      {base}/v1  "
        f"(OpenAI-compatible: POST /v1/chat/completions, GET /v1/models)\n  health:   {base}/health\n"
    )
    uvicorn.run(create_app(settings, service), host=host, port=port, log_level="warning")
    return 0
