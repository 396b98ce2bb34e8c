import pytest
import torch

from ilm_model.optimization import build_optimizer, warmup_cosine


def test_no_decay_on_biases_norms_and_scalars():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))
    model.register_parameter("temperature", torch.nn.Parameter(torch.tensor(0.07)))
    frozen = torch.nn.Linear(2, 2).requires_grad_(False)
    optimizer = build_optimizer([*model.named_parameters(), *frozen.named_parameters()], 1e-3, 0.05)
    decayed, plain = optimizer.param_groups
    assert decayed["weight_decay"] == 0.05 and [p.shape for p in decayed["params"]] == [(4, 3)]
    assert plain["weight_decay"] == 0.0 and len(plain["params"]) == 4
    with pytest.raises(ValueError):
        build_optimizer(frozen.named_parameters(), 1e-3, 0.0)


def test_warmup_then_cosine_to_zero():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = warmup_cosine(optimizer, warmup_steps=2, total_steps=6)
    lrs = []
    for _ in range(7):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert lrs[:3] == pytest.approx([0.5, 1.0, 1.0])
    assert lrs[4] == pytest.approx(0.5) and lrs[6] == pytest.approx(0.0)
