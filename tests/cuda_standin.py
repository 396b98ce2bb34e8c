"""A stand-in accelerator for machines without one: tensors on device `meta` that hold real CPU data, under a
mode that enforces PyTorch's cross-device rules on them. Training code given `device=STANDIN` fails where it
would fail on a GPU because a tensor sits on the wrong device: an op mixing a device tensor with a CPU tensor
that is not a 0-dim scalar (CPU indices into a device tensor are allowed, as PyTorch allows them), a CPU
generator driving a device op, a device tensor turned into numpy.

`meta` stands in for `cuda` because a CPU-only torch build has no cuda device guard (its autograd engine and
`__getitem__` abort on any tensor that says cuda), while `meta` has one. Code that branches on
`device.type == "cuda"` is not exercised, nor CUDA numerics, memory, speed or NCCL.

    with standin_device():
        model = Model().to(STANDIN)   # parameters are StandinTensors
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

import torch
from torch.optim import optimizer as optimizer_module
from torch.overrides import TorchFunctionMode
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten
STANDIN = torch.device("meta")
# PyTorch accepts CPU index tensors into a device tensor, and copies between devices
_INDEX_OPS = {aten.index.Tensor, aten.index_put.default, aten.index_put_.default, aten._index_put_impl_.default}
_CROSS_DEVICE_OPS = {aten._to_copy.default, aten.copy_.default}


class StandinTensor(torch.Tensor):
    """Reports device `STANDIN`; `inner` is the CPU tensor holding its data."""

    inner: torch.Tensor

    @staticmethod
    def __new__(cls, inner: torch.Tensor) -> StandinTensor:
        out = torch.Tensor._make_wrapper_subclass(
            cls, inner.shape, strides=inner.stride(), storage_offset=inner.storage_offset(), dtype=inner.dtype,
            device=STANDIN, layout=inner.layout,
        )
        out.inner = inner
        return out

    def __repr__(self) -> str:
        return f"StandinTensor({self.inner!r})"

    __torch_function__ = torch._C._disabled_torch_function_impl

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        with _DeviceRules():
            return func(*args, **(kwargs or {}))


def _on_standin(device: object) -> bool:
    return device is not None and torch.device(device).type == STANDIN.type


class _PythonLevel(TorchFunctionMode):
    """What never reaches the dispatcher: `torch.tensor` / `torch.as_tensor` onto the stand-in (built on the
    CPU, then moved; they would otherwise make a real, data-less meta tensor), `.tolist()` (allowed on cuda),
    `.numpy()` (refused on cuda)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.Tensor.tolist and isinstance(args[0], StandinTensor):
            return args[0].inner.tolist()
        if func is torch.Tensor.numpy and isinstance(args[0], StandinTensor):
            raise TypeError(f"can't convert a {STANDIN} tensor to numpy; use .cpu() first (as on cuda)")
        if func in (torch.tensor, torch.as_tensor) and _on_standin(kwargs.get("device")):
            if func is torch.as_tensor and isinstance(args[0], torch.Tensor):
                return args[0].to(device=STANDIN, dtype=kwargs.get("dtype"))
            return func(*args, **(kwargs | {"device": "cpu"})).to(STANDIN)
        return func(*args, **kwargs)


class _DeviceRules(TorchDispatchMode):
    """Every aten op: refuse what a GPU would refuse, run the rest on the CPU data, wrap device results."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        leaves = pytree.tree_leaves((args, kwargs))
        standins = [t for t in leaves if isinstance(t, StandinTensor)]
        cpu = [t for t in leaves if isinstance(t, torch.Tensor) and not isinstance(t, StandinTensor) and t.dim()]
        to_standin = _on_standin(kwargs.get("device"))
        if standins and cpu and func not in _CROSS_DEVICE_OPS:
            if not (func in _INDEX_OPS and isinstance(args[0], StandinTensor)):
                raise RuntimeError(f"{func}: expected all tensors on the same device, found {STANDIN} and cpu")
        if (standins or to_standin) and any(isinstance(t, torch.Generator) for t in leaves):
            raise RuntimeError(f"{func}: a CPU generator cannot drive an op on {STANDIN}")
        inner = {id(s.inner): s for s in standins}
        args, kwargs = pytree.tree_map(lambda t: t.inner if isinstance(t, StandinTensor) else t, (args, kwargs))
        if to_standin:
            kwargs["device"] = torch.device("cpu")
        out = func(*args, **kwargs)
        if not (standins or to_standin) or (func is aten._to_copy.default and "device" in kwargs and not to_standin):
            return out
        # an op's output that is one of its inputs (in-place ops) stays that input's stand-in
        return pytree.tree_map(
            lambda t: (inner[id(t)] if id(t) in inner else StandinTensor(t)) if isinstance(t, torch.Tensor) else t, out
        )


def _enter_as_no_grad(self: torch.inference_mode) -> None:
    self._inference_mode_context = torch.no_grad() if self.mode else nullcontext()
    self._inference_mode_context.__enter__()


@contextmanager
def standin_device() -> Iterator[None]:
    """Inside: tensors made or moved to `STANDIN` are StandinTensors, and device mistakes raise RuntimeError.
    Fused optimisers accept the stand-in as they accept cuda; `torch.inference_mode` acts as `no_grad` (a
    wrapper tensor cannot be an inference tensor)."""
    fused_devices = optimizer_module._get_fused_kernels_supported_devices
    enter_inference = torch.inference_mode.__enter__
    optimizer_module._get_fused_kernels_supported_devices = lambda: [*fused_devices(), STANDIN.type]
    torch.inference_mode.__enter__ = _enter_as_no_grad
    try:
        with _PythonLevel(), _DeviceRules():
            yield
    finally:
        optimizer_module._get_fused_kernels_supported_devices = fused_devices
        torch.inference_mode.__enter__ = enter_inference
