"""Stopping a child process (a vLLM server, an API under test) without leaving it behind."""

from __future__ import annotations

import subprocess


def stop_process(process: subprocess.Popen, timeout_s: float = 60.0) -> None:
    """SIGTERM, wait up to `timeout_s` for a graceful exit, then SIGKILL and reap."""
    process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
