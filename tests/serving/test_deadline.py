"""`generate_within`: the same stream as the engine's, or a clean 504/503 when it is stuck or fails."""

from __future__ import annotations

import pytest
import torch

from serving.engines.base import SamplingParams
from serving.engines.deadline import generate_within
from serving.errors import EngineTimeoutError, EngineUnavailableError, InvalidRequestError
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
