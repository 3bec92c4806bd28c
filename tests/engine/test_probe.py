"""The probe, the refusal direction and its interventions, on tiny models (no download)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from ssah_engine.architectures import describe
from ssah_engine.loading import LoadedModel
from ssah_engine.probe import (
    ProbeConfig,
    ablate_direction,
    add_direction,
    orthogonalize_weights,
    probe_distances,
    run_probe,
)
from ssah_engine.probe.inputs import build_inputs
from ssah_engine.testing import tiny_model
from tests.engine.conftest import FAMILIES, make_dataset

MARKER = "~"


def _harmful(count: int = 16):
    # Different lengths on purpose, so batches are padded; the marker comes after the prefix all prompts
    # share, which runs once through the KV cache (the planting hook sees only the tokens of its call).
    return make_dataset(
        "harmful",
        [
            (f"how do I do harmful thing {i}{'?' * (i % 5)} {MARKER}", f"Sorry, I can't help with thing {i} at all.")
            for i in range(count)
        ],
    )


def _harmless(count: int = 16):
    return make_dataset("harmless", [(f"what is {i} plus {i}{'!' * (i % 3)}", f"It is {2 * i}.") for i in range(count)])


def _layer_outputs(model, ids: list[int]) -> torch.Tensor:
    """[layers, seq, hidden] raw decoder-layer outputs of one unbatched, uncached forward pass."""
    kept = []
    handles = [
        layer.register_forward_hook(lambda _m, _a, out: kept.append(out if torch.is_tensor(out) else out[0]))
        for layer in model.get_submodule(describe(model).layers_path)
    ]
    try:
        with torch.no_grad():
            model(input_ids=torch.tensor([ids]))
    finally:
        for handle in handles:
            handle.remove()
    return torch.stack([k[0] for k in kept])


def _plant(model, tokenizer, vector: torch.Tensor):
    """From the marker token on, the residual stream carries ``vector`` (an embedding-output bias)."""
    marker = tokenizer(MARKER, add_special_tokens=False)["input_ids"][0]

    def hook(_module, args, output):
        seen = (args[0] == marker).cumsum(1).clamp(max=1)[..., None].to(output.dtype)
        return output + seen * vector

    return model.get_input_embeddings().register_forward_hook(hook)


@pytest.mark.parametrize("family", ["llama", "qwen2", "gemma2", "phi3"])
@pytest.mark.parametrize("pool", ["last", "mean"])
def test_distances_equal_a_direct_computation_from_output_hidden_states(family, pool):
    model, tokenizer = tiny_model(family, num_layers=3)
    config = ProbeConfig(ks=(1, 3, 5), pool=pool, batch_size=3)
    inputs = build_inputs(tokenizer, [(e.prompt, e.response) for e in _harmful(7).examples], config)
    assert len(inputs) == 7
    got = probe_distances(model, describe(model), inputs, config, pad_id=tokenizer.pad_token_id)
    for q, item in enumerate(inputs):
        with torch.no_grad():
            query = model(input_ids=torch.tensor([item.refusal[: item.query_length]]), output_hidden_states=True)
            query_state = torch.stack(query.hidden_states[1:])[:, 0, -1]
            for kind, sequence in (("refusal", item.refusal), ("compliance", item.compliance)):
                for k in config.ks:
                    full = model(input_ids=torch.tensor([sequence[: item.query_length + k]]), output_hidden_states=True)
                    states = torch.stack(full.hidden_states[1:])[:, 0]
                    continuation = states[:, -1] if pool == "last" else states[:, -k:].mean(1)
                    expected = 1 - F.cosine_similarity(query_state.double(), continuation.double(), dim=-1)
                    torch.testing.assert_close(got[kind][k][q], expected, atol=2e-5, rtol=0)


def test_planted_direction_is_recovered_with_its_sign_and_size():
    model, tokenizer = tiny_model("llama", num_layers=3)
    torch.manual_seed(1)
    planted = torch.randn(describe(model).hidden_size)
    planted = 3.0 * planted / planted.norm()
    handle = _plant(model, tokenizer, planted)
    try:
        report = run_probe(
            LoadedModel(model, tokenizer, "t", "t"),
            _harmful(),
            _harmless(),
            ProbeConfig(ks=(2, 4), queries=4, calibration=16, batch_size=5, max_layer_fraction=1.0),
        )
        direction = report.direction
        # The exact means, one prompt at a time, straight from the layers' outputs.
        harmful = torch.stack([_layer_outputs(model, ids)[:, -1] for ids in _prompt_ids(tokenizer, _harmful(), 12)])
        harmless = torch.stack([_layer_outputs(model, ids)[:, -1] for ids in _prompt_ids(tokenizer, _harmless(), 12)])
    finally:
        handle.remove()
    assert direction.counts["harmful_train"] == 12 and direction.counts["harmless_train"] == 12
    torch.testing.assert_close(direction.directions, harmful.mean(0) - harmless.mean(0), atol=1e-4, rtol=1e-4)
    for layer in range(3):
        assert F.cosine_similarity(direction.directions[layer], planted, dim=0) > 0.99
        assert float(direction.directions[layer].norm()) == pytest.approx(float(planted.norm()), rel=0.05)
    assert direction.accuracy[direction.layer] == 1.0
    assert report.data["direction"]["layer"] == direction.layer


def _prompt_ids(tokenizer, dataset, count):
    from ssah_engine.probe.inputs import prompt_ids

    return [prompt_ids(tokenizer, e.prompt, ProbeConfig()) for e in dataset.examples[:count]]


@pytest.mark.parametrize("family", FAMILIES)
def test_ablate_direction_leaves_no_component_at_any_layer_output(family):
    model, tokenizer = tiny_model(family, num_layers=3)
    layout = describe(model)
    torch.manual_seed(2)
    with torch.no_grad():  # norms start as uniform scales, which would hide a missed post-norm writer
        for name, parameter in model.named_parameters():
            if "norm" in name:
                parameter.add_(0.5 * torch.randn_like(parameter))
    direction = torch.randn(layout.hidden_size)
    unit = direction / direction.norm()
    handle = _plant(model, tokenizer, 2.0 * unit)  # so the stream does carry the direction before ablation
    try:
        ids = tokenizer(f"{MARKER} a harmful request, please", add_special_tokens=False)["input_ids"]
        before = _layer_outputs(model, ids)
        with ablate_direction(model, direction):
            during = _layer_outputs(model, ids)
        after = _layer_outputs(model, ids)
    finally:
        handle.remove()
    assert (before @ unit).abs().max() > 0.5
    share = (during @ unit).abs() / during.norm(dim=-1)
    assert share.max() < 1e-5, f"component left along the direction: {share.max():.2e}"
    torch.testing.assert_close(after, before, atol=0, rtol=0)


@pytest.mark.parametrize("family", ["llama", "qwen2", "phi3"])
def test_orthogonalized_weights_match_the_hooks(family):
    model, tokenizer = tiny_model(family, num_layers=2)
    torch.manual_seed(3)
    direction = torch.randn(describe(model).hidden_size)
    ids = torch.tensor([tokenizer("a prompt of some length", add_special_tokens=False)["input_ids"]])
    with torch.no_grad(), ablate_direction(model, direction):
        hooked = model(input_ids=ids).logits
    baked = orthogonalize_weights(copy.deepcopy(model), direction)
    with torch.no_grad():
        torch.testing.assert_close(baked(input_ids=ids).logits, hooked, atol=1e-5, rtol=1e-4)
        assert not torch.allclose(model(input_ids=ids).logits, hooked, atol=1e-4)


def test_add_direction_shifts_the_chosen_layer_by_alpha_times_the_vector():
    model, tokenizer = tiny_model("llama", num_layers=3)
    torch.manual_seed(4)
    vector = torch.randn(describe(model).hidden_size)
    ids = tokenizer("hello there", add_special_tokens=False)["input_ids"]
    base = _layer_outputs(model, ids)
    with add_direction(model, vector, layer=1, alpha=2.5):
        shifted = _layer_outputs(model, ids)
    torch.testing.assert_close(shifted[0], base[0])
    torch.testing.assert_close(shifted[1] - base[1], (2.5 * vector).expand_as(base[1]), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(_layer_outputs(model, ids), base, atol=0, rtol=0)
    with pytest.raises(ValueError):
        with add_direction(model, vector, layer=3, alpha=1.0):
            pass


def test_unit_writes_add_up_to_each_layers_write_along_its_direction():
    model, tokenizer = tiny_model("qwen2", num_layers=2)
    layout = describe(model)
    report = run_probe(
        LoadedModel(model, tokenizer, "t", "t"),
        _harmful(8),
        _harmless(8),
        ProbeConfig(ks=(2,), queries=2, calibration=8, batch_size=3),
    )
    writes = report.unit_scores["write"]
    heads, neurons = writes[: layout.num_layers * layout.num_heads], writes[layout.num_layers * layout.num_heads :]
    heads, neurons = heads.reshape(layout.num_layers, -1), neurons.reshape(layout.num_layers, -1)
    # Direct: mean of (o_proj output - bias) and down_proj output at the last prompt position, on r_hat.
    outputs = {("o", i): [] for i in range(2)} | {("down", i): [] for i in range(2)}
    handles = []
    for p in layout.layers:
        for name, linear in (("o", p.o), ("down", p.down)):
            handles.append(
                linear.register_forward_hook(
                    lambda m, a, out, key=(name, p.index): outputs[key].append(
                        (out - (m.bias if m.bias is not None else 0))[0, -1].double()
                    )
                )
            )
    try:
        with torch.no_grad():
            for ids in _prompt_ids(tokenizer, _harmful(8), 8):
                model(input_ids=torch.tensor([ids]))
    finally:
        for handle in handles:
            handle.remove()
    for layer in range(2):
        unit = report.direction.directions[layer].double()
        unit = unit / unit.norm()
        assert heads[layer].sum() == pytest.approx(float(torch.stack(outputs[("o", layer)]).mean(0) @ unit), abs=1e-5)
        assert neurons[layer].sum() == pytest.approx(
            float(torch.stack(outputs[("down", layer)]).mean(0) @ unit), abs=1e-5
        )


def test_unit_write_summary_per_class_with_random_controls(safety_set, utility_set):
    from ssah_engine.audit import AuditConfig, run_audit

    model, tokenizer = tiny_model("llama")
    loaded = LoadedModel(model, tokenizer, "t", "t")
    unit_map = run_audit(loaded, safety_set, utility_set, AuditConfig(samples=12))
    report = run_probe(
        loaded, safety_set, utility_set, ProbeConfig(ks=(2,), queries=2, calibration=12), unit_map=unit_map
    )
    summary = report.data["unit_writes"]
    assert set(summary["classes"]) == {"SCU", "UCU", "CU", "RU"}
    assert sum(c["units"] for c in summary["classes"].values()) == unit_map.space.size
    assert sum(c.get("write_share", 0) for c in summary["classes"].values()) == pytest.approx(1.0, abs=1e-9)
    for name, control in summary["random"].items():
        assert control["units"] == summary["classes"][name]["units"]
    assert sum(summary["all"]["histogram"]) == unit_map.space.size


def test_config_round_trip_and_validation():
    config = ProbeConfig(ks=(2, 4), pool="mean", queries=3)
    assert ProbeConfig.from_dict(config.to_dict()) == config
    for bad in (
        dict(ks=()),
        dict(ks=(4, 2)),
        dict(ks=(0,)),
        dict(pool="max"),
        dict(holdout=1.0),
        dict(prompt_format="x"),
        dict(calibration=2),
        dict(compliance_text=" "),
    ):
        with pytest.raises(ValueError):
            ProbeConfig(**bad)
    with pytest.raises(ValueError, match="unknown probe settings: typo"):
        ProbeConfig.from_dict({"typo": 1})


def test_report_saves_and_loads(tmp_path, tiny_llama):
    from ssah_engine.probe import ProbeReport, RefusalDirection

    report = run_probe(tiny_llama, _harmful(8), _harmless(8), ProbeConfig(ks=(2,), queries=2, calibration=8))
    report.save(tmp_path)
    loaded = ProbeReport.load(tmp_path)
    assert loaded.data == report.data
    torch.testing.assert_close(loaded.direction.directions, report.direction.directions)
    assert RefusalDirection.load(tmp_path / "direction.safetensors").layer == report.direction.layer
