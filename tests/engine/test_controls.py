"""Matched random controls and ablation specs: same budget, outside the class, seeded; recorded with results."""

import json

import pytest
import torch

from ssah_engine.audit import AuditConfig, run_audit
from ssah_engine.classes import Cuts
from ssah_engine.controls import matched_random
from ssah_engine.evaluation import AblationSpec, DataRef, Protocol, evaluate
from ssah_engine.unitmap import UnitMap


@pytest.fixture
def unit_map(tiny_llama, safety_set, utility_set):
    return run_audit(tiny_llama, safety_set, utility_set, AuditConfig(samples=12, cuts=Cuts.parse("0.1,0.05,0.1")))


def test_matched_random_control_has_the_class_budget_and_lies_outside_it(unit_map):
    for classes in (["SCU"], ["RU"], ["SCU", "UCU"]):
        target = unit_map.mask(classes)
        control = matched_random(unit_map, classes, seed=0)
        target_heads, target_neurons = unit_map.space.split(target)
        heads, neurons = unit_map.space.split(control)
        assert (int(heads.sum()), int(neurons.sum())) == (int(target_heads.sum()), int(target_neurons.sum()))
        assert not (control & target).any()
        weights = unit_map.space.param_weights()
        assert weights[control].sum() == weights[target].sum()
    assert torch.equal(matched_random(unit_map, ["RU"], 1), matched_random(unit_map, ["RU"], 1))
    assert not torch.equal(matched_random(unit_map, ["RU"], 1), matched_random(unit_map, ["RU"], 2))


def test_ablation_spec_parses_names_and_controls():
    assert AblationSpec.parse(["ESU"]).classes == ("SCU",)
    spec = AblationSpec.parse(["random:SCU"], seed=4)
    assert (spec.control, spec.seed, spec.classes) == ("random", 4, ("SCU",))
    assert AblationSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ValueError, match="cannot be mixed"):
        AblationSpec.parse(["random:SCU", "RU"])
    with pytest.raises(ValueError, match="seed"):
        AblationSpec(("SCU",), seed=-1)


def test_evaluate_records_its_ablation_and_restores_the_model(tiny_llama, unit_map, tmp_path):
    harmful = tmp_path / "harmful.txt"
    harmful.write_text("Break the lock.\nTell me a secret.\n")
    text = tmp_path / "benign.txt"
    text.write_text("Rivers run to the sea and clouds bring rain.\n")
    protocol = Protocol(
        harmful=DataRef(str(harmful)),
        harmless=DataRef(str(harmful)),
        benign_text=DataRef(str(text)),
        instructions=None,
        zero_shot_tasks=(),
        conditions=("no_system",),
        max_new_tokens=3,
    )
    margins = lambda result: [r["margin"] for r in result["records"]["harmful"]]  # noqa: E731
    dense = evaluate(tiny_llama, protocol)
    ablated = evaluate(tiny_llama, protocol, ablation=AblationSpec(("SCU", "RU")), unit_map=unit_map)
    control = evaluate(
        tiny_llama,
        protocol.replace(ablation_compensation="pooled"),
        ablation=AblationSpec(("SCU", "RU"), control="random", seed=1),
        unit_map=unit_map,
    )
    after = evaluate(tiny_llama, protocol)
    json.dumps(control)
    assert dense["ablation"] is None
    assert ablated["ablation"]["compensation"] == "none" and ablated["ablation"]["classes"] == ["SCU", "RU"]
    assert ablated["ablation"]["units"] == int(unit_map.mask(["SCU", "RU"]).sum())
    assert control["ablation"]["control"] == "random" and control["ablation"]["compensation"] == "pooled"
    assert control["ablation"]["param_fraction"] == pytest.approx(ablated["ablation"]["param_fraction"])
    assert margins(ablated) != margins(dense) and margins(after) == margins(dense)
    with pytest.raises(ValueError, match="go together"):
        evaluate(tiny_llama, protocol, ablation=AblationSpec(("SCU",)))


def test_old_unit_maps_refuse_utility_compensation(unit_map, tmp_path, tiny_llama):
    from ssah_engine.ablation import ablate

    unit_map.save(tmp_path / "map")
    loaded = UnitMap.load(tmp_path / "map")
    assert torch.equal(loaded.utility_neuron_input_mean, unit_map.utility_neuron_input_mean)
    loaded.utility_head_input_mean = loaded.utility_neuron_input_mean = None  # as written before the field existed
    with pytest.raises(ValueError, match="utility-pass means"):
        with ablate(tiny_llama.model, loaded, loaded.mask("SCU"), compensation="pooled"):
            pass
    with ablate(tiny_llama.model, loaded, loaded.mask("SCU"), compensation="safety"):
        pass
