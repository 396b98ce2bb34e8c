import numpy as np
import pytest
import torch

from ilm_model.errors import CheckpointError
from ilm_model.modeling import ItemLanguageModel
from ilm_model.soft_tokens import SoftTokenTable, build_soft_token_table
from retrieval.errors import UnknownItemError


def _table():
    tokens = torch.arange(3 * 2 * 4, dtype=torch.float32).view(3, 2, 4)
    return SoftTokenTable(np.array([101, 7, 55]), tokens)


def test_lookup_by_catalogue_id_in_request_order():
    table = _table()
    out = table.lookup([55, 101, 55])
    assert out.shape == (3, 2, 4)
    assert torch.equal(out[0], table.tokens[2]) and torch.equal(out[1], table.tokens[0])
    assert (len(table), table.num_tokens, table.hidden_size) == (3, 2, 4)
    assert 7 in table and 8 not in table
    with pytest.raises(UnknownItemError, match="item 8"):
        table.lookup([7, 8])


def test_validation():
    with pytest.raises(ValueError, match="n_items=2"):
        SoftTokenTable([1, 2], torch.zeros(3, 2, 4))
    with pytest.raises(ValueError, match="duplicate"):
        SoftTokenTable([1, 1], torch.zeros(2, 2, 4))


def test_save_load_round_trip(tmp_path):
    table = _table()
    table.save(tmp_path / "soft.safetensors")
    loaded = SoftTokenTable.load(tmp_path / "soft.safetensors")
    assert np.array_equal(loaded.item_ids, table.item_ids) and torch.equal(loaded.tokens, table.tokens)
    assert SoftTokenTable.load(tmp_path / "soft.safetensors", hidden_size=4, num_tokens=2).num_tokens == 2
    with pytest.raises(CheckpointError, match=r"'hidden_size': \(4, 576\)"):
        SoftTokenTable.load(tmp_path / "soft.safetensors", hidden_size=576)
    with pytest.raises(CheckpointError, match=r"'num_tokens': \(2, 8\)"):
        SoftTokenTable.load(tmp_path / "soft.safetensors", num_tokens=8)
    (tmp_path / "bad.safetensors").write_bytes(b"not a table")
    with pytest.raises(CheckpointError, match="rebuild"):
        SoftTokenTable.load(tmp_path / "bad.safetensors")


@torch.no_grad()
def test_build_covers_every_catalogue_item(tiny_config, catalogue, cf_embeddings):
    torch.manual_seed(0)
    model = ItemLanguageModel.from_config(tiny_config).eval()
    table = build_soft_token_table(model, catalogue, cf_embeddings, batch_size=16)
    assert np.array_equal(table.item_ids, catalogue.ids)
    row = catalogue.row(200)
    expected = model.soft_tokens(torch.from_numpy(cf_embeddings[row : row + 1]))[0]
    torch.testing.assert_close(table.lookup([200])[0], expected)
    with pytest.raises(ValueError, match="CF embeddings"):
        build_soft_token_table(model, catalogue, cf_embeddings[:5])
