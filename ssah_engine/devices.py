"""Models whose layers sit on several devices or are offloaded (``Placement``): where inputs go, which weights are real.

accelerate places each module with an ``AlignDevicesHook``: it moves the module's inputs to the module's
execution device and, for offloaded modules, loads the weights for the call only (the parameters stay on
``meta`` in between). Code that reads weights or writes them in place asks here first.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


def input_device(model: nn.Module) -> torch.device:
    """Where a model's input ids go: the first execution device of its device map, else its parameters' device."""
    device_map = getattr(model, "hf_device_map", None)
    if device_map:
        for place in device_map.values():
            if place not in ("cpu", "disk", "meta"):
                return torch.device("cuda", place) if isinstance(place, int) else torch.device(place)
        return torch.device("cpu")  # everything on the CPU or offloaded: accelerate runs it on the CPU
    return next(model.parameters()).device


def offloaded(module: nn.Module) -> bool:
    """Whether ``module``'s own weights live off the module (disk or CPU offload): ``meta`` between calls."""
    return any(parameter.device.type == "meta" for parameter in module.parameters(recurse=False))


def execution_device(module: nn.Module) -> torch.device:
    """The device ``module`` computes on: its accelerate hook's, else its weights'."""
    hook = getattr(module, "_hf_hook", None)
    device = getattr(hook, "execution_device", None)
    if device is not None:
        return torch.device("cuda", device) if isinstance(device, int) else torch.device(device)
    return next(module.parameters()).device


@contextmanager
def real_weights(module: nn.Module) -> Iterator[nn.Module]:
    """Within the block ``module``'s weights are real tensors (on its execution device), offloaded or not."""
    if not offloaded(module):
        yield module
        return
    from accelerate.utils import align_module_device

    with align_module_device(module):
        yield module
