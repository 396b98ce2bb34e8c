"""stop_process: a child that exits on SIGTERM is reaped; one that ignores it is killed after the timeout."""

from __future__ import annotations

import signal
import subprocess
import sys

from serving.processes import stop_process


def test_a_child_that_exits_on_sigterm_is_stopped_gracefully():
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    stop_process(process, timeout_s=10)
    assert process.returncode == -signal.SIGTERM


def test_a_child_that_ignores_sigterm_is_killed_after_the_timeout():
    code = "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "ready"
    stop_process(process, timeout_s=0.5)
    assert process.returncode == -signal.SIGKILL
