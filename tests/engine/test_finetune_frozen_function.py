"""Frozen means frozen: after training, a frozen head's output and a frozen neuron's activation are
bit-identical on a fixed layer input, under grouped-query attention and with Gemma's extra norms.

The tiny models have 4 query heads in 2 KV groups. Layer 0 freezes heads 0, 1 and 3 (group 1 is
mixed: head 2 trains) and 12 neurons; layer 1 freezes every unit. Each layer of the trained and
the base model gets the same input (the base model's hidden states, fed into the pre-attention and
the pre-MLP norm), and the o_proj input columns of the frozen heads, the down_proj input columns
of the frozen neurons and, in layer 1, the attention and MLP block outputs are compared.
"""

import copy

import pytest
import torch

from ssah_engine.architectures import describe
from ssah_engine.finetune import FinetuneConfig, run_finetune
from ssah_engine.units import UnitSpace

from .test_finetune import TRAIN, loaded_model, sft_set

# Per family: (pre-attention norm, pre-MLP norm, module whose output is the attention block's
# contribution to the residual, and the MLP block's).
BLOCKS = {
    "qwen2": ("input_layernorm", "post_attention_layernorm", "self_attn.o_proj", "mlp.down_proj"),
    "gemma3": (
        "input_layernorm",
        "pre_feedforward_layernorm",
        "post_attention_layernorm",
        "post_feedforward_layernorm",
    ),
}
FROZEN_NEURONS = 12


def frozen_units(space: UnitSpace) -> torch.Tensor:
    units = torch.zeros(space.size, dtype=torch.bool)
    heads, neurons = space.split(units)
    heads[0] = torch.tensor([True, True, False, True])
    heads[1] = True
    neurons[0, :FROZEN_NEURONS] = True
    neurons[1] = True
    return units


def run_layers(model, family: str, ids: torch.Tensor, inputs: dict | None = None) -> dict:
    """Record each layer's norm inputs, o_proj/down_proj inputs and block outputs; with ``inputs``,
    feed those norm inputs instead of the model's own."""
    attn_norm, mlp_norm, attn_out, mlp_out = BLOCKS[family]
    seen, handles = {}, []

    def pre(key, replace):
        def hook(module, args):
            if replace and inputs is not None:
                return (inputs[key],) + tuple(args[1:])
            seen[key] = args[0].detach().clone()

        return hook

    def post(key):
        def hook(module, args, output):
            seen[key] = output.detach().clone()

        return hook

    for index, layer in enumerate(model.model.layers):
        handles += [
            layer.get_submodule(attn_norm).register_forward_pre_hook(pre(("attn_in", index), True)),
            layer.get_submodule(mlp_norm).register_forward_pre_hook(pre(("mlp_in", index), True)),
            layer.self_attn.o_proj.register_forward_pre_hook(pre(("heads", index), False)),
            layer.mlp.down_proj.register_forward_pre_hook(pre(("neurons", index), False)),
            layer.get_submodule(attn_out).register_forward_hook(post(("attn_out", index))),
            layer.get_submodule(mlp_out).register_forward_hook(post(("mlp_out", index))),
        ]
    try:
        with torch.no_grad():
            model(input_ids=ids, use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    return seen


def compare(family: str, rule: str, tmp_path) -> dict[str, bool]:
    """Train with ``rule``; for each frozen piece, whether it stayed bit-identical (and the trainable head)."""
    loaded = loaded_model(family)
    base = copy.deepcopy(loaded.model)
    layout = describe(loaded.model)
    space = UnitSpace.from_layout(layout)
    config = FinetuneConfig(**TRAIN, freeze_rule=rule)
    run_finetune(loaded, sft_set(), config, None, tmp_path, frozen_units=frozen_units(space))

    ids = loaded.tokenizer("Name three colours, then count to five.", return_tensors="pt")["input_ids"]
    before = run_layers(base, family, ids)
    after = run_layers(loaded.model, family, ids, inputs=before)
    hd = layout.head_dim
    head = lambda seen, layer, h: seen[("heads", layer)][..., h * hd : (h + 1) * hd]
    same = {}
    for layer, heads in ((0, (0, 1, 3)), (1, (0, 1, 2, 3))):
        for h in heads:
            same[f"layer {layer} head {h}"] = torch.equal(head(before, layer, h), head(after, layer, h))
    for layer, count in ((0, FROZEN_NEURONS), (1, layout.intermediate_size)):
        columns = slice(0, count)
        same[f"layer {layer} neurons"] = torch.equal(
            before[("neurons", layer)][..., columns], after[("neurons", layer)][..., columns]
        )
    for block in ("attn_out", "mlp_out"):
        same[f"layer 1 {block}"] = torch.equal(before[(block, 1)], after[(block, 1)])
    same["trainable: layer 0 head 2"] = torch.equal(head(before, 0, 2), head(after, 0, 2))
    return same


@pytest.mark.parametrize("family", list(BLOCKS))
def test_frozen_heads_and_neurons_compute_the_same_after_training(family, tmp_path):
    same = compare(family, "function", tmp_path)
    assert not same.pop("trainable: layer 0 head 2")  # training did move what it may move
    assert all(same.values()), [piece for piece, kept in same.items() if not kept]


@pytest.mark.parametrize("family", list(BLOCKS))
def test_the_rows_rule_lets_frozen_units_change(family, tmp_path):
    """What the default fixes: with k/v rows of mixed groups and the norms trained, "frozen" units move."""
    same = compare(family, "rows", tmp_path)
    moved = [piece for piece, kept in same.items() if not kept]
    assert "layer 0 head 3" in moved  # its group's k/v rows trained (head 2 is not frozen)
    assert "layer 0 neurons" in moved and "layer 1 attn_out" in moved  # pre-MLP / pre- or post-attention norms
