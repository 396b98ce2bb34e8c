"""`train_ilm` placed on a device: every phase-1 loss, every phase-2 task, evaluation, checkpoints and saving on
`tests.cuda_standin`'s stand-in accelerator (no GPU here; a tensor made on the CPU inside training, or a CPU
generator driving a device op, fails as it would on a GPU), with the CPU run's result."""

import numpy as np
import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from ilm_model.interactions import Interactions
from ilm_model.llm_loading import load_frozen_llm
from ilm_model.modeling import ItemLanguageModel
from ilm_model.soft_tokens import SoftTokenTable
from ilm_model.train import train_ilm
from tests.cuda_standin import STANDIN, StandinTensor, standin_device


@pytest.fixture
def every_task(tiny_config):
    """All five phase-1 losses (ITM on a subset) and all three phase-2 tasks."""
    phase1 = {"itm_weight": 1.0, "itm_items": 4, "iic_weight": 1.0, "uic_weight": 1.0}
    phase2 = {"next_item_weight": 1.0, "conversation_weight": 1.0}
    return tiny_config.model_copy(
        update={
            "phase1": tiny_config.phase1.model_copy(update=phase1),
            "phase2": tiny_config.phase2.model_copy(update=phase2),
        }
    )


@pytest.fixture
def interactions():
    histories = [np.arange(0, 20), np.arange(20, 40), np.array([5, 3, 30, 31, 2])]
    return Interactions(histories, np.random.default_rng(1).normal(size=(3, 16)).astype(np.float32))


def test_train_ilm_on_a_device_matches_the_cpu_run(
    every_task, interactions, tiny_llm, tiny_llm_dir, catalogue, cf_embeddings, tmp_path
):
    llm, tok = tiny_llm
    # attention on the stand-in runs the math kernel; the CPU's default fused one differs in the last bits
    with sdpa_kernel(SDPBackend.MATH):
        on_cpu = train_ilm(catalogue, cf_embeddings, llm, tok, every_task, progress=False, interactions=interactions)
    with standin_device(), sdpa_kernel(SDPBackend.MATH):
        device_llm, _ = load_frozen_llm(str(tiny_llm_dir), tmp_path / "cache", device=STANDIN)
        assert isinstance(device_llm.get_input_embeddings().weight, StandinTensor)
        on_device = train_ilm(
            catalogue, cf_embeddings, device_llm, tok, every_task, progress=False, interactions=interactions,
            checkpoint_dir=tmp_path / "checkpoints", checkpoint_every=2, device=STANDIN,
        )
        assert next(on_device.model.parameters()).device == STANDIN
        on_device.save(tmp_path / "ilm")

    assert on_device.soft_tokens.tokens.device.type == "cpu"
    torch.testing.assert_close(on_device.soft_tokens.tokens, on_cpu.soft_tokens.tokens)
    for a, b in zip(on_device.history.records, on_cpu.history.records, strict=True):
        assert a == pytest.approx(b)
    quality = {k: v for k, v in on_cpu.metrics.items() if not k.endswith("seconds")}
    assert {k: on_device.metrics[k] for k in quality} == pytest.approx(quality)
    assert [e["generated"] for e in on_device.examples] == [e["generated"] for e in on_cpu.examples]
    # written from CPU tensors: a CPU-only machine loads the weights the device trained
    saved = ItemLanguageModel.from_pretrained(tmp_path / "ilm" / "model", llm_hidden_size=256).state_dict()
    assert all(torch.allclose(saved[k], t) for k, t in on_cpu.model.state_dict().items())
    assert torch.equal(SoftTokenTable.load(tmp_path / "ilm" / "soft_tokens.safetensors").tokens,
                       on_device.soft_tokens.tokens)


def test_the_llm_must_be_on_the_training_device(tiny_config, tiny_llm, catalogue, cf_embeddings):
    llm, tok = tiny_llm
    with pytest.raises(ValueError, match="the LLM is on cpu, not on meta"):
        train_ilm(catalogue, cf_embeddings, llm, tok, tiny_config, progress=False, device=STANDIN)
