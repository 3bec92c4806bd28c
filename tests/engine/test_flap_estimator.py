"""estimator="flap" gives the authors' statistic: FLAP's running update, transcribed literally here (issue 13, §4)."""

import pytest
import torch

from ssah_engine.architectures import describe
from ssah_engine.audit import AuditConfig, run_audit
from ssah_engine.encoding import encode_pairs
from ssah_engine.scoring import zscore
from ssah_engine.scoring.stats import ChannelStats, FlapChannelStats
from ssah_engine.units import UnitSpace

from .conftest import make_dataset


class TranscribedFlap:
    """FLAP's ``BiasGPT.add_batch`` for the WIFV metric, line by line, in-place aliasing included."""

    def __init__(self, dim: int):
        self.nsamples = 0
        self.baseline_inp = torch.zeros(dim, dtype=torch.float64)
        self.fluc_inp = torch.zeros(dim, dtype=torch.float64)

    def add_batch(self, inp: torch.Tensor) -> None:
        if len(inp.shape) == 2:
            inp = inp.unsqueeze(0)
        batch_size = inp.shape[0]
        inp = inp.reshape((-1, inp.shape[-1])).t().double()  # (dim, tokens)
        old_baseline_inp = self.baseline_inp  # an alias: the next two lines update it too
        self.baseline_inp *= self.nsamples / (self.nsamples + batch_size)
        self.baseline_inp += torch.mean(inp, dim=1) / (self.nsamples + batch_size)
        if self.nsamples == 0:
            self.fluc_inp = 0
        else:
            self.fluc_inp *= (self.nsamples - 1) / (self.nsamples + batch_size - 1)
            self.fluc_inp += torch.sum(
                (inp - self.baseline_inp.unsqueeze(1)) * (inp - old_baseline_inp.unsqueeze(1)), dim=1
            ) / (self.nsamples + batch_size)
        self.nsamples += batch_size


def transcribed_scores(loaded, pairs):
    """WIFV z-scores from the transcription, each pair run alone, in the given order."""
    model, tokenizer = loaded.model, loaded.tokenizer
    layout = describe(model)
    heads = [TranscribedFlap(layer.o.in_features) for layer in layout.layers]
    neurons = [TranscribedFlap(layer.down.in_features) for layer in layout.layers]
    start = [0]

    def hook_for(wrapped):
        def hook(_module, args):
            wrapped.add_batch(args[0][0, start[0] :].detach())

        return hook

    handles = [layer.o.register_forward_pre_hook(hook_for(h)) for layer, h in zip(layout.layers, heads)]
    handles += [layer.down.register_forward_pre_hook(hook_for(n)) for layer, n in zip(layout.layers, neurons)]
    try:
        with torch.no_grad():
            for pair in encode_pairs(tokenizer, pairs):
                start[0] = pair.response_start
                model(torch.tensor([pair.input_ids]))
    finally:
        for handle in handles:
            handle.remove()
    space = UnitSpace.from_layout(layout)
    head_scores, neuron_scores = [], []
    for layer, h, n in zip(layout.layers, heads, neurons):
        o_norms = layer.o.weight.detach().double().square().sum(0)
        down_norms = layer.down.weight.detach().double().square().sum(0)
        head_scores.append(zscore((h.fluc_inp * o_norms) ** 2).reshape(space.num_heads, space.head_dim).mean(1))
        neuron_scores.append(zscore(n.fluc_inp * down_norms))
    means = torch.stack([h.baseline_inp for h in heads])
    return space.join(torch.stack(head_scores), torch.stack(neuron_scores)), means


@pytest.fixture
def uneven_sets():
    """Responses of different lengths, so a mean of per-pair means differs from the token mean."""
    safety = make_dataset("safety", [(f"do harm {i}?", "Sorry, I can't." + " No." * (i % 5)) for i in range(10)])
    utility = make_dataset("utility", [(f"add {i} and 2", f"{i} plus 2 is {i + 2}" + "!" * (3 * i)) for i in range(10)])
    return safety, utility


def test_audit_with_flap_reproduces_the_transcribed_update(tiny_llama, uneven_sets):
    safety, utility = uneven_sets
    config = AuditConfig(samples=8, seed=1, estimator="flap", batch_size=3)
    unit_map = run_audit(tiny_llama, safety, utility, config)
    for name, dataset, z in (("safety", safety, unit_map.z_safety), ("utility", utility, unit_map.z_utility)):
        pairs = [(e.prompt, e.response) for e in dataset.sample(8, 1).examples]  # the authors' order
        expected, means = transcribed_scores(tiny_llama, pairs)
        torch.testing.assert_close(z, expected, rtol=1e-6, atol=1e-6, msg=name)
        if name == "safety":  # ablation's compensation uses the same (flap) means
            torch.testing.assert_close(unit_map.head_input_mean.double(), means, rtol=1e-5, atol=1e-6)

    pooled = run_audit(tiny_llama, safety, utility, AuditConfig(samples=8, seed=1, batch_size=3))
    assert not torch.allclose(pooled.z_safety, unit_map.z_safety, atol=1e-3)  # the estimators do differ
    assert unit_map.config["estimator"] == "flap"


def test_flap_stats_quirks_on_numbers():
    first = torch.tensor([[1.0], [3.0]])
    second = torch.tensor([[10.0]])
    stats = FlapChannelStats(1)
    stats.update(first)
    assert float(stats.variance) == 0.0  # the first pair adds nothing
    stats.update(second)
    # mean of per-pair means (2 + 10) / 2 = 6, not the token mean 14 / 3
    assert float(stats.mean) == 6.0
    # (x - new mean)^2 for the second pair only, over n + 1 = 2
    assert float(stats.variance) == (10.0 - 6.0) ** 2 / 2
    pooled = ChannelStats(1)
    pooled.update(torch.cat([first, second]))
    assert float(pooled.mean) == pytest.approx(14 / 3)


def test_flap_is_refused_for_other_methods():
    with pytest.raises(ValueError, match="flap"):
        AuditConfig(method="wanda", estimator="flap")
