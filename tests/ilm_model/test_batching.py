import pytest
import torch

from ilm_model.batching import ShuffledBatches


def test_epochs_cover_every_row_once_in_full_batches():
    batches = ShuffledBatches(10, 3, torch.Generator().manual_seed(0))
    epoch = [next(batches) for _ in range(3)]  # 3 full batches per epoch, the 10th row dropped
    rows = torch.cat(epoch)
    assert all(len(b) == 3 for b in epoch) and len(set(rows.tolist())) == 9
    assert torch.equal(rows, torch.randperm(10, generator=torch.Generator().manual_seed(0))[:9])
    assert len(next(ShuffledBatches(2, 8, torch.Generator()))) == 2
    with pytest.raises(ValueError):
        ShuffledBatches(0, 8, torch.Generator())


def test_a_restored_sampler_continues_the_same_stream():
    original = ShuffledBatches(7, 2, torch.Generator().manual_seed(3))
    for _ in range(2):
        next(original)
    copy = ShuffledBatches(7, 2, torch.Generator())
    copy.generator.set_state(original.generator.get_state())
    copy.restore(original.order, original.position)
    for _ in range(5):  # crosses two epoch boundaries
        assert torch.equal(next(copy), next(original))


def test_restore_refuses_a_foreign_state():
    batches = ShuffledBatches(7, 2, torch.Generator())
    with pytest.raises(ValueError, match="no permutation of 7 rows"):
        batches.restore(torch.arange(5), 0)
    with pytest.raises(ValueError, match="position 9"):
        batches.restore(torch.arange(7), 9)
