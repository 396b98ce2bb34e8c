"""LLM engines behind one interface: an embedded prompt `[T, H]` in, streamed text out.

`create_engine` picks one from `ServingConfig.engine`; the vLLM engines (and `vllm` itself) are imported
only when chosen.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from serving.config import ServingConfig
    from serving.engines.base import LLMEngine


def create_engine(
    config: ServingConfig, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, model_path: str | Path
) -> LLMEngine:
    """The engine `config.engine` names, over `model` / `tokenizer` (loaded from `model_path`, a folder or a
    Hugging Face id, which the vLLM engines load or expect to be served)."""
    if config.engine == "vllm":
        from serving.engines.vllm import VLLMEngine

        return VLLMEngine(model, tokenizer, model_path, max_model_len=config.vllm_max_model_len)
    if config.engine == "vllm-remote":
        from serving.engines.vllm import RemoteVLLMEngine

        return RemoteVLLMEngine(model, tokenizer, config.vllm_url)
    from serving.engines.transformers import TransformersEngine

    return TransformersEngine(model, tokenizer, precision=config.llm_precision)
