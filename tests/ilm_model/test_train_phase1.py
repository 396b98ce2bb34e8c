import math

import pytest
import torch

from ilm_model.configuration import Phase1Config
from ilm_model.item_text import describe
from ilm_model.modeling import ItemLanguageModel
from ilm_model.train_phase1 import phase1_losses, train_phase1
from ilm_model.training_history import TrainingHistory


def _batch(model, catalogue, cf_embeddings, n=6):
    tokens = model.tokenize([describe(m) for m in catalogue.movies[:n]])
    return torch.from_numpy(cf_embeddings[:n]), tokens["input_ids"], tokens["attention_mask"]


def test_losses_switch_on_and_off(tiny_config, catalogue, cf_embeddings):
    torch.manual_seed(0)
    model = ItemLanguageModel.from_config(tiny_config)
    cf, ids, mask = _batch(model, catalogue, cf_embeddings)
    gen = torch.Generator().manual_seed(0)
    everything = phase1_losses(model, cf, ids, mask, Phase1Config(itm_weight=1.0), gen)
    assert all(torch.isfinite(x) for x in (everything.itc, everything.itg, everything.itm))
    # untrained: ITC near log(B), ITG near log(vocab), ITM near log(2)
    assert abs(everything.itc.item() - math.log(6)) < 1.0
    assert abs(everything.itg.item() - math.log(30522)) < 1.5
    assert abs(everything.itm.item() - math.log(2)) < 0.3
    only_itg = phase1_losses(model.eval(), cf, ids, mask, Phase1Config(itc_weight=0, itg_weight=2.0), gen)
    assert only_itg.itc is None and only_itg.itm is None
    torch.testing.assert_close(only_itg.total, 2.0 * only_itg.itg)


def test_training_lowers_the_loss_and_logs_each_step(tiny_config, catalogue, cf_embeddings):
    torch.manual_seed(0)
    model = ItemLanguageModel.from_config(tiny_config)
    texts = [describe(m) for m in catalogue.movies[:8]]
    cf = torch.from_numpy(cf_embeddings[:8])
    config = Phase1Config(steps=30, batch_size=8, learning_rate=3e-3, warmup_steps=2, itm_weight=1.0)
    history = TrainingHistory()
    train_phase1(model, texts, cf, config, history, progress=False)
    records = history.phase("phase1")
    assert [r["step"] for r in records] == list(range(30))
    assert {"loss", "loss_itc", "loss_itg", "loss_itm", "lr", "temperature"} <= records[0].keys()
    assert records[-1]["loss"] < 0.8 * records[0]["loss"], [round(r["loss"], 2) for r in records]
    assert not model.training


def test_needs_aligned_pairs(tiny_config, cf_embeddings):
    model = ItemLanguageModel.from_config(tiny_config)
    with pytest.raises(ValueError, match="aligned"):
        train_phase1(model, ["a", "b", "c"], torch.zeros(2, 16), Phase1Config(), TrainingHistory(), progress=False)
