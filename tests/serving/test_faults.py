"""Faults against real processes: Redis stopped, hung and restarted under a live API; the LLM engine failing
or stuck; SIGTERM to an API process in the middle of a streamed turn."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from serving.api.server import build_app
from serving.config import ServingConfig
from tests.serving.conftest import free_port
from tests.serving.live import serve
from tests.serving.wrapped_engines import FailingEngine, StuckEngine

MODEL = "ilmrec-test"
ROOT = Path(__file__).resolve().parents[2]


def turn(url: str, text: str, session_id: str | None = None, **extra: object) -> httpx.Response:
    body = {"model": MODEL, "messages": [{"role": "user", "content": text}], **extra}
    if session_id:
        body["session_id"] = session_id
    return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=30)  # a hung request fails the test


def assert_unavailable(response: httpx.Response, status: int, code: str, retry_after: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["retry-after"] == retry_after
    error = response.json()["error"]
    assert error["code"] == code and error["message"].endswith("retry shortly")
    assert "Traceback" not in error["message"] and "redis.exceptions" not in error["message"]


class RedisProcess:
    """A redis-server of our own on a fixed loopback port, with every write fsynced to its append-only file,
    so it can be stopped, frozen and started again with its data."""

    def __init__(self, workdir: Path):
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed: `apt-get install redis-server` (.ci/run does this)")
        self.binary, self.workdir, self.port = binary, workdir, free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        import redis

        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes",
             "--appendfsync", "always", "--dir", str(self.workdir), "--logfile", str(self.workdir / "redis.log")],
            cwd=self.workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        with redis.Redis.from_url(self.url) as client:
            while True:
                try:
                    if client.ping():
                        return
                except redis.ConnectionError:
                    assert self.process.poll() is None and time.monotonic() < deadline, "redis-server did not start"
                    time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            self.process.wait(timeout=30)


@pytest.fixture()
def redis_process(tmp_path: Path) -> Iterator[RedisProcess]:
    server = RedisProcess(tmp_path)
    server.start()
    yield server
    server.stop()


def test_redis_down_then_back_without_restarting_the_api(catalogue, recommender, soft_table, engine,
                                                         redis_process):
    from serving.redis_store import RedisSessionStore
    from serving.service import ChatService

    store = RedisSessionStore(redis_process.url, timeout_s=1)
    service = ChatService(catalogue, recommender, soft_table, engine, store, ServingConfig(reply_max_tokens=4))
    with serve(build_app(service, MODEL)) as url:
        sessions = {}
        for title in ("Heat", "Toy Story", "Notting Hill"):
            first = turn(url, f"I loved {title}")
            session_id = first.json()["session_id"]
            assert turn(url, "something darker", session_id).status_code == 200
            sessions[session_id] = [r["item_id"] for r in first.json()["recommendations"]]

        redis_process.stop()
        for session_id in (next(iter(sessions)), None):
            assert_unavailable(turn(url, "not animated", session_id), 503, "session_store_unavailable", "2")
        streamed = turn(url, "not animated", next(iter(sessions)), stream=True)
        assert_unavailable(streamed, 503, "session_store_unavailable", "2")
        assert_unavailable(httpx.get(f"{url}/health", timeout=30), 503, "session_store_unavailable", "2")

        redis_process.start()  # same port and data folder: the append-only file brings the sessions back
        assert httpx.get(f"{url}/health", timeout=30).status_code == 200
        for session_id, first_picks in sessions.items():
            saved = store.load(session_id)
            assert saved.state.turn == 2 and len(saved.turns) == 2 and saved.turns[0].recommended == first_picks
            again = turn(url, "not animated", session_id)
            assert again.status_code == 200 and again.json()["session_id"] == session_id
            assert store.load(session_id).state.turn == 3
            assert not set(again.json()["recommendations"][0]["genres"]) & {"Animation"}
    store.close()


def test_a_frozen_redis_gets_503_not_a_hung_request(catalogue, recommender, soft_table, engine, redis_process):
    from serving.redis_store import RedisSessionStore
    from serving.service import ChatService

    store = RedisSessionStore(redis_process.url, timeout_s=1)
    service = ChatService(catalogue, recommender, soft_table, engine, store, ServingConfig(reply_max_tokens=4))
    with serve(build_app(service, MODEL)) as url:
        session_id = turn(url, "I loved Heat").json()["session_id"]
        redis_process.process.send_signal(signal.SIGSTOP)  # accepts connections, answers nothing
        try:
            assert_unavailable(turn(url, "more", session_id), 503, "session_store_unavailable", "2")
        finally:
            redis_process.process.send_signal(signal.SIGCONT)
        assert turn(url, "more", session_id).status_code == 200
        assert store.load(session_id).state.turn == 2
    store.close()


@pytest.mark.parametrize("when", ["start", "midway"])
def test_a_failing_engine_gets_503_and_leaves_the_session_as_it_was(catalogue, recommender, soft_table, engine,
                                                                  when):
    from serving.service import ChatService
    from serving.session_store import InMemorySessionStore

    store = InMemorySessionStore()
    good = ChatService(catalogue, recommender, soft_table, engine, store, ServingConfig(reply_max_tokens=4))
    failing = FailingEngine(engine, RuntimeError("CUDA error: an illegal memory access at 0xdeadbeef"), when)
    bad = ChatService(catalogue, recommender, soft_table, failing, store, ServingConfig(reply_max_tokens=4))
    with serve(build_app(good, MODEL)) as good_url, serve(build_app(bad, MODEL)) as bad_url:
        session_id = turn(good_url, "I loved Heat").json()["session_id"]
        response = turn(bad_url, "something darker", session_id)
        assert_unavailable(response, 503, "engine_unavailable", "5")
        assert "CUDA" not in response.text and "0xdeadbeef" not in response.text
        assert store.load(session_id).state.turn == 1, "a failed turn is not saved"
        with httpx.stream("POST", f"{bad_url}/v1/chat/completions", timeout=30,
                          json={"model": MODEL, "messages": [{"role": "user", "content": "more"}], "stream": True,
                                "session_id": session_id}) as stream:
            stream.read()
        if when == "start":  # before the first byte: a plain 503
            assert_unavailable(stream, 503, "engine_unavailable", "5")
        else:  # once streaming, the error comes in-band, then [DONE]
            events = [line.removeprefix("data: ") for line in stream.text.splitlines() if line]
            assert stream.status_code == 200 and events[-1] == "[DONE]"
            errors = [json.loads(e)["error"] for e in events[:-1] if "error" in json.loads(e)]
            assert [e["code"] for e in errors] == ["engine_unavailable"] and "CUDA" not in errors[0]["message"]
        assert turn(good_url, "something darker", session_id).status_code == 200


def test_a_stuck_engine_gets_504_with_retry_after_and_recovers(catalogue, recommender, soft_table, engine):
    from serving.service import ChatService
    from serving.session_store import InMemorySessionStore

    stuck = StuckEngine(engine)
    service = ChatService(catalogue, recommender, soft_table, stuck, InMemorySessionStore(),
                          ServingConfig(reply_max_tokens=4, generation_timeout_s=1.0))
    with serve(build_app(service, MODEL)) as url:
        response = turn(url, "I loved Heat")
        assert stuck.stuck.is_set()
        assert_unavailable(response, 504, "engine_timeout", "5")
        assert "1 s" in response.json()["error"]["message"]
        queued = turn(url, "I loved Memento")  # waits on the engine the stuck turn still holds: 504 too
        assert_unavailable(queued, 504, "engine_timeout", "5")
        with httpx.stream("POST", f"{url}/v1/chat/completions", timeout=30,
                          json={"model": MODEL, "messages": [{"role": "user", "content": "Heat"}],
                                "stream": True}) as stream:
            events = [line.removeprefix("data: ") for line in stream.iter_lines() if line]
        assert events[-1] == "[DONE]" and json.loads(events[-2])["error"]["code"] == "engine_timeout"

        stuck.release.set()  # the engine answers again: the abandoned generations stop, new turns work
        recovered = turn(url, "I loved Heat")
        assert recovered.status_code == 200 and len(recovered.json()["recommendations"]) == 5


def test_sigterm_finishes_the_in_flight_streamed_turn(saved_system):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "ILMREC_TEST_DELAY_S": "0.3", "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen([sys.executable, "-m", "tests.serving.api_process", str(saved_system), str(port)],
                               cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, process.communicate()[0][-3000:]
            time.sleep(0.2)

        events: list[str] = []
        first_delta = threading.Event()

        def stream_a_turn() -> None:
            body = {"model": MODEL, "messages": [{"role": "user", "content": "I loved Heat"}], "stream": True,
                    "max_tokens": 8}
            with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=60) as response:
                for line in response.iter_lines():
                    if line:
                        events.append(line.removeprefix("data: "))
                    if len(events) >= 2:
                        first_delta.set()

        reader = threading.Thread(target=stream_a_turn)
        reader.start()
        assert first_delta.wait(60), "the turn never started streaming"
        process.send_signal(signal.SIGTERM)
        signalled_at = len(events)
        reader.join(60)
        assert not reader.is_alive()
        # uvicorn re-raises the signal once it has shut down gracefully, so the exit reads as by SIGTERM
        assert process.wait(60) in (0, -signal.SIGTERM)
        assert b"engine closed" in process.stdout.read(), "the service is closed after the graceful shutdown"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert not [c for c in chunks if "error" in c]
    final = [n for n, c in enumerate(chunks) if c["choices"] and c["choices"][0]["finish_reason"]]
    assert len(final) == 1 and len(chunks[final[0]]["recommendations"]) == 5
    assert final[0] >= signalled_at, "the turn was still generating when the signal came"
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url}/health", timeout=2)
