"""`ilmrec chat`: the same conversation as the UI, in a terminal."""

from __future__ import annotations

from rich.console import Console

from pydantic import ValidationError

from app.errors import describe_user_error
from serving.api.protocol import ChatMessage
from serving.errors import ServingError
from serving.service import ChatService, ChatTurn


def chat_loop(service: ChatService) -> int:
    try:
        return _converse(service)
    finally:
        service.close()


def _converse(service: ChatService) -> int:
    console = Console()
    console.print("[bold]ilmrec[/] - tell me movies you like. Empty line or Ctrl-D quits.")
    session_id: str | None = None
    while True:
        try:
            text = console.input("[bold cyan]you>[/] ").strip()
        except EOFError:
            return 0
        if not text:
            return 0
        try:
            message = ChatMessage(role="user", content=text)
            console.print("[bold magenta]ilmrec>[/] ", end="")
            for event in service.chat_stream(session_id, [message]):
                if isinstance(event, ChatTurn):
                    session_id = event.session_id
                    console.print()
                else:  # the streamed reply ends with the numbered, grounded list of picks
                    console.print(event, end="", markup=False, highlight=False)
        except (ValidationError, ServingError) as exc:
            console.print(f"[bold red]error:[/] {describe_user_error(exc)}", markup=True, highlight=False)
