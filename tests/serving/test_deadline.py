"""`generate_within`: the same stream as the engine's, or a clean 504/503 when it is stuck, busy or fails; the
generation deadline counts from when the engine starts the reply, the queue wait is bounded apart."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
import torch

from serving.engines.base import SamplingParams
from serving.engines.deadline import generate_within
from serving.errors import EngineBusyError, EngineTimeoutError, EngineUnavailableError, InvalidRequestError
from tests.serving.live import serve
from tests.serving.wrapped_engines import FailingEngine, StuckEngine


def prompt(engine) -> torch.Tensor:
    return engine.embed_tokens(engine.tokenizer("I liked the movie Inception")["input_ids"])


def test_passes_the_stream_through_unchanged(engine):
    params = SamplingParams(max_tokens=6)
    plain = engine.generate(prompt(engine), params)
    expected = list(plain)
    bounded = generate_within(engine, 30.0, prompt(engine), params)
    assert list(bounded) == expected
    assert bounded.usage == plain.usage and bounded.finish_reason == plain.finish_reason


def test_a_stuck_engine_times_out_and_is_released(engine):
    stuck = StuckEngine(engine)
    stream = generate_within(stuck, 0.2, prompt(engine), SamplingParams(max_tokens=4))
    with pytest.raises(EngineTimeoutError, match="within 0.2 s"):
        list(stream)
    stuck.release.set()
    assert list(generate_within(engine, 30.0, prompt(engine), SamplingParams(max_tokens=4)))  # lock freed


@pytest.mark.parametrize("when", ["start", "midway"])
def test_engine_failures_become_503_without_details(engine, when):
    failing = FailingEngine(engine, RuntimeError("segfault in kernel 0x1"), when)
    with pytest.raises(EngineUnavailableError) as failed:
        list(generate_within(failing, 30.0, prompt(engine), SamplingParams(max_tokens=4)))
    assert "0x1" not in str(failed.value) and failed.value.status_code == 503


def test_serving_errors_pass_through_and_bad_timeouts_are_refused(engine):
    with pytest.raises(InvalidRequestError, match="prompt embeddings"):
        generate_within(engine, 30.0, torch.zeros(3, 7), SamplingParams())
    with pytest.raises(ValueError, match="timeout_s"):
        generate_within(engine, 0, prompt(engine), SamplingParams())
    with pytest.raises(ValueError, match="queue_timeout_s"):
        generate_within(engine, 1, prompt(engine), SamplingParams(), queue_timeout_s=-1)


@contextmanager
def engine_held(engine) -> Iterator[StuckEngine]:
    """The engine busy with a generation stuck mid-reply (it holds the engine) until the block ends."""
    stuck = StuckEngine(engine)
    holder = generate_within(stuck, 60.0, prompt(engine), SamplingParams(max_tokens=4))
    assert stuck.stuck.wait(30)
    try:
        yield stuck
    finally:
        stuck.release.set()
        list(holder)


def test_the_generation_deadline_starts_when_the_engine_admits_the_reply(engine):
    params = SamplingParams(max_tokens=6)
    expected = list(engine.generate(prompt(engine), params))
    waited: dict[str, object] = {}

    def queued_turn() -> None:
        started = time.monotonic()
        stream = generate_within(engine, 0.5, prompt(engine), params, queue_timeout_s=30)
        waited["queue_s"] = time.monotonic() - started
        waited["deltas"] = list(stream)

    with engine_held(engine) as stuck:
        worker = threading.Thread(target=queued_turn)
        worker.start()
        time.sleep(1.0)  # twice the generation timeout, spent waiting for the engine
        assert worker.is_alive() and "queue_s" not in waited, "the queued reply must wait for the engine"
        stuck.release.set()
    worker.join(30)
    assert waited["queue_s"] >= 1.0 and waited["deltas"] == expected


def test_a_reply_the_engine_does_not_start_in_time_is_refused_as_busy(engine):
    with engine_held(engine):
        started = time.monotonic()
        with pytest.raises(EngineBusyError, match="did not start within 0.2 s") as busy:
            generate_within(engine, 30.0, prompt(engine), SamplingParams(max_tokens=4), queue_timeout_s=0.2)
        assert 0.2 <= time.monotonic() - started < 5
    assert (busy.value.status_code, busy.value.retry_after_s, busy.value.code) == (503, 5, "engine_busy")
    assert list(generate_within(engine, 30.0, prompt(engine), SamplingParams(max_tokens=4)))  # engine free again


def test_a_withdrawn_generation_is_skipped_by_the_engine(engine):
    stream = engine.generate(prompt(engine), SamplingParams(max_tokens=4))
    assert not stream.admitted.is_set() and stream.withdraw()
    assert list(stream) == [] and stream.usage.completion_tokens == 0
    started = engine.generate(prompt(engine), SamplingParams(max_tokens=4))
    first = next(started)
    assert started.admitted.is_set() and not started.withdraw() and first
    started.close()


@pytest.mark.parametrize("stream", [False, True])
def test_the_api_answers_503_with_retry_after_when_the_engine_is_busy(catalogue, recommender, soft_table, engine,
                                                                     stream):
    from serving.api.server import build_app
    from serving.config import ServingConfig
    from serving.service import ChatService
    from serving.session_store import InMemorySessionStore

    service = ChatService(catalogue, recommender, soft_table, engine, InMemorySessionStore(),
                          ServingConfig(reply_max_tokens=4, queue_timeout_s=0.3))
    body = {"model": "m", "messages": [{"role": "user", "content": "I loved Heat"}], "stream": stream}
    with serve(build_app(service, "m")) as url:
        with engine_held(engine):
            busy = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=30)
        assert busy.status_code == 503 and busy.headers["retry-after"] == "5"
        assert busy.json()["error"] == {
            "message": "the LLM engine is busy: this reply did not start within 0.3 s; retry shortly",
            "type": "service_unavailable", "param": None, "code": "engine_busy"}
        assert httpx.post(f"{url}/v1/chat/completions", json=body, timeout=30).status_code == 200


def test_usage_counts_what_the_caller_read_not_how_far_the_engine_got(engine):
    """The worker decodes ahead of the reader; a reply read to its second delta counts the tokens up to
    there, as a reply generated only that far does (a streamed and a non-streamed reply count alike)."""
    params = SamplingParams(max_tokens=12)
    plain = engine.generate(prompt(engine), params)
    first_two = [next(plain), next(plain)]
    expected = plain.usage.completion_tokens
    plain.close()
    bounded = generate_within(engine, 30.0, prompt(engine), params)
    assert [next(bounded), next(bounded)] == first_two
    time.sleep(0.5)  # the worker meanwhile decodes further
    assert bounded.usage.completion_tokens == expected
    bounded.close()
