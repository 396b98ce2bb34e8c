"""The API as its own process, for fault tests: `python -m tests.serving.api_process ARTEFACTS PORT`.

Serves the tiny test system saved under ARTEFACTS (movielens/, llm/, recommender/, soft_tokens.safetensors)
with uvicorn on 127.0.0.1:PORT; ILMREC_TEST_DELAY_S (default 0) slows each generated delta, so a turn stays
in flight long enough to signal the process during it. The process owns its service: it closes it on shutdown and
prints "engine closed" when the engine is.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
import uvicorn

from tests.serving.wrapped_engines import SlowEngine


class ReportingEngine(SlowEngine):
    def close(self) -> None:
        super().close()
        print("engine closed", flush=True)


def main(artefacts: Path, port: int) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ilm_model.soft_tokens import SoftTokenTable
    from retrieval.data import load_movielens
    from retrieval.recommender import TwoTowerRecommender
    from serving.api.server import build_app, closing
    from serving.config import ServingConfig
    from serving.engines.transformers import TransformersEngine
    from serving.service import ChatService
    from serving.session_store import InMemorySessionStore

    catalogue = load_movielens("ml-latest-small", path=artefacts / "movielens", download=False).catalogue
    model = AutoModelForCausalLM.from_pretrained(artefacts / "llm", dtype=torch.float32).eval()
    engine = ReportingEngine(TransformersEngine(model, AutoTokenizer.from_pretrained(artefacts / "llm")),
                        float(os.environ.get("ILMREC_TEST_DELAY_S", "0")))
    service = ChatService(catalogue, TwoTowerRecommender.load(artefacts / "recommender", catalogue),
                          SoftTokenTable.load(artefacts / "soft_tokens.safetensors"), engine,
                          InMemorySessionStore(), ServingConfig(reply_max_tokens=8))
    uvicorn.run(build_app(service, "ilmrec-test", lifespan=closing(service)), host="127.0.0.1", port=port,
                log_level="warning")


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]))
