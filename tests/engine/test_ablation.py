import pytest
import torch

from ssah_engine.ablation import ablate
from ssah_engine.architectures import describe
from ssah_engine.audit import AuditConfig, run_audit
from ssah_engine.loading import LoadedModel
from ssah_engine.testing import tiny_model


@pytest.fixture(params=["llama", "phi3"])
def audited(request, safety_set, utility_set):
    model, tokenizer = tiny_model(request.param)
    loaded = LoadedModel(model, tokenizer, request.param, request.param)
    return loaded, run_audit(loaded, safety_set, utility_set, AuditConfig(samples=12))


def _reference_means(unit_map, compensation):
    """The input means each compensation stands for, written out from the unit map's two passes."""
    safety = (unit_map.head_input_mean, unit_map.neuron_input_mean)
    utility = (unit_map.utility_head_input_mean, unit_map.utility_neuron_input_mean)
    if compensation == "safety":
        return safety
    if compensation == "utility":
        return utility
    if compensation == "none":
        return tuple(torch.zeros_like(mean) for mean in safety)
    n_safety, n_utility = (unit_map.data[name]["response_tokens"] for name in ("safety", "utility"))
    return tuple((n_safety * s + n_utility * u) / (n_safety + n_utility) for s, u in zip(safety, utility))


def _replace_with_mean(model, unit_map, units, compensation="safety"):
    """Reference ablation: feed each removed channel its mean input (zero for none) instead of its activation."""
    layout = describe(model)
    heads, neurons = unit_map.space.split(units)
    head_means, neuron_means = _reference_means(unit_map, compensation)
    handles = []
    for layer in layout.layers:
        head_channels = heads[layer.index].repeat_interleave(layout.head_dim)
        for module, removed, mean in (
            (layer.o, head_channels, head_means[layer.index]),
            (layer.down, neurons[layer.index], neuron_means[layer.index]),
        ):

            def hook(_m, args, removed=removed, mean=mean):
                return (torch.where(removed, mean, args[0]),)

            handles.append(module.register_forward_pre_hook(hook))
    return handles


@pytest.mark.parametrize("compensation", ["safety", "utility", "pooled", "none"])
def test_ablation_removes_units_and_restores_every_bit(audited, compensation):
    loaded, unit_map = audited
    model = loaded.model
    units = torch.zeros(unit_map.space.size, dtype=torch.bool)
    units[[0, 1, 3, 6]] = True  # heads 0,1 of layer 0 (a whole KV group), head 3, and head 2 of layer 1
    units[unit_map.space.total_heads + torch.tensor([2, 7, 50, 60])] = True  # neurons in both layers
    ids = torch.tensor([[5, 17, 99, 42, 8, 230, 11]])
    original = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    with torch.no_grad():
        dense = model(ids).logits
        with ablate(model, unit_map, units, compensation=compensation):
            ablated = model(ids).logits
            layer0 = describe(model).layers[0]
            assert (
                layer0.k.linear.weight[layer0.k.offset : layer0.k.offset + 8].abs().sum() == 0
            )  # group 0 fully removed
            assert layer0.k.linear.weight[layer0.k.offset + 8 : layer0.k.offset + 16].abs().sum() > 0
        handles = _replace_with_mean(model, unit_map, units, compensation)
        reference = model(ids).logits
        for handle in handles:
            handle.remove()
        after = model(ids).logits
    assert (ablated - dense).abs().max() > 1e-4
    torch.testing.assert_close(ablated, reference, rtol=1e-4, atol=1e-5)
    assert torch.equal(after, dense)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, original[name]), name


def test_ablation_restores_weights_after_an_error(audited):
    loaded, unit_map = audited
    original = {name: tensor.clone() for name, tensor in loaded.model.state_dict().items()}
    with pytest.raises(RuntimeError, match="boom"):
        with ablate(loaded.model, unit_map, unit_map.mask(["SCU", "RU"])):
            raise RuntimeError("boom")
    assert all(torch.equal(t, original[n]) for n, t in loaded.model.state_dict().items())
    assert not any(m._forward_hooks for m in loaded.model.modules())


def test_ablation_rejects_a_map_of_another_shape(audited):
    _, unit_map = audited
    other, _ = tiny_model("llama", num_layers=3)
    with pytest.raises(ValueError, match="another shape"):
        with ablate(other, unit_map, unit_map.mask("SCU")):
            pass
