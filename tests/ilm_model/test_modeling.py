import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from ilm_model.configuration import ILMConfig
from ilm_model.errors import CheckpointError
from ilm_model.modeling import ItemLanguageModel
from tests.ilm_model.conftest import CF_DIM


def _model(config: ILMConfig) -> ItemLanguageModel:
    torch.manual_seed(0)
    return ItemLanguageModel.from_config(config).eval()


def test_needs_data_sizes():
    with pytest.raises(ValueError, match="for_data"):
        ItemLanguageModel(ILMConfig())


@torch.no_grad()
def test_shapes_and_normalisation(tiny_config):
    model = _model(tiny_config)
    cf = torch.randn(3, CF_DIM)
    assert model.soft_tokens(cf).shape == (3, 4, 256)
    items = model.encode_items(cf)
    texts = model.encode_text(["Heat (1995). Genres: Action", "Up (2009)"])
    assert items.shape == (3, 4, 16) and texts.shape == (2, 16)
    torch.testing.assert_close(items.norm(dim=-1), torch.ones(3, 4))
    torch.testing.assert_close(texts.norm(dim=-1), torch.ones(2))
    reps = model.represent_items(cf, batch_size=2)
    torch.testing.assert_close(reps.soft_tokens, model.soft_tokens(cf))
    torch.testing.assert_close(reps.itc_features, items)
    assert model.temperature_value().item() == pytest.approx(0.07)


@torch.no_grad()
def test_text_feature_pools_the_real_tokens(tiny_config):
    model = _model(tiny_config)
    states, mask = torch.randn(2, 4, 32), torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    expected = torch.nn.functional.normalize(model.text_projection(torch.stack(
        [states[0, :2].mean(0), states[1].mean(0)])), dim=-1)
    torch.testing.assert_close(model.text_features(states, mask), expected)
    # padding does not move a text's feature: alone or beside a longer text
    alone = model.encode_text(["Up (2009)"])
    beside = model.encode_text(["Up (2009)", "The Lord of the Rings: The Two Towers (2002). Genres: Adventure"])
    torch.testing.assert_close(alone[0], beside[0], atol=1e-5, rtol=1e-5)
    cls_model = _model(tiny_config.model_copy(update={"qformer": tiny_config.qformer.model_copy(
        update={"text_pooling": "cls"})}))
    cls_expected = torch.nn.functional.normalize(cls_model.text_projection(states[:, 0]), dim=-1)
    torch.testing.assert_close(cls_model.text_features(states, mask), cls_expected)


def test_itg_head_is_tied_to_word_embeddings(tiny_config):
    model = _model(tiny_config)
    states = torch.randn(1, 3, 32)
    logits = model.itg_logits(states)
    assert logits.shape == (1, 3, 30522)
    logits.sum().backward()
    assert model.qformer.word_embeddings.weight.grad is not None
    assert not any("decoder" in k for k in model.state_dict())  # tying is functional: no duplicate tensor saved


def test_itg_logits_over_a_vocabulary_are_those_columns(tiny_config):
    model = _model(tiny_config)
    states = torch.randn(2, 3, 32)
    vocabulary = torch.tensor([0, 101, 102, 2000, 30521])
    torch.testing.assert_close(model.itg_logits(states, vocabulary), model.itg_logits(states)[..., vocabulary])


@torch.no_grad()
def test_save_load_round_trip(tiny_config, tmp_path):
    model = _model(tiny_config)
    model.save_pretrained(tmp_path / "ilm")
    loaded = ItemLanguageModel.from_pretrained(tmp_path / "ilm", llm_hidden_size=256)
    assert loaded.config == model.config
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    cf = torch.randn(2, CF_DIM)
    torch.testing.assert_close(loaded.soft_tokens(cf), model.soft_tokens(cf))
    torch.testing.assert_close(loaded.encode_text(["Heat (1995)"]), model.encode_text(["Heat (1995)"]))
    model.save_pretrained(tmp_path / "ilm")  # overwriting an existing checkpoint works
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ilm"]


def test_a_checkpoint_without_text_pooling_loads_as_cls(tiny_config, tmp_path):
    import json

    _model(tiny_config).save_pretrained(tmp_path / "ilm")
    config_path = tmp_path / "ilm" / "config.json"
    stored = json.loads(config_path.read_text())
    assert stored["qformer"]["text_pooling"] == "mean"
    del stored["qformer"]["text_pooling"]
    config_path.write_text(json.dumps(stored))
    assert ItemLanguageModel.from_pretrained(tmp_path / "ilm").config.qformer.text_pooling == "cls"


def test_load_reports_what_mismatches(tiny_config, tmp_path):
    _model(tiny_config).save_pretrained(tmp_path / "ilm")
    with pytest.raises(CheckpointError, match="hidden size 256.*this LLM has 576"):
        ItemLanguageModel.from_pretrained(tmp_path / "ilm", llm_hidden_size=576)
    weights = tmp_path / "ilm" / "model.safetensors"
    state = load_file(weights)
    state["adaptor.weight"] = torch.zeros(300, 32)
    del state["temperature"]
    state["extra.weight"] = torch.zeros(1)
    save_file(state, weights, metadata={"format": "ilmrec-item-language-model", "version": "1"})
    with pytest.raises(CheckpointError) as info:
        ItemLanguageModel.from_pretrained(tmp_path / "ilm")
    message = str(info.value)
    assert "missing: ['temperature']" in message and "extra.weight" in message
    assert "'adaptor.weight': ((300, 32), (256, 32))" in message


def test_load_refuses_foreign_folders(tmp_path):
    with pytest.raises(CheckpointError, match="not an ItemLanguageModel checkpoint"):
        ItemLanguageModel.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"qformer": {"hidden_size": "wide"}}))
    with pytest.raises(CheckpointError):
        ItemLanguageModel.from_pretrained(tmp_path)
