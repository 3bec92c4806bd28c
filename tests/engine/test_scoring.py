import pytest
import torch

from ssah_engine.architectures import describe
from ssah_engine.audit import AuditConfig, run_audit
from ssah_engine.classes import LABEL, Cuts
from ssah_engine.encoding import encode_pairs, make_batches
from ssah_engine.scoring import score_dataset, zscore
from ssah_engine.scoring.scores import shared_prefix_length
from ssah_engine.scoring.stats import ChannelStats
from ssah_engine.units import UnitSpace

from .conftest import make_dataset


def test_channel_stats_are_stable_and_exact():
    torch.manual_seed(1)
    # A large offset breaks naive float32 sum-of-squares; the streaming merge must not care.
    values = 1e4 + torch.randn(5000, 7, dtype=torch.float64)
    stats = ChannelStats(7)
    for chunk in values.float().split(333):
        stats.update(chunk)
    reference = values.float().double()
    torch.testing.assert_close(stats.variance, reference.var(0, unbiased=False), rtol=1e-5, atol=0)
    torch.testing.assert_close(stats.mean, reference.mean(0), rtol=1e-9, atol=0)
    assert stats.count == 5000
    # O(channels) memory: nothing grows with the number of tokens seen.
    assert stats.shifted_sum.numel() == stats.shifted_squares.numel() == stats.shift.numel() == 7


def _stored_activations(loaded, pairs, batch_size=5):
    """Naive reference: keep every response-token input of o_proj and down_proj, then reduce."""
    layout = describe(loaded.model)
    stored = {("o", i): [] for i in range(layout.num_layers)} | {("down", i): [] for i in range(layout.num_layers)}
    mask = [None]
    handles = []
    for layer in layout.layers:
        for kind, module in (("o", layer.o), ("down", layer.down)):
            key = (kind, layer.index)
            handles.append(
                module.register_forward_pre_hook(
                    lambda _m, args, key=key: stored[key].append(args[0][mask[0]].double())
                )
            )
    encoded = encode_pairs(loaded.tokenizer, pairs)
    with torch.no_grad():
        for batch in make_batches(encoded, batch_size, loaded.tokenizer.pad_token_id):
            mask[0] = batch.response_mask
            loaded.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
    for handle in handles:
        handle.remove()
    return layout, {key: torch.cat(values) for key, values in stored.items()}


def _naive_z(values: torch.Tensor) -> torch.Tensor:
    return (values - values.mean()) / values.std()


@pytest.mark.parametrize("method", ["wifv", "wanda"])
def test_streaming_scores_equal_a_naive_reference(tiny_llama, safety_set, method):
    pairs = [(e.prompt, e.response) for e in safety_set.examples]
    layout, acts = _stored_activations(tiny_llama, pairs)
    heads, neurons = [], []
    for layer in layout.layers:
        x_o, x_down = acts[("o", layer.index)], acts[("down", layer.index)]
        w_o, w_down = layer.o.weight.detach().double(), layer.down.weight.detach().double()
        if method == "wifv":
            head_channel = (x_o.var(0, unbiased=False) * (w_o**2).sum(0)) ** 2
            neuron_channel = x_down.var(0, unbiased=False) * (w_down**2).sum(0)
        else:
            head_channel = x_o.norm(dim=0) * w_o.abs().sum(0)
            neuron_channel = x_down.norm(dim=0) * w_down.abs().sum(0)
        heads.append(_naive_z(head_channel).reshape(layout.num_heads, layout.head_dim).mean(1))
        neurons.append(_naive_z(neuron_channel))
    expected = torch.cat([torch.stack(heads).flatten(), torch.stack(neurons).flatten()])

    encoded = encode_pairs(tiny_llama.tokenizer, pairs)
    result = score_dataset(
        tiny_llama.model, layout, make_batches(encoded, 5, tiny_llama.tokenizer.pad_token_id), method=method
    )
    torch.testing.assert_close(result.scores, expected, rtol=1e-5, atol=1e-6)
    assert result.tokens == acts[("o", 0)].shape[0]
    torch.testing.assert_close(result.neuron_input_mean[1], acts[("down", 1)].mean(0), rtol=1e-5, atol=1e-7)


def test_snip_scores_every_unit(tiny_llama, safety_set):
    layout = describe(tiny_llama.model)
    encoded = encode_pairs(tiny_llama.tokenizer, [(e.prompt, e.response) for e in safety_set.examples])
    result = score_dataset(tiny_llama.model, layout, make_batches(encoded, 4, 0), method="snip")
    space = UnitSpace.from_layout(layout)
    heads, neurons = space.split(result.scores)
    # z-scored per layer: zero mean, unit std in every layer, for heads and neurons alike.
    torch.testing.assert_close(heads.mean(1), torch.zeros(2, dtype=torch.float64), atol=1e-9, rtol=0)
    torch.testing.assert_close(neurons.std(1), torch.ones(2, dtype=torch.float64), rtol=1e-9, atol=0)
    assert all(p.grad is None for p in tiny_llama.model.parameters())


def test_zscore_of_a_constant_is_zero():
    assert zscore(torch.ones(5)).tolist() == [0.0] * 5


def test_planted_safety_neuron_is_scu_and_dead_neuron_is_ru(tiny_llama):
    """Known answer: a neuron that only fires on the safety set is SCU, a dead one is RU."""
    model, tokenizer = tiny_llama.model, tiny_llama.tokenizer
    layout = describe(model)
    marker_ids = tokenizer("QX", add_special_tokens=False)["input_ids"]
    planted, dead = 5, 9
    with torch.no_grad():
        embed = model.get_input_embeddings().weight
        embed[:, 0] = 0.0  # hidden channel 0 carries only the marker tokens
        embed[marker_ids, 0] = 4.0
        first = layout.layers[0]
        first.o.weight[0] = 0.0  # keep channel 0 of the residual stream clean up to the layer-0 MLP
        for layer in layout.layers:
            for part in (layer.gate, layer.up):
                part.linear.weight[:, 0] = 0.0  # no other neuron reads channel 0
        for part in (first.gate, first.up):
            part.linear.weight[part.offset + planted] = 0.0
            part.linear.weight[part.offset + planted, 0] = 3.0
        last = layout.layers[-1]  # the dead neuron sits where no planted outlier skews the z-scores
        for part in (last.gate, last.up):
            part.linear.weight[part.offset + dead] = 0.0
    safety = make_dataset("safety", [(f"request {i}", "QX " * (3 + i % 4)) for i in range(16)])
    utility = make_dataset("utility", [(f"task {i}", f"answer is {i} and more text") for i in range(16)])
    unit_map = run_audit(tiny_llama, safety, utility, AuditConfig(samples=16, cuts=Cuts(ru=0.02, scu=0.01, ucu=0.05)))
    space = unit_map.space
    planted_flat = space.total_heads + planted
    dead_flat = space.total_heads + space.intermediate_size + dead
    assert unit_map.labels[planted_flat] == LABEL["SCU"]
    assert unit_map.labels[dead_flat] == LABEL["RU"]
    assert unit_map.z_safety[planted_flat] == unit_map.z_safety.max()


@pytest.mark.parametrize("family", ["llama", "gemma2", "phi3"])
def test_shared_prefix_cache_leaves_scores_unchanged(family, safety_set):
    from ssah_engine.testing import tiny_model

    model, tokenizer = tiny_model(family)
    layout = describe(model)
    encoded = encode_pairs(tokenizer, [(e.prompt, e.response) for e in safety_set.examples])
    batches = list(make_batches(encoded, 5, tokenizer.pad_token_id))
    # "<|im_start|>user\\nhow do I do harmful thing " is common to every pair.
    assert shared_prefix_length(batches) == len(tokenizer("<|im_start|>user\nhow do I do harmful thing ")["input_ids"])
    shared = score_dataset(model, layout, batches, share_prefix=True)
    full = score_dataset(model, layout, batches, share_prefix=False)
    torch.testing.assert_close(shared.scores, full.scores, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(shared.neuron_input_mean, full.neuron_input_mean, rtol=1e-5, atol=1e-6)
    assert shared.tokens == full.tokens


def test_the_audit_config_names_exactly_the_estimators_scoring_implements():
    from ssah_engine.audit_config import ESTIMATORS as NAMES
    from ssah_engine.scoring.stats import ESTIMATORS

    assert tuple(ESTIMATORS) == NAMES
