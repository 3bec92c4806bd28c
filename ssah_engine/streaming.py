"""The layer-streamed audit: one decoder layer in memory at a time, read from safetensors shards.

The authors' code works the same way: capture the first layer's inputs, run every calibration
batch through layer i, then i + 1. Here the model is a skeleton on the ``meta`` device; the
embeddings and final norm are loaded once, and each decoder layer is materialised from the
checkpoint, run on every batch of both calibration sets (the scoring hooks collect its unit
statistics), scored and released before the next. The layers' call arguments (attention masks,
rotary embeddings, position ids) come from the model's own forward, recorded once per batch.
"""

from __future__ import annotations

import json
import logging
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
from .loading import LoadedModel, LoadOptions, ModelLoadError, pick_device_and_dtype, resolve_source
from .scoring.scores import DatasetScores, activation_scores, hook_unit_inputs, new_unit_stats
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


def _release(module: nn.Module) -> None:
    from accelerate.utils import set_module_tensor_to_device

    for name, _ in list(module.named_parameters()):
        set_module_tensor_to_device(module, name, "meta")


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


def _layer_calls(backbone: nn.Module, layers: nn.ModuleList, batch: Batch) -> list[tuple]:
    """``(layer-0 input, args, kwargs)`` per layer for ``batch``, from the backbone's own forward."""
    record: list = []
    real = list(layers)
    for index, layer in enumerate(real):
        layers[index] = _Recorder(index, index == len(real) - 1, record, layer)
    try:
        backbone(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False)
    except _Captured:
        pass
    finally:
        for index, layer in enumerate(real):
            layers[index] = layer
    if len(record) != len(real):
        raise RuntimeError(f"the backbone called {len(record)} of {len(real)} decoder layers")
    return record


def stream_scores(
    streamed: StreamedModel,
    layout: ModelLayout,
    batch_sets: dict[str, list[Batch]],
    *,
    method: str = "wifv",
    estimator: str = "pooled",
    progress: Progress | None = None,
) -> dict[str, DatasetScores]:
    """Score every unit on each set of ``batch_sets``, holding one decoder layer in memory at a time.

    The same statistics and per-layer scores as ``score_dataset`` on the whole model (WIFV and
    Wanda; SNIP needs a backward pass through every layer at once).
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
    with torch.inference_mode():
        _materialise(streamed, backbone, backbone_prefix, skip="layers.")  # embeddings, final norm, rotary
        hidden: dict[str, list[torch.Tensor]] = {}
        calls: dict[str, list[list[tuple]]] = {}
        for name, batches in batch_sets.items():
            recorded = [_layer_calls(backbone, layers, batch.to(device)) for batch in batches]
            hidden[name] = [record[0][0].to("cpu") for record in recorded]  # kept on the host
            calls[name] = [[(args, kwargs) for _, args, kwargs in record] for record in recorded]
        # The layers' inputs are recorded: the embeddings are done.
        _release(typing.cast(nn.Module, getattr(model, "get_input_embeddings")()))
        for index, projections in enumerate(layout.layers):
            layer = layers[index]
            _materialise(streamed, layer, f"{layers_path}.{index}.")
            try:
                for name, batches in batch_sets.items():
                    heads, neurons = stats[name]
                    with hook_unit_inputs([projections], [heads[index]], [neurons[index]], estimator) as select:
                        for number, batch in enumerate(batches):
                            select(batch.response_mask.to(device))
                            args, kwargs = calls[name][number][index]
                            output = layer(hidden[name][number].to(device), *args, **kwargs)
                            output = output[0] if isinstance(output, tuple) else output
                            hidden[name][number] = output.to("cpu")
                    per_layer[name].append(activation_scores(method, projections, heads[index], neurons[index], space))
            finally:
                _release(layer)
            logger.debug("layer %d of %d scored", index + 1, layout.num_layers)
            if progress:
                progress(index + 1, layout.num_layers)
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
