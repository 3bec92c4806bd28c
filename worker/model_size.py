"""Refuse a model before loading it when its config declares more than this deployment can hold.

A ``config.json`` can declare any size: loading a "model" of 10^12 parameters runs until the OS
kills the worker (and then the job kills the next worker, see the attempt cap). The config alone
tells the parameter count closely enough: embeddings, attention and MLP matrices per layer.
The estimate errs high (a gated MLP is assumed), so a model refused here is really too big.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

from service.model_policy import CheckedSource

log = logging.getLogger(__name__)

BYTES_PER_PARAMETER = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8}
DEFAULT_MEMORY_FRACTION = 0.8  # of physical memory, when the deployment sets no max_model_bytes


class ModelTooLarge(ValueError):
    """A ValueError, so the job fails at once with this message and is not retried."""


@dataclass(frozen=True)
class SizeEstimate:
    parameters: int
    layers: int
    hidden: int

    def bytes(self, dtype: str) -> int:
        return self.parameters * BYTES_PER_PARAMETER.get(dtype, 4)


def _first(config: Any, *names: str) -> int | None:
    for name in names:
        value = getattr(config, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def estimate(config: Any) -> SizeEstimate | None:
    """Parameters of a decoder-only LM described by a transformers config; None when the fields are missing."""
    if hasattr(config, "get_text_config"):
        config = config.get_text_config()
    hidden = _first(config, "hidden_size", "n_embd", "d_model")
    layers = _first(config, "num_hidden_layers", "n_layer", "num_layers")
    vocab = _first(config, "vocab_size")
    if hidden is None or layers is None or vocab is None:
        return None
    heads = _first(config, "num_attention_heads", "n_head") or 1
    head_dim = _first(config, "head_dim") or max(hidden // heads, 1)
    kv_heads = _first(config, "num_key_value_heads", "num_kv_heads") or heads
    experts = _first(config, "num_local_experts", "num_experts", "n_routed_experts") or 1
    intermediate = (
        (_first(config, "moe_intermediate_size") if experts > 1 else None)
        or _first(config, "intermediate_size", "n_inner", "ffn_dim")
        or 4 * hidden
    )
    attention = 2 * hidden * heads * head_dim + 2 * hidden * kv_heads * head_dim
    mlp = 3 * hidden * intermediate * experts  # gate, up, down
    embeddings = vocab * hidden * (1 if getattr(config, "tie_word_embeddings", True) else 2)
    return SizeEstimate(parameters=embeddings + layers * (attention + mlp + 2 * hidden), layers=layers, hidden=hidden)


def memory_limit(settings: Any) -> int:
    """The deployment's ``max_model_bytes``, or a share of this machine's physical memory when unset."""
    if settings.max_model_bytes is not None:
        return int(settings.max_model_bytes)
    return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") * DEFAULT_MEMORY_FRACTION)


def _load_config(checked: CheckedSource, *, trust_remote_code: bool) -> Any | None:
    from transformers import AutoConfig

    path, _, revision = checked.source.partition("@") if checked.kind == "hub" else (checked.source, "", "")
    try:
        return AutoConfig.from_pretrained(path, revision=revision or None, trust_remote_code=trust_remote_code)
    except Exception as exc:  # noqa: BLE001 - no config, no estimate: the loader reports the real error
        log.info("no size estimate for %s: %s", checked.source, exc)
        return None


def check_model_size(checked: CheckedSource, settings: Any, *, dtype: str) -> SizeEstimate | None:
    """Raise ``ModelTooLarge`` (naming the estimate and the limit) if the model's config is over the limit."""
    if checked.kind not in ("hub", "local"):  # builtins are small; a GGUF file's size is its own bound
        return None
    config = _load_config(checked, trust_remote_code=settings.allow_trust_remote_code)
    found = estimate(config) if config is not None else None
    if found is None:
        return None
    needed, limit = found.bytes(dtype), memory_limit(settings)
    if needed > limit:
        raise ModelTooLarge(
            f"model {checked.source!r} is refused before loading: its config declares about "
            f"{found.parameters / 1e9:,.1f} B parameters ({found.layers} layers, hidden size {found.hidden}), "
            f"about {needed / 2**30:,.1f} GiB in {dtype}, above this deployment's limit of "
            f"{limit / 2**30:,.1f} GiB (max_model_bytes)"
        )
    return found
