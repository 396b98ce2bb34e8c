import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save as save_safetensors

import ilm_model.train_phase1 as phase1_module
from ilm_model.configuration import Phase1Config
from ilm_model.errors import CheckpointError, ILMError
from ilm_model.interactions import Interactions
from ilm_model.item_text import describe
from ilm_model.modeling import ItemLanguageModel
from ilm_model.train_checkpoint import CHECKPOINT_FILE, ILMCheckpointMeta, StepCheckpoints, ilm_run_key
from ilm_model.train_phase1 import train_phase1
from ilm_model.training_history import TrainingHistory
from tests.ilm_model.conftest import tiny_qformer

# ITM (hard negatives from the generator), IIC and UIC (two more samplers) and dropout: every random stream
PHASE1 = Phase1Config(
    steps=7, batch_size=6, learning_rate=3e-3, warmup_steps=2, itm_weight=1.0, iic_weight=1.0, uic_weight=1.0,
    pair_batch_size=3,
)
ITEM_PAIRS = np.array([[0, 1], [2, 3], [4, 5], [6, 7], [1, 0], [3, 2], [5, 4], [7, 6]])
USER_PAIRS = np.array([[0, 0], [0, 1], [1, 2], [1, 3], [2, 4], [2, 5], [3, 6]])


def _train(tiny_config, catalogue, cf_embeddings, checkpoints=None, seed=0, history=None):
    torch.manual_seed(seed)
    model = ItemLanguageModel.from_config(tiny_config)
    history = history if history is not None else TrainingHistory()
    users = torch.from_numpy(np.random.default_rng(5).normal(size=(4, 16)).astype(np.float32))
    train_phase1(
        model, [describe(m) for m in catalogue.movies[:9]], torch.from_numpy(cf_embeddings[:9]), PHASE1, history,
        progress=False, item_pairs=ITEM_PAIRS, user_embeddings=users, user_pairs=USER_PAIRS,
        checkpoints=checkpoints,
    )
    return model, history


def _run(tiny_config, catalogue, cf_embeddings):
    return ilm_run_key(tiny_config, catalogue, cf_embeddings, None, "tiny-llm")


def test_an_interrupted_phase_resumes_to_the_uninterrupted_result(
    tiny_config, catalogue, cf_embeddings, tmp_path, monkeypatch, caplog
):
    expected_model, expected = _train(tiny_config, catalogue, cf_embeddings)
    run = _run(tiny_config, catalogue, cf_embeddings)
    real, calls = phase1_module.phase1_losses, []

    def interrupt(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:  # step 4: the checkpoint after step 3 is on disk
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(phase1_module, "phase1_losses", interrupt)
    with pytest.raises(KeyboardInterrupt):
        _train(tiny_config, catalogue, cf_embeddings, StepCheckpoints(tmp_path, run, every=3))
    monkeypatch.setattr(phase1_module, "phase1_losses", real)

    stale = TrainingHistory()
    stale.log("phase1", 0, loss=9.0)
    with caplog.at_level("INFO", logger="ilm_model.train_checkpoint"):
        # other initial weights and global RNG: everything must come from the checkpoint
        model, history = _train(tiny_config, catalogue, cf_embeddings, StepCheckpoints(tmp_path, run, every=3),
                                seed=11, history=stale)
    assert "ILM training resumed at phase1 step 3" in caplog.text
    assert history.records == expected.records  # exact: weights, AdamW, schedule, samplers and RNGs restored
    for name, tensor in expected_model.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor), name
    with safe_open(str(tmp_path / CHECKPOINT_FILE), framework="pt") as file:
        meta = ILMCheckpointMeta.model_validate_json(file.metadata()[ILMCheckpointMeta.META_KEY])
    assert (meta.phase, meta.step, len(meta.history)) == ("phase1", 7, 7)  # the phase's last step is saved too
    assert set(meta.sampler_positions) == {"rows", "item_pairs", "user_pairs"}


@pytest.fixture
def saved(tiny_config, catalogue, cf_embeddings, tmp_path):
    run = _run(tiny_config, catalogue, cf_embeddings)
    _train(tiny_config, catalogue, cf_embeddings, StepCheckpoints(tmp_path, run, every=7))
    return run, tmp_path


def _resume(tiny_config, catalogue, cf_embeddings, directory, run):
    _train(tiny_config, catalogue, cf_embeddings, StepCheckpoints(directory, run))


def test_a_checkpoint_of_another_config_is_refused_naming_the_field(tiny_config, catalogue, cf_embeddings, saved):
    _, directory = saved
    other = tiny_config.model_copy(update={"phase1": tiny_config.phase1.model_copy(update={"learning_rate": 1e-3})})
    with pytest.raises(CheckpointError) as caught:
        _resume(tiny_config, catalogue, cf_embeddings, directory, _run(other, catalogue, cf_embeddings))
    message = str(caught.value)
    assert "another config (phase1.learning_rate 0.0003 -> 0.001); delete it to train from scratch" in message
    assert "\n" not in message and isinstance(caught.value, ILMError)


def test_a_checkpoint_of_other_data_is_refused(tiny_config, catalogue, cf_embeddings, saved):
    _, directory = saved
    with pytest.raises(CheckpointError, match="written for other data"):
        _resume(tiny_config, catalogue, cf_embeddings, directory, _run(tiny_config, catalogue, cf_embeddings + 1))


def test_a_truncated_checkpoint_is_refused(tiny_config, catalogue, cf_embeddings, saved):
    run, directory = saved
    path = directory / CHECKPOINT_FILE
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="unreadable or truncated"):
        _resume(tiny_config, catalogue, cf_embeddings, directory, run)


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ({ILMCheckpointMeta.META_KEY: "{not json"}, "metadata invalid at metadata: Invalid JSON"),
        ({ILMCheckpointMeta.META_KEY: '{"format_version": 1}'}, "metadata invalid at run: Field required"),
        ({"ilmrec_retrieval_checkpoint": "{}"}, "not a ilm checkpoint"),
    ],
)
def test_bad_metadata_is_refused(tiny_config, catalogue, cf_embeddings, tmp_path, metadata, message):
    (tmp_path / CHECKPOINT_FILE).write_bytes(save_safetensors({"x": torch.ones(1)}, metadata=metadata))
    with pytest.raises(CheckpointError, match=message):
        _resume(tiny_config, catalogue, cf_embeddings, tmp_path, _run(tiny_config, catalogue, cf_embeddings))


def test_tensors_that_do_not_fit_the_model_are_refused(tiny_config, catalogue, cf_embeddings, saved):
    run, directory = saved
    wider = tiny_config.model_copy(update={"qformer": tiny_qformer(intermediate_size=48)})
    with pytest.raises(CheckpointError, match=r"model tensors .*\(48, 32\).* do not fit the model"):
        _resume(wider, catalogue, cf_embeddings, directory, run)  # same run key on purpose: shapes are checked


def test_run_key_covers_the_data_and_the_llm(tiny_config, catalogue, cf_embeddings):
    key = ilm_run_key(tiny_config, catalogue, cf_embeddings, None, "a")
    assert ilm_run_key(tiny_config, catalogue, cf_embeddings.copy(), None, "a") == key
    assert ilm_run_key(tiny_config, catalogue, cf_embeddings, None, "b").config["llm"] == "b"
    histories = [np.array([0, 1]), np.array([2])]
    with_history = ilm_run_key(tiny_config, catalogue, cf_embeddings, Interactions(histories, None), "a")
    other_history = ilm_run_key(tiny_config, catalogue, cf_embeddings, Interactions(histories[::-1], None), "a")
    assert len({key.data, with_history.data, other_history.data}) == 3


def test_checkpoint_every_must_be_positive(tiny_config, catalogue, cf_embeddings, tmp_path):
    with pytest.raises(ValueError, match="checkpoint_every must be >= 1"):
        StepCheckpoints(tmp_path, _run(tiny_config, catalogue, cf_embeddings), every=0)
