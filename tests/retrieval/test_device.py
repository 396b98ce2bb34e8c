"""The device setting: auto / cpu / cuda[:N] resolved to one torch.device, and training placed on a device.

No GPU here: `tests.cuda_standin` stands in for one (tensors on `meta` holding CPU data, PyTorch's cross-device
rules enforced), so a tensor made on the CPU inside the training loop fails these tests as it would on a GPU.
"""

import numpy as np
import pytest
import torch

from retrieval.config import RetrievalConfig
from retrieval.data import load_movielens
from retrieval.device import replica_device, resolve_device
from retrieval.train import train_retrieval
from tests.cuda_standin import STANDIN, StandinTensor, standin_device

TINY = {"epochs": 2, "batch_users": 16, "num_negatives": 16, "embedding_dim": 8, "heldout_user_fraction": 0.2}


def test_auto_and_cpu_are_the_cpu_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto", local_rank=3) == torch.device("cpu")


def test_cuda_without_cuda_is_refused_with_what_to_change(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="needs CUDA.*use device=cpu or auto"):
        resolve_device("cuda")


def test_cuda_names_the_local_rank_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda", 0)
    assert resolve_device("cuda", local_rank=1) == torch.device("cuda", 1)
    assert resolve_device("cuda:2", local_rank=1) == torch.device("cuda", 2)
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert replica_device("cuda", world=4) == torch.device("cuda", 3)
    assert replica_device("cuda", world=1) == torch.device("cuda", 0)


@pytest.mark.parametrize("setting", ["gpu", "cuda:", "CPU", "cuda:x"])
def test_malformed_settings_are_refused(setting):
    with pytest.raises(ValueError, match="device must be auto, cpu, cuda or cuda:N"):
        resolve_device(setting)


def test_the_standin_catches_a_cpu_tensor_meeting_a_device_tensor():
    with standin_device():
        on_device = torch.ones(3, device=STANDIN)
        assert isinstance(on_device, StandinTensor) and on_device.device == STANDIN
        assert (on_device + torch.tensor(1.0)).device == STANDIN  # a CPU scalar may meet it, as on cuda
        assert on_device[torch.tensor([0, 2])].device == STANDIN  # so may CPU indices
        with pytest.raises(RuntimeError, match="same device"):
            on_device + torch.ones(3)
        with pytest.raises(RuntimeError, match="CPU generator"):
            torch.multinomial(on_device, 1, generator=torch.Generator())
        assert torch.equal(on_device.cpu(), torch.ones(3))


@pytest.fixture(scope="module")
def synthetic(movielens_dir):
    return load_movielens("ml-latest-small", path=movielens_dir)


@pytest.mark.parametrize(
    "overrides",
    [
        {"model": "two_tower", "loss": "lambdarank", "rank_estimator": "posterior"},
        {"model": "mf", "loss": "warp", "rank_estimator": "scaled", "sampling": "popularity"},
        {"model": "two_tower", "loss": "softmax", "remove_accidental_hits": False},
    ],
)
def test_training_on_a_device_matches_the_cpu_and_returns_cpu_weights(synthetic, overrides):
    config = RetrievalConfig(**TINY, **overrides)
    on_cpu = train_retrieval(synthetic, config, progress=False, device="cpu")
    with standin_device():
        on_device = train_retrieval(synthetic, config, progress=False, device=STANDIN)
    weights = on_device.recommender.model.state_dict()
    assert all(type(t) is torch.Tensor and t.device.type == "cpu" for t in weights.values())
    for name, tensor in on_cpu.recommender.model.state_dict().items():
        np.testing.assert_allclose(weights[name].numpy(), tensor.numpy(), rtol=1e-5, atol=1e-6)
    assert on_device.metrics["ndcg@100"].mean == pytest.approx(on_cpu.metrics["ndcg@100"].mean, abs=1e-6)
