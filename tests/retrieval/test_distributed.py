import os

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from retrieval.distributed import Replicas, backend_for, main_first, process_group, threads_per_replica


def test_single_process_is_the_identity():
    replicas = Replicas()
    module = torch.nn.Linear(2, 2)
    assert replicas.is_main and replicas.wrap(module) is module
    assert replicas.mean(0.25) == 0.25 and replicas.from_main(lambda: {"ndcg": 0.5}) == {"ndcg": 0.5}
    np.testing.assert_array_equal(replicas.shard(np.arange(5)), np.arange(5))
    assert replicas.loss_scale(7, 7) == 1.0
    assert Replicas.from_process_group() == Replicas()


def test_shards_partition_a_batch():
    users = np.array([10, 11, 12, 13, 14])
    shards = [Replicas(rank, 2).shard(users) for rank in (0, 1)]
    np.testing.assert_array_equal(shards[0], [10, 12, 14])
    np.testing.assert_array_equal(shards[1], [11, 13])
    assert len(Replicas(1, 2).shard(users[:1])) == 0


def test_loss_scales_average_back_to_the_batch_mean():
    # rows 3 and 1 of a batch of 4: DDP's mean of c_r * (S_r / B_r) is (S_0 + S_1) / 4
    sums, rows = np.array([6.0, 2.0]), np.array([3, 1])
    scaled = [Replicas(r, 2).loss_scale(int(rows[r]), 4) * sums[r] / rows[r] for r in (0, 1)]
    assert np.mean(scaled) == pytest.approx(sums.sum() / 4)
    assert not Replicas(1, 2).is_main


@pytest.mark.parametrize(("rank", "world"), [(2, 2), (-1, 2), (0, 0)])
def test_bad_rank_or_world_is_refused(rank, world):
    with pytest.raises(ValueError, match="rank must lie"):
        Replicas(rank, world)


def test_threads_per_replica_is_at_least_one():
    assert threads_per_replica(10_000) == 1
    assert threads_per_replica(1) >= 1


@pytest.mark.parametrize(
    ("device", "backend"),
    [("cpu", "gloo"), (torch.device("cpu"), "gloo"), ("cuda", "cpu:gloo,cuda:nccl"),
     (torch.device("cuda", 1), "cpu:gloo,cuda:nccl")],
)
def test_backend_is_gloo_on_cpu_and_nccl_for_cuda_tensors(device, backend):
    assert backend_for(device) == backend


def test_one_process_needs_no_process_group():
    with process_group(torch.device("cpu"), world=1, rank=0) as replicas:
        assert replicas == Replicas() and not torch.distributed.is_initialized()
    calls = []
    assert main_first(Replicas(), lambda: calls.append(1) or "loaded") == "loaded" and calls == [1]


def _load_after_rank_zero(rank: int, rendezvous: str, marker: str) -> None:
    """Rank 0's load takes a while and leaves a file; rank 1's must find it (it started after rank 0's ended)."""
    import time
    from pathlib import Path

    os.environ["GLOO_SOCKET_IFNAME"] = "lo"
    with process_group(torch.device("cpu"), world=2, rank=rank, init_method=rendezvous) as replicas:
        def load() -> bool:
            if replicas.is_main:
                time.sleep(1.0)
                Path(marker).write_text("downloaded")
            return Path(marker).is_file()

        if not main_first(replicas, load):
            raise SystemExit(f"rank {rank} loaded before rank 0 had finished")
    assert not torch.distributed.is_initialized()


def test_main_first_lets_rank_zero_finish_before_the_others_start(tmp_path):
    args = (f"file://{tmp_path / 'rendezvous'}", str(tmp_path / "marker"))
    mp.start_processes(_load_after_rank_zero, args=args, nprocs=2, join=True, start_method="spawn")


def test_torchrun_replica_reads_the_world_and_shares_the_cpus(monkeypatch: pytest.MonkeyPatch):
    from retrieval.distributed import torchrun_replica

    threads = torch.get_num_threads()
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    try:
        assert torchrun_replica("cpu", None) == (torch.device("cpu"), 2, 1)
        assert torch.get_num_threads() == threads_per_replica(2)
        assert torchrun_replica("auto", 3)[1:] == (2, 1) and torch.get_num_threads() == 3
        with pytest.raises(ValueError, match="device must be"):
            torchrun_replica("gpu", None)
    finally:
        torch.set_num_threads(threads)
