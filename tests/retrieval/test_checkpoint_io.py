from typing import ClassVar

import numpy as np
import pytest
import torch

from retrieval import checkpoint_io
from retrieval.checkpoint_io import CheckpointHeader, RunKey
from retrieval.errors import CheckpointError

RUN = RunKey(config={"lr": 0.1, "phase": {"steps": 3, "warmup": 1}}, data="d" * 16)


class Header(CheckpointHeader):
    META_KEY: ClassVar[str] = "ilmrec_test_checkpoint"
    FORMAT_VERSION: ClassVar[int] = 2

    note: str


def test_run_key_names_nested_fields_that_differ(tmp_path):
    other = RunKey(config={"lr": 0.1, "phase": {"steps": 5, "warmup": 1}, "new": True}, data=RUN.data)
    with pytest.raises(CheckpointError, match=r"another config \(new None -> True, phase.steps 3 -> 5\)"):
        RUN.check(tmp_path, other)
    RUN.check(tmp_path, RUN.model_copy())


def test_write_then_read_round_trips_and_checks_version_and_run(tmp_path):
    path = tmp_path / "c.safetensors"
    checkpoint_io.write_checkpoint(path, {"a.x": torch.arange(3)}, Header(format_version=2, run=RUN, note="hi"))
    header, tensors = checkpoint_io.read_checkpoint(path, Header, RUN)
    assert header.note == "hi" and torch.equal(tensors["a.x"], torch.arange(3))
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind
    with pytest.raises(CheckpointError, match="written for other data"):
        checkpoint_io.read_checkpoint(path, Header, RUN.model_copy(update={"data": "e" * 16}))
    checkpoint_io.write_checkpoint(path, {}, Header(format_version=1, run=RUN, note="old"))
    with pytest.raises(CheckpointError, match="format 1, this version reads 2"):
        checkpoint_io.read_checkpoint(path, Header, RUN)


def test_tied_tensors_and_views_are_written_as_copies(tmp_path):
    base = torch.arange(6.0)
    tensors = {"tied.a": base, "tied.b": base, "view": base[2:4], "strided": torch.ones(3, 2).T}
    header = Header(format_version=2, run=RUN, note="")
    path = checkpoint_io.write_checkpoint(tmp_path / "c.safetensors", tensors, header)
    _, read = checkpoint_io.read_checkpoint(path, Header, RUN)
    assert all(torch.equal(read[name], t) for name, t in tensors.items())


def test_optimizer_state_round_trips_with_parameters_that_never_had_a_gradient(tmp_path):
    def make():
        torch.manual_seed(0)
        used, unused = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
        return used, torch.optim.AdamW([*used.parameters(), *unused.parameters()], lr=0.1, fused=True)

    used, optimizer = make()
    used(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    tensors, groups = checkpoint_io.optimizer_tensors(optimizer)
    assert sorted({name.split(".")[1] for name in tensors}) == ["0", "1"]  # the unused layer has no state
    _, restored = make()
    checkpoint_io.restore_optimizer(tmp_path, tensors, restored, groups)
    for param, entries in optimizer.state_dict()["state"].items():
        for key, value in entries.items():
            assert torch.equal(restored.state_dict()["state"][param][key], value)
    assert restored.param_groups[0]["betas"] == optimizer.param_groups[0]["betas"]
    with pytest.raises(CheckpointError, match="optimizer.0.exp_avg has shape"):
        checkpoint_io.restore_optimizer(tmp_path, tensors | {"optimizer.0.exp_avg": torch.ones(5)}, restored, groups)


def test_every_random_generator_is_restored(tmp_path):
    named = {"a": torch.Generator().manual_seed(1), "b": torch.Generator().manual_seed(2)}
    rng = np.random.default_rng(3)
    torch.manual_seed(4)
    tensors, numpy_state = checkpoint_io.rng_tensors(named), rng.bit_generator.state
    expected = [torch.rand(2, generator=named["a"]), torch.rand(2, generator=named["b"]), torch.rand(2), rng.random()]
    checkpoint_io.restore_rng(tmp_path, tensors, named, [(rng, numpy_state)])
    got = [torch.rand(2, generator=named["a"]), torch.rand(2, generator=named["b"]), torch.rand(2), rng.random()]
    assert all(torch.equal(x, y) for x, y in zip(got[:3], expected[:3], strict=True)) and got[3] == expected[3]
    with pytest.raises(CheckpointError, match="random generator state missing"):
        checkpoint_io.restore_rng(tmp_path, tensors, {"c": torch.Generator()})
