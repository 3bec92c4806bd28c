"""The layer-streamed audit: one decoder layer in memory at a time, read from safetensors shards.

The authors' code works the same way: capture the first layer's inputs, run every calibration
batch through layer i, then i + 1. Here the model is a skeleton on the ``meta`` device; the
embeddings and final norm are loaded once, and each decoder layer is materialised from the
checkpoint, run on every batch of both calibration sets (the scoring hooks collect its unit
statistics), scored and released before the next. The layers' call arguments (attention masks,
rotary embeddings, position ids) come from the model's own forward, recorded once per batch.
"""

from __future__ import annotations

import copy
import ctypes
import functools
import json
import logging
import sys
import typing
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .architectures import ModelLayout
from .encoding import Batch
from .kv_cache import cache_argument
from .loading import LoadedModel, LoadOptions, ModelLoadError, pick_device_and_dtype, resolve_source
from .scoring.scores import (
    DatasetScores,
    activation_scores,
    hook_unit_inputs,
    new_unit_stats,
    shared_prefix_length,
)
from .units import UnitSpace

logger = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


@dataclass
class StreamedModel(LoadedModel):
    """A model skeleton on the ``meta`` device whose decoder layers stay in the checkpoint until used."""

    checkpoint: Path = Path()
    compute_device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    dtype: torch.dtype = torch.float32
    tensor_files: dict[str, Path] = field(default_factory=dict)  # tensor name -> the shard holding it

    @property
    def device(self) -> torch.device:
        return self.compute_device


def tensor_files(directory: Path) -> dict[str, Path]:
    """Which safetensors shard of a save_pretrained directory holds each tensor."""
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        return {name: directory / shard for name, shard in weight_map.items()}
    single = directory / "model.safetensors"
    if single.is_file():
        from safetensors import safe_open

        with safe_open(str(single), framework="pt") as handle:
            return dict.fromkeys(handle.keys(), single)
    raise ModelLoadError(
        f"{directory} holds no safetensors weights (model.safetensors or model.safetensors.index.json); "
        "the layer-streamed audit reads a directory written by save_pretrained"
    )


def load_streamed(source: str, options: LoadOptions | None = None) -> StreamedModel:
    """A skeleton of ``source`` (a local directory of safetensors, or a builtin/GGUF converted to one)."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    options = options or LoadOptions()
    if options.placement.active:
        raise ModelLoadError("the layer-streamed audit holds one layer on one device: it takes no device map")
    device, dtype = pick_device_and_dtype(options)
    resolved = source if source.startswith("builtin:tiny-") else resolve_source(source, options)[0]
    directory = Path(resolved).expanduser()
    if not directory.is_dir():
        raise ModelLoadError(
            f"the layer-streamed audit reads weights from a local directory of safetensors shards; "
            f"{source!r} is not one (download it, or save it with save_pretrained, first)"
        )
    files = tensor_files(directory)
    kwargs: dict[str, Any] = dict(trust_remote_code=options.trust_remote_code)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(directory), **kwargs)
        config = AutoConfig.from_pretrained(str(directory), **kwargs)
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"could not load model {source!r}: {error}") from error
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    with init_empty_weights():  # parameters on meta; buffers (rotary frequencies) real
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, **kwargs)
    model.eval()
    return StreamedModel(model, tokenizer, source, str(directory), directory, device, dtype, files)


def _materialise(streamed: StreamedModel, module: nn.Module, prefix: str, skip: str | None = None) -> None:
    """Load ``module``'s parameters (full names ``prefix + name``) from their shards onto the device."""
    from accelerate.utils import set_module_tensor_to_device
    from safetensors import safe_open

    by_file: dict[Path, list[str]] = defaultdict(list)
    for name, _ in module.named_parameters():
        if skip and name.startswith(skip):
            continue
        key = prefix + name
        if key not in streamed.tensor_files:
            raise ModelLoadError(f"{streamed.checkpoint} has no tensor {key!r}")
        by_file[streamed.tensor_files[key]].append(name)
    for path, names in by_file.items():
        with safe_open(str(path), framework="pt") as handle:
            for name in names:
                value = handle.get_tensor(prefix + name)
                set_module_tensor_to_device(module, name, streamed.device, value=value, dtype=streamed.dtype)
    for name, buffer in module.named_buffers():
        if buffer.device.type != "meta" and buffer.device != streamed.device and not (skip and name.startswith(skip)):
            set_module_tensor_to_device(module, name, streamed.device)


def _release(module: nn.Module, skip: str | None = None) -> None:
    """Send ``module``'s parameters (but those under ``skip``) back to ``meta``."""
    from accelerate.utils import set_module_tensor_to_device

    for name, _ in list(module.named_parameters()):
        if not (skip and name.startswith(skip)):
            set_module_tensor_to_device(module, name, "meta")


def _return_freed_memory() -> None:
    """Hand the heap pages freed so far back to the OS (glibc's ``malloc_trim``; elsewhere a no-op).

    Every layer frees what the one before allocated, but glibc keeps freed pages of its heaps and
    the heaps fragment layer after layer: without this the process grew by about a layer's weights
    per layer (SmolLM2: from 300 to 600 MiB over its 30 layers).
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None).malloc_trim  # glibc; musl has none
    except (OSError, AttributeError):
        return None


class _Captured(Exception):
    """Raised by the last recorder: the backbone's forward has handed every layer its arguments."""


class _Recorder(nn.Module):
    """Stands in for a decoder layer: records the arguments the backbone calls it with."""

    def __init__(self, index: int, last: bool, record: list, real: nn.Module):
        super().__init__()
        self.index, self.last, self.record = index, last, record
        if hasattr(real, "attention_type"):  # some backbones pick the layer's mask by it
            self.attention_type = real.attention_type

    def forward(self, hidden_states, *args, **kwargs):
        self.record.append((hidden_states if self.index == 0 else None, args, kwargs))
        if self.last:
            raise _Captured
        return hidden_states


def _layer_calls(backbone: nn.Module, layers: nn.ModuleList, **inputs) -> list[tuple]:
    """``(layer-0 input, args, kwargs)`` per layer for ``backbone(**inputs)``, from the backbone's own forward."""
    record: list = []
    real = list(layers)
    for index, layer in enumerate(real):
        layers[index] = _Recorder(index, index == len(real) - 1, record, layer)
    try:
        backbone(**inputs)
    except _Captured:
        pass
    finally:
        for index, layer in enumerate(real):
            layers[index] = layer
    if len(record) != len(real):
        raise RuntimeError(f"the backbone called {len(record)} of {len(real)} decoder layers")
    return record


@dataclass
class _Pass:
    """One forward pass replayed layer by layer: the current layer's input and each layer's arguments."""

    hidden: torch.Tensor  # kept on the host between layers
    calls: list[tuple[tuple, dict] | None]  # per layer; dropped once used
    response_mask: torch.Tensor  # [batch, seq] of this pass's tokens: the ones scored
    cache: Any = None  # the key/value cache its layers are called with (a shared prefix only)

    def run(self, layer: nn.Module, index: int, device: torch.device) -> None:
        args, kwargs = typing.cast(tuple, self.calls[index])
        self.calls[index] = None
        output = layer(self.hidden.to(device), *args, **kwargs)
        output = output[0] if isinstance(output, tuple) else output
        self.hidden = output.to("cpu")


@dataclass
class _CalibrationSet:
    """A calibration set's batches, each after the prefix they all share (run once per layer), if any."""

    batches: list[_Pass]
    prefix: _Pass | None = None
    blank: list = field(default_factory=list)  # an empty cache layer per decoder layer


def _calls(record: list[tuple]) -> list[tuple[tuple, dict] | None]:
    return [(args, kwargs) for _, args, kwargs in record]


def _prefix_cache(record: list[tuple], num_layers: int):
    """The key/value cache every layer was handed in ``record``, if it is one this code can fill layer by layer."""
    from transformers.cache_utils import Cache

    found = {id(value): value for _, _, kwargs in record for value in kwargs.values() if isinstance(value, Cache)}
    cache = next(iter(found.values())) if len(found) == 1 else None
    layers = getattr(cache, "layers", None)
    if not isinstance(layers, list) or len(layers) != num_layers or any(layer.get_seq_length() for layer in layers):
        return None
    return cache


def _record_set(
    backbone: nn.Module, layers: nn.ModuleList, batches: list[Batch], device: torch.device, share_prefix: bool
) -> _CalibrationSet:
    """Each batch's layer-0 input and layer arguments; the prefix every pair shares as a pass of its own.

    As in ``score_dataset``: the shared prefix (prompt tokens, never scored) runs once, and each
    batch runs only its own tokens against a copy of the prefix's keys and values. The arguments of
    those passes are recorded with a cache that holds placeholder keys of the prefix's length (the
    masks and positions depend only on it); the real keys go in, layer by layer, in ``_run_layer``.
    """
    length = shared_prefix_length(batches) if share_prefix else 0
    prefix, blank = None, []
    if length:
        ids = batches[0].input_ids[:1, :length].to(device)
        record = _layer_calls(backbone, layers, input_ids=ids, use_cache=True)
        cache = _prefix_cache(record, len(layers))
        if cache is not None:
            blank = copy.deepcopy(cache.layers)
            prefix = _Pass(record[0][0].to("cpu"), _calls(record), torch.zeros_like(ids, dtype=torch.bool), cache)
    length = length if prefix is not None else 0
    passes = []
    for batch in batches:
        batch = batch.to(device)
        inputs: dict[str, Any] = dict(input_ids=batch.input_ids[:, length:], attention_mask=batch.attention_mask)
        cache = None
        if prefix is not None:
            cache = copy.deepcopy(prefix.cache)
            placeholder = batch.input_ids.new_zeros((), dtype=prefix.hidden.dtype).expand(1, 1, length, 1)
            for layer in cache.layers:
                layer.update(placeholder, placeholder)
            inputs |= {"use_cache": True, cache_argument(backbone): cache}
        else:
            inputs["use_cache"] = False
        record = _layer_calls(backbone, layers, **inputs)
        if cache is not None:
            cache.layers[:] = copy.deepcopy(blank)  # the placeholders have served
        passes.append(_Pass(record[0][0].to("cpu"), _calls(record), batch.response_mask[:, length:], cache))
    return _CalibrationSet(passes, prefix, blank)


def _run_layer(layer: nn.Module, index: int, calibration: _CalibrationSet, select, device: torch.device) -> None:
    """Run every batch of ``calibration`` through decoder layer ``index`` (the scoring hooks are set)."""
    prefix = calibration.prefix
    if prefix is not None:
        select(prefix.response_mask)
        prefix.run(layer, index, device)  # fills the prefix cache's layer ``index``
    for batch in calibration.batches:
        if prefix is not None:
            own = copy.deepcopy(prefix.cache.layers[index])
            own.batch_repeat_interleave(batch.hidden.shape[0])
            batch.cache.layers[index] = own
        select(batch.response_mask)
        batch.run(layer, index, device)
        if prefix is not None:
            batch.cache.layers[index] = calibration.blank[index]  # this layer's keys and values are done
    if prefix is not None:
        prefix.cache.layers[index] = calibration.blank[index]


def stream_scores(
    streamed: StreamedModel,
    layout: ModelLayout,
    batch_sets: dict[str, list[Batch]],
    *,
    method: str = "wifv",
    estimator: str = "pooled",
    progress: Progress | None = None,
    share_prefix: bool = True,
) -> dict[str, DatasetScores]:
    """Score every unit on each set of ``batch_sets``, holding one decoder layer in memory at a time.

    The same statistics and per-layer scores as ``score_dataset`` on the whole model (WIFV and
    Wanda; SNIP needs a backward pass through every layer at once), the shared prefix run once
    per layer as there (``share_prefix``).
    """
    if method == "snip":
        raise ValueError("the layer-streamed audit scores wifv or wanda; snip needs the whole model")
    model, device = streamed.model, streamed.device
    space = UnitSpace.from_layout(layout)
    layers_path = layout.layers_path
    backbone = model.get_submodule(layers_path.rsplit(".layers", 1)[0])
    layers = _module_list(model.get_submodule(layers_path))
    backbone_prefix = layers_path.rsplit(".layers", 1)[0] + "."
    stats = {name: new_unit_stats(layout.layers, device, estimator) for name in batch_sets}
    per_layer: dict[str, list] = {name: [] for name in batch_sets}
    try:
        with torch.inference_mode():
            _materialise(streamed, backbone, backbone_prefix, skip="layers.")  # embeddings, final norm, rotary
            calibration = {
                name: _record_set(backbone, layers, batches, device, share_prefix)
                for name, batches in batch_sets.items()
            }
            # Every layer's inputs and arguments are recorded: the embeddings and the final norm are done.
            _release(backbone, skip="layers.")
            _return_freed_memory()
            for index, projections in enumerate(layout.layers):
                layer = layers[index]
                _materialise(streamed, layer, f"{layers_path}.{index}.")
                try:
                    for name, passes in calibration.items():
                        heads, neurons = stats[name]
                        with hook_unit_inputs([projections], [heads[index]], [neurons[index]], estimator) as select:
                            _run_layer(layer, index, passes, select, device)
                        per_layer[name].append(
                            activation_scores(method, projections, heads[index], neurons[index], space)
                        )
                finally:
                    _release(layer)
                _return_freed_memory()
                logger.debug("layer %d of %d scored", index + 1, layout.num_layers)
                if progress:
                    progress(index + 1, layout.num_layers)
    finally:
        _release(backbone)
    results = {}
    for name, (heads, neurons) in stats.items():
        if heads[0].count == 0:
            raise ValueError(f"the {name} calibration set has no response tokens to score")
        results[name] = DatasetScores(
            scores=space.join(
                torch.stack([h for h, _ in per_layer[name]]), torch.stack([n for _, n in per_layer[name]])
            ).cpu(),
            head_input_mean=torch.stack([item.mean for item in heads]).cpu(),
            neuron_input_mean=torch.stack([item.mean for item in neurons]).cpu(),
            tokens=heads[0].count,
        )
    return results


def _module_list(module: nn.Module) -> nn.ModuleList:
    """``module`` as the ModuleList it must be (the layers are swapped in and out by index)."""
    if not isinstance(module, nn.ModuleList):
        raise TypeError(f"expected the decoder layers as a ModuleList, got {type(module).__name__}")
    return module
