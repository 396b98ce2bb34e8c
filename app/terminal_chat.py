"""`ilmrec chat`: the same conversation as the UI, in a terminal."""

from __future__ import annotations

from rich.console import Console

from serving.api.protocol import ChatMessage
from serving.service import ChatService, ChatTurn


def chat_loop(service: ChatService) -> int:
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
        console.print("[bold magenta]ilmrec>[/] ", end="")
        for event in service.chat_stream(session_id, [ChatMessage(role="user", content=text)]):
            if isinstance(event, ChatTurn):
                session_id = event.session_id
                console.print()
                for rec in event.recommendations:
                    console.print(f"  - {rec.title} ({rec.year}) [dim]{', '.join(rec.genres)}[/]: {rec.reason}")
            else:
                console.print(event, end="", markup=False, highlight=False)
