import numpy as np
import pytest
import torch

from retrieval.distributed import Replicas, threads_per_replica


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
