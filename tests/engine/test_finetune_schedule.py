"""The paper's schedule: freeze arms train twice as long, setting (i) after one epoch of setting (ii)."""

import pytest

from ssah_engine.architectures import describe
from ssah_engine.finetune import FinetuneConfig, run_finetune
from ssah_engine.finetune.selection import frozen_units_for
from ssah_engine.units import UnitSpace

from .test_finetune import (
    TRAIN,
    assert_units,
    loaded_model,
    planted_map,
    sft_set,
    snapshot,
)

PAPER = {**TRAIN, "max_steps": 3, "paper_schedule": True}  # 8 pairs, batch 4: 2 steps per epoch


def test_setting_i_runs_one_epoch_of_setting_ii_first_and_twice_the_steps(tmp_path):
    loaded = loaded_model("llama")
    space = UnitSpace.from_layout(describe(loaded.model))
    unit_map = planted_map(space)
    config = FinetuneConfig(mode="freeze", setting="i", **PAPER)
    frozen_i = frozen_units_for(config, space, unit_map)
    frozen_ii = frozen_units_for(FinetuneConfig(mode="freeze", setting="ii"), space, unit_map)
    assert (frozen_ii & ~frozen_i).any()  # units that train only in the second phase
    before = snapshot(loaded.model)
    after_warmup = {}

    def at_step_2(stage, fraction):
        if stage.startswith("step 2/"):
            after_warmup.update(snapshot(loaded.model))

    result = run_finetune(loaded, sft_set(), config, unit_map, tmp_path, progress=at_step_2)
    assert len(result.history) == 6
    assert result.schedule["name"] == "paper" and result.schedule["length_factor"] == 2
    assert [(p["setting"], p["first_step"], p["last_step"]) for p in result.schedule["phases"]] == [
        ("ii", 1, 2),
        ("i", 3, 6),
    ]
    # After the first epoch only what setting (ii) trains has moved; at the end, what (i) trains.
    model = loaded.model
    current = snapshot(model)
    for name, weights in after_warmup.items():
        model.get_parameter(name).data.copy_(weights)
    assert_units(model, before, space, frozen_ii)
    for name, weights in current.items():
        model.get_parameter(name).data.copy_(weights)
    assert_units(model, before, space, frozen_i)


def test_setting_ii_doubles_the_run_and_full_mode_is_the_plain_arm(tmp_path):
    space = UnitSpace.from_layout(describe(loaded_model("llama").model))
    unit_map = planted_map(space)
    doubled = run_finetune(
        loaded_model("llama"),
        sft_set(),
        FinetuneConfig(mode="freeze", setting="ii", **PAPER),
        unit_map,
        tmp_path / "ii",
    )
    assert len(doubled.history) == 6 and [p["setting"] for p in doubled.schedule["phases"]] == ["ii"]
    plain = run_finetune(loaded_model("llama"), sft_set(), FinetuneConfig(**PAPER), None, tmp_path / "full")
    assert len(plain.history) == 3 and plain.schedule["arm"] == "plain" and plain.schedule["name"] == "paper"
    equal = run_finetune(
        loaded_model("llama"),
        sft_set(),
        FinetuneConfig(mode="freeze", setting="i", **TRAIN),
        unit_map,
        tmp_path / "equal",
    )
    assert equal.schedule["name"] == "equal" and len(equal.history) == TRAIN["max_steps"]


def test_paper_schedule_is_refused_where_it_means_nothing():
    with pytest.raises(ValueError, match="paper_schedule"):
        FinetuneConfig(mode="budget", paper_schedule=True)
    assert FinetuneConfig(mode="freeze", setting="i", paper_schedule=True).length_factor == 2
    assert FinetuneConfig(paper_schedule=True).length_factor == 1
