"""Killing a training child process at a point it announces, for the resume-after-SIGKILL tests."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path


def kill_when_hanging(child: subprocess.Popen, announced: Path, timeout: float = 240) -> None:
    """Wait until `child` writes "hanging" to `announced` (it then sleeps where it should die), then SIGKILL it."""
    deadline = time.monotonic() + timeout
    while not announced.exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert announced.exists() and announced.read_text() == "hanging", child.poll()
    child.send_signal(signal.SIGKILL)
    child.wait()
