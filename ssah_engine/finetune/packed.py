"""AdamW whose state follows the mask: moments only for the trainable entries of partly frozen tensors.

A tensor whose frozen part is a set of rows keeps moments of shape [trainable rows, columns]; a
column mask (o_proj/down_proj inputs) [rows, trainable columns]; any other bool mask a flat vector
of its trainable entries. Each step gathers the trainable entries of the parameter and its
gradient, runs torch's own AdamW arithmetic (``torch.optim.adam.adam``, same flags) on them and
writes them back, so the update equals the dense masked AdamW's bit for bit (elementwise kernels
give an entry the same bits wherever it sits), and frozen entries are never written at all: no
weight decay to undo, no snapshot to keep.

The packing is saved in ``state_dict()`` (key ``packing``) and adopted by ``load_state_dict``;
``set_packings`` converts the state when the masks change (new trainable entries start at zero
moments, as they do under dense AdamW; moments of entries that freeze are dropped).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from itertools import chain

import torch
from torch import Tensor, nn
from torch.optim.adam import adam
from torch.optim.optimizer import _get_scalar_dtype

from .masks import ParamMasks

PACKING_KEY = "packing"
# Packed entries gathered per call of the AdamW arithmetic: bounds the temporary copies of
# parameters and gradients (two float32 copies of 2**24 entries = 128 MiB).
CHUNK_NUMEL = 1 << 24


@dataclass(frozen=True)
class Packing:
    """The trainable entries of one tensor: positions ``index`` along ``dim`` (rows 0, columns 1), or a bool ``mask``."""

    dim: int | None = None
    index: Tensor | None = None  # int64, sorted: the trainable rows/columns
    mask: Tensor | None = None  # bool, the tensor's shape: a general mask

    def __post_init__(self):
        if (self.index is None) == (self.mask is None) or (self.index is not None and self.dim is None):
            raise ValueError("a Packing holds either dim and index, or a mask")

    @classmethod
    def trainable_slices(cls, shape: torch.Size, dim: int, frozen: Tensor) -> "Packing":
        """The packing of a tensor of ``shape`` whose positions ``frozen`` along ``dim`` are frozen."""
        keep = torch.ones(shape[dim], dtype=torch.bool)
        keep[frozen.cpu()] = False
        return cls(dim=dim, index=torch.nonzero(keep).squeeze(1))

    def to(self, device: torch.device) -> "Packing":
        if self.index is not None:
            return Packing(self.dim, self.index.to(device))
        assert self.mask is not None  # checked in __post_init__
        return Packing(mask=self.mask.to(device))

    def gather(self, tensor: Tensor) -> Tensor:
        """A new tensor of the trainable entries of ``tensor`` (the full shape) in packed form."""
        if self.index is not None:
            return tensor.index_select(self.dim, self.index)  # type: ignore[arg-type]  # dim is set with index
        return tensor.masked_select(self.mask)  # type: ignore[arg-type]  # mask is set without index

    def scatter_(self, tensor: Tensor, packed: Tensor) -> None:
        """Write ``packed`` into the trainable entries of ``tensor``; the other entries are not touched."""
        if self.index is not None:
            tensor.index_copy_(self.dim, self.index, packed)  # type: ignore[arg-type]  # dim is set with index
        else:
            tensor.masked_scatter_(self.mask, packed)  # type: ignore[arg-type]  # mask is set without index

    def unpack(self, packed: Tensor, shape: torch.Size) -> Tensor:
        """The full-shape tensor with ``packed`` in the trainable entries and zeros elsewhere."""
        dense = packed.new_zeros(shape)
        self.scatter_(dense, packed)
        return dense

    def same_as(self, other: "Packing | None") -> bool:
        if other is None or (self.index is None) != (other.index is None):
            return False
        if self.index is not None:
            return self.dim == other.dim and _equal(self.index, other.index)
        return _equal(self.mask, other.mask)

    def to_state(self) -> dict:
        if self.index is not None:
            return {"dim": self.dim, "index": self.index.cpu()}
        assert self.mask is not None  # checked in __post_init__
        return {"mask": self.mask.cpu()}

    @classmethod
    def from_state(cls, state: dict) -> "Packing":
        return cls(dim=state["dim"], index=state["index"]) if "index" in state else cls(mask=state["mask"])


def _equal(a: Tensor | None, b: Tensor | None) -> bool:
    return a is not None and b is not None and a.shape == b.shape and torch.equal(a.cpu(), b.cpu())


def packings_for(model: nn.Module, masks: ParamMasks) -> dict[Tensor, Packing]:
    """The packing of every partly frozen parameter of ``model`` under ``masks``."""
    parameters = dict(model.named_parameters())
    packings: dict[Tensor, Packing] = {}
    for name, part in masks.slices.items():
        parameter = parameters[name]
        packings[parameter] = Packing.trainable_slices(parameter.shape, part.dim, part.index).to(parameter.device)
    return packings


def _moments(state: dict) -> list[str]:
    """The state entries shaped like the (packed) parameter: everything but the step count."""
    return [key for key, value in state.items() if key != "step" and isinstance(value, Tensor)]


class PackedAdamW(torch.optim.AdamW):
    """``torch.optim.AdamW`` (foreach or for-loop) keeping state only for the entries ``packings`` names.

    ``packings``: parameter -> ``Packing``; a parameter without one is updated densely, exactly as
    by ``torch.optim.AdamW``. Fused, capturable and differentiable AdamW are not supported.
    """

    def __init__(self, params, *args, packings: Mapping[Tensor, Packing] | None = None, **kwargs):
        super().__init__(params, *args, **kwargs)
        for group in self.param_groups:
            if group["fused"] or group["capturable"] or group["differentiable"]:
                raise ValueError("PackedAdamW supports foreach or for-loop AdamW, not fused/capturable/differentiable")
        self.packings: dict[Tensor, Packing] = {}
        self.set_packings(packings or {})

    def _params(self) -> list[Tensor]:
        return list(chain.from_iterable(group["params"] for group in self.param_groups))

    @torch.no_grad()
    def set_packings(self, packings: Mapping[Tensor, Packing]) -> None:
        """Pack by ``packings`` from now on, converting the state already held one tensor at a time."""
        params = self._params()
        members = {id(p) for p in params}
        if any(id(p) not in members for p in packings):
            raise ValueError("packings name a tensor this optimizer does not hold")
        new = {p: packing.to(p.device) for p, packing in packings.items()}
        for p in params:
            old_packing, new_packing = self.packings.get(p), new.get(p)
            if old_packing is None and new_packing is None:
                continue
            if old_packing is not None and old_packing.same_as(new_packing):
                new[p] = old_packing
                continue
            state = self.state.get(p, {})
            for key in _moments(state):
                dense = state[key] if old_packing is None else old_packing.unpack(state[key], p.shape)
                state[key] = dense if new_packing is None else new_packing.gather(dense)
        self.packings = new

    def state_bytes(self) -> int:
        """Bytes of optimizer state held (moments and step counts)."""
        return sum(v.nbytes for state in self.state.values() for v in state.values() if isinstance(v, Tensor))

    @torch.no_grad()
    def step(self, closure=None):
        """One AdamW step on the trainable entries; entries outside a tensor's packing are never written."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            batch: list[tuple[Tensor, Tensor, Tensor, Packing | None]] = []  # (param, target, grad, packing)
            packed_numel = 0
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("AdamW does not support sparse gradients")
                packing = self.packings.get(p)
                if packing is None:
                    batch.append((p, p, p.grad, None))
                else:
                    target = packing.gather(p)
                    batch.append((p, target, packing.gather(p.grad), packing))
                    packed_numel += target.numel()
                if packed_numel >= CHUNK_NUMEL:
                    self._update(group, batch)
                    batch, packed_numel = [], 0
            if batch:
                self._update(group, batch)
        return loss

    def _update(self, group: dict, batch: list[tuple[Tensor, Tensor, Tensor, Packing | None]]) -> None:
        """torch's AdamW arithmetic on ``batch``, then the packed entries written back."""
        exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps = [], [], [], []
        for p, target, _, _ in batch:
            state = self.state[p]
            if len(state) == 0:  # lazy initialisation, as torch.optim.Adam does it
                state["step"] = torch.tensor(0.0, dtype=_get_scalar_dtype(), device="cpu")
                state["exp_avg"] = torch.zeros_like(target, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(target, memory_format=torch.preserve_format)
                if group["amsgrad"]:
                    state["max_exp_avg_sq"] = torch.zeros_like(target, memory_format=torch.preserve_format)
            exp_avgs.append(state["exp_avg"])
            exp_avg_sqs.append(state["exp_avg_sq"])
            if group["amsgrad"]:
                max_exp_avg_sqs.append(state["max_exp_avg_sq"])
            steps.append(state["step"])
        beta1, beta2 = group["betas"]
        adam(
            [target for _, target, _, _ in batch],
            [grad for _, _, grad, _ in batch],
            exp_avgs,
            exp_avg_sqs,
            max_exp_avg_sqs,
            steps,
            amsgrad=group["amsgrad"],
            has_complex=any(torch.is_complex(p) for p, _, _, _ in batch),
            beta1=beta1,
            beta2=beta2,
            lr=group["lr"],
            weight_decay=group["weight_decay"],
            eps=group["eps"],
            maximize=group["maximize"],
            foreach=group["foreach"],
            capturable=False,
            differentiable=False,
            fused=None,
            grad_scale=None,
            found_inf=None,
            decoupled_weight_decay=group["decoupled_weight_decay"],
        )
        for p, target, _, packing in batch:
            if packing is not None:
                packing.scatter_(p, target)

    def state_dict(self) -> dict:
        state = super().state_dict()
        number = {id(p): i for i, p in enumerate(self._params())}  # torch's numbering of the parameters
        state[PACKING_KEY] = {number[id(p)]: packing.to_state() for p, packing in self.packings.items()}
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        """Load a state, packed or dense, and adopt the packing it was saved with (``set_packings`` converts)."""
        state_dict = dict(state_dict)
        saved = state_dict.pop(PACKING_KEY, {})
        super().load_state_dict(state_dict)
        params = self._params()
        self.packings = {params[int(i)]: Packing.from_state(s).to(params[int(i)].device) for i, s in saved.items()}


def unpacked_state_dict(state_dict: dict, params: list[Tensor]) -> dict:
    """A PackedAdamW state dict as a dense ``torch.optim.AdamW`` one (``params`` in the optimizer's order)."""
    saved = state_dict.get(PACKING_KEY)
    if not saved:
        return {key: value for key, value in state_dict.items() if key != PACKING_KEY}
    states = {}
    for i, state in state_dict["state"].items():
        packing = Packing.from_state(saved[i]) if i in saved else None
        if packing is not None:
            shape = params[int(i)].shape
            state = {k: packing.unpack(v, shape) if k in _moments(state) else v for k, v in state.items()}
        states[i] = state
    return {"state": states, "param_groups": state_dict["param_groups"]}
