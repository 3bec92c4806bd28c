import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from ssah_engine.architectures import UnsupportedArchitectureError, describe
from ssah_engine.testing import tiny_model
from ssah_engine.units import UnitSpace

from .conftest import FAMILIES


@pytest.mark.parametrize("family", FAMILIES)
def test_layout_of_every_family(family):
    model, _ = tiny_model(family)
    layout = describe(model)
    assert layout.family == family
    assert (layout.num_layers, layout.num_heads, layout.num_kv_heads, layout.head_dim) == (2, 4, 2, 8)
    assert layout.group_size == 2
    for layer in layout.layers:
        q_rows = layout.num_heads * layout.head_dim
        kv_rows = layout.num_kv_heads * layout.head_dim
        # Each slice lies inside its (possibly fused) weight.
        assert layer.q.offset + q_rows <= layer.q.linear.weight.shape[0]
        assert layer.v.offset + kv_rows == layer.v.linear.weight.shape[0]
        assert layer.up.offset + layout.intermediate_size == layer.up.linear.weight.shape[0]
        assert layer.o.weight.shape[1] == q_rows
        assert layer.down.weight.shape[1] == layout.intermediate_size
    fused = family == "phi3"
    first = layout.layers[0]
    assert (first.q.linear is first.k.linear) == fused
    assert (first.gate.linear is first.up.linear) == fused
    if fused:
        assert (first.k.offset, first.v.offset, first.up.offset) == (32, 48, 48)


def test_unit_space_weights_follow_the_method_page():
    # Llama-2-7B: 32 heads of 128, 32 KV heads, hidden 4096 -> a head weighs 512/3 neurons.
    space = UnitSpace(
        num_layers=32, num_heads=32, num_kv_heads=32, head_dim=128, hidden_size=4096, intermediate_size=11008
    )
    assert space.head_weight / space.neuron_weight == pytest.approx(512 / 3)
    # GQA: a head counts 1/group of its KV group's rows.
    gqa = UnitSpace(num_layers=1, num_heads=8, num_kv_heads=2, head_dim=4, hidden_size=32, intermediate_size=10)
    assert gqa.head_weight == 2 * 4 * 32 + 2 * 4 * 32 / 4
    weights = gqa.param_weights()
    assert weights.shape == (18,) and weights[-1] == 96
    heads, neurons = gqa.split(torch.arange(18))
    assert heads.shape == (1, 8) and neurons.shape == (1, 10) and neurons[0, 0] == 8
    assert gqa.describe_unit(9) == "model.layers.0.mlp.down_proj channel 1"


def test_unsupported_family_names_the_supported_ones():
    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50))
    with pytest.raises(UnsupportedArchitectureError, match="llama, mistral, qwen2, qwen3, gemma2, gemma3, phi3"):
        describe(model)
