"""The layer-streamed audit gives the whole-model audit's unit map, one decoder layer in memory at a time."""

from dataclasses import replace

import pytest
import torch

from ssah_engine.audit import run_audit
from ssah_engine.audit_config import AuditConfig
from ssah_engine.encoding import encode_pairs, make_batches
from ssah_engine.loading import LoadOptions, ModelLoadError, load_model
from ssah_engine.scoring.scores import shared_prefix_length
from ssah_engine.streaming import load_streamed
from ssah_engine.testing import tiny_model

OPTIONS = LoadOptions(device="cpu", dtype="float32", local_files_only=True)
CONFIG = AuditConfig(samples=12, batch_size=5, cuts=AuditConfig().cuts)


def _saved(tmp_path, family: str, num_layers: int = 3, shard: str | None = None):
    model, tokenizer = tiny_model(family, num_layers=num_layers, seed=1)
    directory = tmp_path / family
    kwargs = {"max_shard_size": shard} if shard else {}
    model.save_pretrained(directory, **kwargs)
    tokenizer.save_pretrained(directory)
    return directory


def _both(directory, safety, utility, config=CONFIG):
    whole = run_audit(load_model(str(directory), OPTIONS), safety, utility, config)
    streamed = run_audit(load_streamed(str(directory), OPTIONS), safety, utility, replace(config, stream_layers=True))
    return whole, streamed


@pytest.mark.parametrize(
    "family, shard",
    [("llama", None), ("qwen2", "20KB"), ("gemma2", None), ("phi3", None)],  # qwen2: GQA, several shards
)
def test_streamed_unit_map_equals_whole_model(tmp_path, safety_set, utility_set, family, shard):
    directory = _saved(tmp_path, family, shard=shard)
    if shard:
        assert (directory / "model.safetensors.index.json").is_file()
    whole, streamed = _both(directory, safety_set, utility_set)
    assert torch.equal(streamed.labels, whole.labels)
    for name in ("z_safety", "z_utility", "head_input_mean", "neuron_input_mean", "utility_neuron_input_mean"):
        torch.testing.assert_close(getattr(streamed, name), getattr(whole, name), rtol=1e-5, atol=1e-6)
    assert streamed.data["safety"]["response_tokens"] == whole.data["safety"]["response_tokens"]
    assert streamed.config["stream_layers"] and not whole.config["stream_layers"]


def test_streamed_wanda_and_flap_match(tmp_path, safety_set, utility_set):
    directory = _saved(tmp_path, "llama")
    for config in (replace(CONFIG, method="wanda"), replace(CONFIG, estimator="flap")):
        whole, streamed = _both(directory, safety_set, utility_set, config)
        assert torch.equal(streamed.labels, whole.labels)
        torch.testing.assert_close(streamed.z_safety, whole.z_safety, rtol=1e-5, atol=1e-6)


def _materialised(layer) -> bool:
    return any(parameter.device.type != "meta" for parameter in layer.parameters())


def test_one_layer_at_a_time_in_order(tmp_path, safety_set, utility_set):
    """Each layer runs every batch while it alone is materialised, layers in order, none skipped."""
    directory = _saved(tmp_path, "llama", num_layers=4)
    streamed = load_streamed(str(directory), OPTIONS)
    layers = streamed.model.model.layers
    calls, live = [], []

    def watch(index):
        def hook(_module, _args):
            calls.append(index)
            live.append(tuple(i for i, layer in enumerate(layers) if _materialised(layer)))

        return hook

    for index, layer in enumerate(layers):
        layer.register_forward_pre_hook(watch(index))
    unit_map = run_audit(streamed, safety_set, utility_set, replace(CONFIG, stream_layers=True))
    passes = 2 * (1 + 3)  # both sets: the shared prefix once, then 12 pairs in batches of 5
    assert calls == [index for index in range(4) for _ in range(passes)]
    assert live == [(index,) for index in calls]
    assert all(parameter.device.type == "meta" for parameter in streamed.model.parameters())
    # Per-layer statistics: a layer fed the wrong inputs (skipped or out of order) would differ.
    whole = run_audit(load_model(str(directory), OPTIONS), safety_set, utility_set, CONFIG)
    for index in range(4):
        torch.testing.assert_close(unit_map.head_input_mean[index], whole.head_input_mean[index], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(whole.head_input_mean[1], whole.head_input_mean[2])


def test_streamed_needs_a_local_safetensors_directory(tmp_path):
    with pytest.raises(ModelLoadError, match="local directory of safetensors"):
        load_streamed("builtin:tiny-llama", OPTIONS)
    with pytest.raises(ModelLoadError, match="local directory of safetensors"):
        load_streamed("some-org/some-model", OPTIONS)  # a hub id: nothing on disk to stream from
    model, _ = tiny_model("llama")
    model.config.save_pretrained(tmp_path / "empty")
    with pytest.raises(ModelLoadError, match="no safetensors"):
        load_streamed(str(tmp_path / "empty"), OPTIONS)


def test_stream_layers_settings_are_checked(tmp_path, tiny_llama, safety_set, utility_set):
    with pytest.raises(ValueError, match="snip"):
        AuditConfig(method="snip", stream_layers=True)
    with pytest.raises(ValueError, match="written responses"):
        AuditConfig(responses="self", stream_layers=True)
    with pytest.raises(ValueError, match="load_streamed"):
        run_audit(tiny_llama, safety_set, utility_set, replace(CONFIG, stream_layers=True))


def test_shared_prefix_runs_once_per_layer(tmp_path, safety_set, utility_set):
    """As in the whole-model audit: the prefix all pairs share runs once, each batch feeds only its own tokens."""
    directory = _saved(tmp_path, "llama", num_layers=2)
    streamed = load_streamed(str(directory), OPTIONS)
    shapes: list[tuple] = []
    hook = streamed.model.model.layers[1].register_forward_pre_hook(lambda _m, args: shapes.append(args[0].shape))
    config = replace(CONFIG, stream_layers=True)
    run_audit(streamed, safety_set, utility_set, config)
    hook.remove()
    batch_sets = {
        name: list(
            make_batches(
                encode_pairs(streamed.tokenizer, [(e.prompt, e.response) for e in subset.sample(12, 0).examples]),
                5,
                streamed.tokenizer.pad_token_id,
            )
        )
        for name, subset in (("safety", safety_set), ("utility", utility_set))
    }
    expected = []
    for batches in batch_sets.values():
        prefix = shared_prefix_length(batches)
        assert prefix > 0
        expected += [(1, prefix)] + [(len(b.input_ids), b.input_ids.shape[1] - prefix) for b in batches]
    assert [tuple(shape[:2]) for shape in shapes] == expected
