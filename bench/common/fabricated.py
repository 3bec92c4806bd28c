"""Random-weight models of a named shape and fabricated unit maps, for the fine-tuning benches.

No download: the weights come from a seed, the tokenizer is the engine's byte-level test tokenizer
(a token per character), and the unit map is classified by the engine's own ``classify`` from
random scores with the paper's cuts (RU 10 %, SCU 1 %, UCU 10 % of unit parameters, CU the rest),
so the class shares are the paper's by parameter weight while which units they are is random.
"""

from __future__ import annotations

import torch
from transformers import AutoConfig, AutoModelForCausalLM

from ssah_engine.architectures import describe
from ssah_engine.classes import Cuts
from ssah_engine.classify import classify
from ssah_engine.testing import tiny_tokenizer
from ssah_engine.unitmap import UnitMap
from ssah_engine.units import UnitSpace

# SmolLM2-135M's layer shape (hidden 576, 9 query heads over 3 KV groups, 1,536 neurons); the
# vocabulary is the byte-level tokenizer's, and the layer count is the bench's choice.
SHAPES: dict[str, dict[str, float | int]] = {
    "smollm2": dict(
        hidden_size=576,
        intermediate_size=1536,
        num_attention_heads=9,
        num_key_value_heads=3,
        head_dim=64,
        max_position_embeddings=2048,
        rope_theta=100000.0,
        rms_norm_eps=1e-5,
    ),
    "tiny": dict(
        hidden_size=32,
        intermediate_size=48,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        max_position_embeddings=256,
    ),
}


def random_model(shape: str, layers: int, seed: int = 0):
    """``(model, tokenizer)``: a float32 llama of ``SHAPES[shape]`` with ``layers`` decoder layers."""
    tokenizer = tiny_tokenizer()
    config = AutoConfig.for_model(
        "llama",
        **SHAPES[shape],
        num_hidden_layers=layers,
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.eval()
    return model, tokenizer


def random_unit_map(model, seed: int = 0, cuts: Cuts | None = None) -> UnitMap:
    """A unit map with random scores classified at ``cuts`` (default: the paper's) by parameter weight."""
    space = UnitSpace.from_layout(describe(model))
    generator = torch.Generator().manual_seed(seed)
    z_safety = torch.randn(space.size, generator=generator, dtype=torch.float64)
    z_utility = torch.randn(space.size, generator=generator, dtype=torch.float64)
    labels = classify(z_safety, z_utility, space.param_weights(), cuts or Cuts())
    return UnitMap(
        space=space,
        labels=labels,
        z_safety=z_safety,
        z_utility=z_utility,
        head_input_mean=torch.zeros(space.num_layers, space.num_heads * space.head_dim),
        neuron_input_mean=torch.zeros(space.num_layers, space.intermediate_size),
    )


def class_shares(unit_map: UnitMap) -> dict[str, float]:
    """Each class's fraction of unit parameters."""
    weights = unit_map.space.param_weights().double()
    total = float(weights.sum())
    return {name: float(weights[unit_map.mask(name)].sum()) / total for name in ("SCU", "UCU", "CU", "RU")}
