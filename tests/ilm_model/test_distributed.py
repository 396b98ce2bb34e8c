"""Shards, the differentiable gather and gradient averaging: identities in one process, and two gloo replicas
(file rendezvous) whose averaged gradient of an in-batch contrastive loss plus a scaled per-row loss equals the
single-process gradient."""

import os

import pytest
import torch
import torch.multiprocessing as mp

from ilm_model.distributed import average_gradients, gather_rows, mean_values, shard
from ilm_model.objectives import itc_loss
from retrieval.distributed import Replicas


@pytest.mark.parametrize(("n", "world", "sizes"), [(8, 2, [4, 4]), (5, 2, [3, 2]), (3, 3, [1, 1, 1]), (7, 1, [7])])
def test_shards_are_contiguous_and_cover_the_batch(n, world, sizes):
    slices = [shard(Replicas(r, world), n) for r in range(world)]
    assert [s.stop - s.start for s in slices] == sizes
    assert [i for s in slices for i in range(n)[s]] == list(range(n))


def test_one_process_is_the_identity():
    local = torch.randn(3, 2, requires_grad=True)
    assert gather_rows(Replicas(), local, 3) is local
    assert mean_values(Replicas(), {"loss": 0.5}) == {"loss": 0.5}
    layer = torch.nn.Linear(2, 1)
    layer(local).sum().backward()
    before = layer.weight.grad.clone()
    average_gradients(Replicas(), layer.parameters())
    assert torch.equal(layer.weight.grad, before)


def _objective(encoder: torch.nn.Linear, head: torch.nn.Linear, x: torch.Tensor, y: torch.Tensor, replicas):
    """ITC over the whole batch of 5 from gathered features, plus a per-row loss scaled by W n_r / n; the
    head is used on replica 0 only (a parameter without a gradient on one replica)."""
    mine = shard(replicas, len(x))
    items = torch.nn.functional.normalize(encoder(x[mine]), dim=-1)
    texts = torch.nn.functional.normalize(encoder(y[mine]), dim=-1)
    similarity = gather_rows(replicas, items, len(x)) @ gather_rows(replicas, texts, len(x)).t()
    loss = itc_loss(similarity, 0.1)
    rows = x[mine]
    loss = loss + (encoder(rows) ** 2).mean() * replicas.loss_scale(len(rows), len(x))
    if replicas.rank == 0:
        loss = loss + head(x[:1]).sum() * (replicas.world if replicas.world > 1 else 1)
    return loss


def _modules():
    torch.manual_seed(0)
    return torch.nn.Linear(4, 3), torch.nn.Linear(4, 1), torch.randn(5, 4), torch.randn(5, 4)


def _replica(rank: int, world: int, rendezvous: str, out: str) -> None:
    os.environ["GLOO_SOCKET_IFNAME"] = "lo"
    torch.distributed.init_process_group("gloo", init_method=rendezvous, rank=rank, world_size=world)
    encoder, head, x, y = _modules()
    replicas = Replicas.from_process_group()
    _objective(encoder, head, x, y, replicas).backward()
    average_gradients(replicas, [*encoder.parameters(), *head.parameters()])
    grads = {"encoder": encoder.weight.grad, "bias": encoder.bias.grad, "head": head.weight.grad}
    torch.save(grads, f"{out}/grads-{rank}.pt")
    torch.distributed.destroy_process_group()


def test_two_replicas_average_to_the_single_process_gradient(tmp_path):
    encoder, head, x, y = _modules()
    _objective(encoder, head, x, y, Replicas()).backward()
    rendezvous = f"file://{tmp_path / 'rendezvous'}"
    mp.start_processes(_replica, args=(2, rendezvous, str(tmp_path)), nprocs=2, join=True, start_method="spawn")
    grads = [torch.load(tmp_path / f"grads-{rank}.pt") for rank in (0, 1)]
    for name, expected in (("encoder", encoder.weight.grad), ("bias", encoder.bias.grad)):
        assert torch.equal(grads[0][name], grads[1][name])
        torch.testing.assert_close(grads[0][name], expected, rtol=1e-5, atol=1e-6)
    # the head's gradient exists on replica 0 only; averaged with replica 1's zeros it is the one-process value
    torch.testing.assert_close(grads[1]["head"], head.weight.grad)
