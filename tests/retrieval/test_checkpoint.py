import os

import numpy as np
import pytest
import torch
from safetensors.torch import save as save_safetensors

from retrieval import checkpoint
from retrieval.checkpoint import (
    CHECKPOINT_FILE,
    EpochRecord,
    Progress,
    RunKey,
    Trainee,
    load_checkpoint,
    save_checkpoint,
)
from retrieval.config import RetrievalConfig
from retrieval.data import load_movielens
from retrieval.errors import CheckpointError
from retrieval.models import BagOfItemsTwoTower, Bags

CONFIG = RetrievalConfig(embedding_dim=4, learning_rate=0.05)
RUN = RunKey(config=CONFIG.model_dump(mode="json"), data="d" * 16)
PROGRESS = Progress(
    epoch=2,
    history=[
        EpochRecord(epoch=1, loss=2.5, validation_ndcg=0.1, seconds=1.0),
        EpochRecord(epoch=2, loss=2.0, validation_ndcg=None, seconds=2.0),
    ],
    best_ndcg=0.1,
    best_epoch=1,
    stale=1,
)


def make_trainee(seed: int, dim: int = 4, steps: int = 2) -> Trainee:
    torch.manual_seed(seed)
    model = BagOfItemsTwoTower(n_items=6, dim=dim)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05, fused=True)
    for _ in range(steps):
        score = model.user_vectors(Bags.pack([np.array([0, 1])])) @ model.item_vectors().T
        optimizer.zero_grad()
        score.square().sum().backward()
        optimizer.step()
    return Trainee(model, optimizer, torch.Generator().manual_seed(seed), np.random.default_rng(seed))


def best_of(trainee: Trainee) -> dict[str, torch.Tensor]:
    return {name: t + 1 for name, t in trainee.model.state_dict().items()}


@pytest.fixture
def saved(tmp_path):
    trainee = make_trainee(seed=1)
    trainee.generator.manual_seed(7)
    torch.manual_seed(8)
    save_checkpoint(tmp_path, trainee, PROGRESS, best_of(trainee), RUN)
    return trainee, tmp_path


def test_round_trip_restores_weights_optimizer_progress_and_every_random_state(saved):
    original, directory = saved
    expected_draws = (torch.randn(3, generator=original.generator), original.rng.random(3))
    restored = make_trainee(seed=2, steps=0)  # other weights, no Adam state yet, other RNG states

    resumed = load_checkpoint(directory, restored, RUN)

    assert resumed.progress == PROGRESS
    for name, tensor in original.model.state_dict().items():
        assert torch.equal(restored.model.state_dict()[name], tensor)
        assert torch.equal(resumed.best_state[name], tensor + 1)
    saved_adam, loaded_adam = original.optimizer.state_dict(), restored.optimizer.state_dict()
    assert loaded_adam["param_groups"] == saved_adam["param_groups"]
    for param, entries in saved_adam["state"].items():
        assert set(loaded_adam["state"][param]) == {"step", "exp_avg", "exp_avg_sq"}
        for key, value in entries.items():
            assert torch.equal(loaded_adam["state"][param][key], value)
    assert torch.equal(torch.randn(3, generator=restored.generator), expected_draws[0])
    assert np.array_equal(restored.rng.random(3), expected_draws[1])


def test_global_torch_rng_is_restored(saved):
    _, directory = saved
    expected = torch.rand(4)  # the global state was seeded 8 just before saving
    torch.manual_seed(123)
    load_checkpoint(directory, make_trainee(seed=3, steps=0), RUN)
    assert torch.equal(torch.rand(4), expected)


def test_restored_training_continues_identically(saved):
    original, directory = saved
    restored = make_trainee(seed=5, steps=0)
    load_checkpoint(directory, restored, RUN)
    for trainee in (original, restored):
        score = trainee.model.user_vectors(Bags.pack([np.array([2, 3])])) @ trainee.model.item_vectors().T
        trainee.optimizer.zero_grad()
        score.square().sum().backward()
        trainee.optimizer.step()
    for name, tensor in original.model.state_dict().items():
        assert torch.equal(restored.model.state_dict()[name], tensor)


def test_no_checkpoint_is_none(tmp_path):
    assert load_checkpoint(tmp_path, make_trainee(seed=1), RUN) is None


def test_truncated_file_is_refused(saved):
    _, directory = saved
    path = directory / CHECKPOINT_FILE
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match=r"unreadable or truncated .*delete it to train from scratch"):
        load_checkpoint(directory, make_trainee(seed=1), RUN)


def test_a_pickle_is_refused_not_loaded(tmp_path):
    torch.save({"model": torch.ones(2)}, tmp_path / CHECKPOINT_FILE)
    with pytest.raises(CheckpointError, match="unreadable or truncated"):
        load_checkpoint(tmp_path, make_trainee(seed=1), RUN)


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ({checkpoint._META_KEY: "{not json"}, "metadata invalid at metadata: Invalid JSON"),
        ({checkpoint._META_KEY: '{"format_version": 1}'}, "metadata invalid at run: Field required"),
        ({"other": "x"}, "not a retrieval checkpoint"),
    ],
)
def test_bad_metadata_is_refused(tmp_path, metadata, message):
    (tmp_path / CHECKPOINT_FILE).write_bytes(save_safetensors({"x": torch.ones(1)}, metadata=metadata))
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(tmp_path, make_trainee(seed=1), RUN)


def test_wrong_tensor_shapes_are_refused(saved):
    _, directory = saved
    wider = make_trainee(seed=1, dim=8)
    with pytest.raises(CheckpointError, match=r"model tensors .*\(6, 4\).* do not fit the model"):
        load_checkpoint(directory, wider, RUN)


def test_other_config_is_refused_naming_the_fields(saved):
    _, directory = saved
    config = CONFIG.model_copy(update={"learning_rate": 0.02, "seed": 3})
    other = RunKey(config=config.model_dump(mode="json"), data=RUN.data)
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(directory, make_trainee(seed=1), other)
    message = str(caught.value)
    assert "another config (learning_rate 0.05 -> 0.02, seed 0 -> 3)" in message
    assert "\n" not in message


def test_other_data_is_refused(saved):
    _, directory = saved
    with pytest.raises(CheckpointError, match="written for other data"):
        load_checkpoint(directory, make_trainee(seed=1), RUN.model_copy(update={"data": "e" * 16}))


def test_run_key_hashes_the_ratings(movielens_dir):
    data = load_movielens("ml-latest-small", path=movielens_dir)
    key = RunKey.of(CONFIG, data)
    assert RunKey.of(CONFIG, data) == key
    changed = type(data)(data.name, data.source, data.catalogue, data.ratings.assign(rating=data.ratings.rating * 0.5))
    assert RunKey.of(CONFIG, changed).data != key.data
    assert RunKey.of(CONFIG, changed).config == key.config


def test_a_failed_write_keeps_the_previous_checkpoint(saved, monkeypatch):
    trainee, directory = saved

    def crash(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(directory, trainee, PROGRESS.model_copy(update={"epoch": 3}), best_of(trainee), RUN)
    monkeypatch.undo()
    assert [p.name for p in directory.iterdir()] == [CHECKPOINT_FILE]
    assert load_checkpoint(directory, make_trainee(seed=1), RUN).progress.epoch == 2
