import pytest
import torch

from ilm_model.batching import shuffled_batches


def test_epochs_cover_every_row_once_in_full_batches():
    batches = shuffled_batches(10, 3, torch.Generator().manual_seed(0))
    epoch = [next(batches) for _ in range(3)]  # 3 full batches per epoch, the 10th row dropped
    rows = torch.cat(epoch)
    assert all(len(b) == 3 for b in epoch) and len(set(rows.tolist())) == 9
    assert len(next(shuffled_batches(2, 8, torch.Generator()))) == 2
    with pytest.raises(ValueError):
        next(shuffled_batches(0, 8, torch.Generator()))
