"""A model loaded with a device map that offloads part of its layers (to the CPU map and to disk) audits,
ablates and generates as the plain load does."""

from dataclasses import replace

import pytest
import torch

from ssah_engine.ablation import ablate
from ssah_engine.audit import run_audit
from ssah_engine.audit_config import AuditConfig
from ssah_engine.devices import input_device, offloaded
from ssah_engine.evaluation.generation import generate_greedy_ids
from ssah_engine.loading import LoadOptions, ModelLoadError, load_model
from ssah_engine.placement import Placement
from ssah_engine.testing import tiny_model

from .test_evaluation import eval_files  # noqa: F401  # a fixture

PLAIN = LoadOptions(device="cpu", dtype="float32", local_files_only=True)
CONFIG = AuditConfig(samples=12, batch_size=5)


def _saved(tmp_path, family: str):
    model, tokenizer = tiny_model(family, num_layers=4, seed=1)
    directory = tmp_path / family
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def _offloaded(directory, tmp_path):
    """The checkpoint under a CPU budget of 70 % of its weights: the first layers in memory, the rest on disk."""
    weights = sum(path.stat().st_size for path in directory.glob("*.safetensors"))
    placement = Placement(
        device_map="auto", max_memory=f"cpu={int(0.7 * weights)}", offload_folder=str(tmp_path / "offload")
    )
    loaded = load_model(str(directory), LoadOptions(dtype="float32", local_files_only=True, placement=placement))
    places = set(loaded.model.hf_device_map.values())
    assert places == {"cpu", "disk"}, loaded.model.hf_device_map
    assert any(offloaded(module) for module in loaded.model.modules())  # weights on meta between calls
    assert loaded.device == torch.device("cpu") == input_device(loaded.model)
    return loaded


@pytest.fixture(params=["llama", "phi3"])  # phi3: fused qkv and gate/up, rows zeroed at an offset
def both(request, tmp_path):
    directory = _saved(tmp_path, request.param)
    return load_model(str(directory), PLAIN), _offloaded(directory, tmp_path)


def test_offloaded_audit_gives_the_plain_unit_map(both, safety_set, utility_set):
    plain, spread = both
    for config in (CONFIG, replace(CONFIG, method="wanda", estimator="pooled"), replace(CONFIG, estimator="flap")):
        expected = run_audit(plain, safety_set, utility_set, config)
        found = run_audit(spread, safety_set, utility_set, config)
        assert torch.equal(found.labels, expected.labels)
        for name in ("z_safety", "z_utility", "head_input_mean", "neuron_input_mean"):
            torch.testing.assert_close(getattr(found, name), getattr(expected, name), rtol=1e-5, atol=1e-6)


def _units(unit_map):
    """SCU and RU, and in the offloaded layers 2 and 3 a whole KV group (k and v rows zeroed) and neurons."""
    space = unit_map.space
    units = unit_map.mask(["SCU", "RU"])
    units[[3 * space.num_heads + head for head in range(space.num_heads // space.num_kv_heads)]] = True
    units[[2 * space.num_heads + 1]] = True
    units[space.total_heads + 2 * space.intermediate_size + torch.tensor([3, 9])] = True
    return units


@pytest.mark.parametrize("compensation", ["none", "safety"])
def test_offloaded_ablation_gives_the_plain_logits_and_tokens(both, safety_set, utility_set, compensation):
    plain, spread = both
    unit_map = run_audit(plain, safety_set, utility_set, CONFIG)
    units = _units(unit_map)
    ids = torch.tensor([[5, 17, 99, 42, 8, 230, 11], [3, 4, 5, 6, 7, 8, 9]])
    prompts = [[5, 17, 99, 42], [3, 4, 5, 6, 7, 8]]
    with torch.no_grad():
        dense = spread.model(ids).logits
        with ablate(plain.model, unit_map, units, compensation=compensation):
            expected = plain.model(ids).logits
            expected_tokens = generate_greedy_ids(plain.model, plain.tokenizer, prompts, max_new_tokens=6)
        with ablate(spread.model, unit_map, units, compensation=compensation):
            found = spread.model(ids).logits
            found_tokens = generate_greedy_ids(spread.model, spread.tokenizer, prompts, max_new_tokens=6)
        after = spread.model(ids).logits
    assert (expected - dense).abs().max() > 1e-3  # the ablation changes the answer
    torch.testing.assert_close(found, expected, rtol=1e-5, atol=1e-6)
    assert found_tokens == expected_tokens
    assert torch.equal(after, dense)  # every masking hook removed on exit


def test_snip_and_export_refuse_offloaded_weights(both, safety_set, utility_set):
    from ssah_engine.export import ExportError, bake_ablation

    plain, spread = both
    with pytest.raises(ValueError, match="snip needs every weight"):
        run_audit(spread, safety_set, utility_set, replace(CONFIG, method="snip"))
    unit_map = run_audit(plain, safety_set, utility_set, CONFIG)
    with pytest.raises(ExportError, match="offloaded"):
        bake_ablation(spread.model, unit_map, unit_map.mask("SCU"), compensation="none")


def test_placement_reads_a_memory_map_and_refuses_bad_ones():
    placement = Placement(device_map="balanced", max_memory="0=20GiB, 1 = 20 GiB,cpu=64GiB,disk=1000")
    assert placement.memory_map() == {0: "20GiB", 1: "20GiB", "cpu": "64GiB", "disk": 1000}
    assert Placement().memory_map() is None and not Placement().active
    for text, message in (("gpu0=1GiB", "DEVICE=AMOUNT"), ("cpu", "DEVICE=AMOUNT"), ("cpu=lots", "DEVICE=AMOUNT")):
        with pytest.raises(ValueError, match=message):
            Placement(device_map="auto", max_memory=text)
    with pytest.raises(ValueError, match="twice"):
        Placement(device_map="auto", max_memory="cpu=1GiB,cpu=2GiB")
    with pytest.raises(ValueError, match="give device_map too"):
        Placement(max_memory="cpu=1GiB")
    with pytest.raises(ValueError, match="device_map must be"):
        Placement(device_map="everywhere")
    with pytest.raises(ValueError, match="unknown placement"):
        Placement.from_dict({"device_map": "auto", "gpus": 2})
    assert Placement.from_dict(placement.to_dict()) == placement


def test_loading_refuses_a_device_map_it_cannot_apply():
    with pytest.raises(ModelLoadError, match="not both"):
        LoadOptions(device="cpu", placement=Placement(device_map="auto"))
    with pytest.raises(ModelLoadError, match="built in memory"):
        load_model("builtin:tiny-llama", LoadOptions(placement=Placement(device_map="auto")))


def test_offloaded_probe_gives_the_plain_report(both, safety_set, utility_set):
    from ssah_engine.probe import ProbeConfig, run_probe
    from ssah_engine.probe.interventions import orthogonalize_weights

    plain, spread = both
    unit_map = run_audit(plain, safety_set, utility_set, CONFIG)
    config = ProbeConfig(ks=(2,), queries=2, calibration=12, batch_size=5)
    expected = run_probe(plain, safety_set, utility_set, config, unit_map=unit_map)
    found = run_probe(spread, safety_set, utility_set, config, unit_map=unit_map)
    torch.testing.assert_close(found.direction.directions, expected.direction.directions, rtol=1e-5, atol=1e-6)
    for name in ("cosine", "write"):  # unit writes read the offloaded layers' weights
        torch.testing.assert_close(found.unit_scores[name], expected.unit_scores[name], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="offloaded"):
        orthogonalize_weights(spread.model, found.direction.directions[0])


def test_offloaded_ablated_evaluation_gives_the_plain_numbers(both, safety_set, utility_set, eval_files):
    from ssah_engine.evaluation import evaluate

    plain, spread = both
    protocol = eval_files.replace(conditions=("no_system",))
    unit_map = run_audit(plain, safety_set, utility_set, CONFIG)
    results = []
    for loaded in (plain, spread):
        with ablate(loaded.model, unit_map, _units(unit_map), compensation="safety"):
            results.append(evaluate(loaded, protocol))
    expected, found = results
    for name in ("harmful", "harmless"):
        assert [r["response"] for r in found["records"][name]] == [r["response"] for r in expected["records"][name]]
    margins = [[r["margin"] for r in result["records"]["harmful"]] for result in results]
    assert margins[1] == pytest.approx(margins[0], rel=1e-5, abs=1e-6)
    assert found["protocol"]["hash"] == expected["protocol"]["hash"]
    for name in ("perplexity", "response_nll"):
        assert found["utility"][name] == pytest.approx(expected["utility"][name], rel=1e-5)
