"""Masked fine-tuning: frozen elements stay bit-identical, trainable units move, loss falls, resume is exact."""

import pytest
import torch

from ssah_engine.architectures import describe
from ssah_engine.classes import LABEL
from ssah_engine.finetune import FinetuneConfig, FrozenSlices, ParamMasks, build_masks, run_finetune
from ssah_engine.finetune.batches import StepBatches
from ssah_engine.finetune.optimizer import make_optimizer
from ssah_engine.finetune.trainer import train_step
from ssah_engine.loading import LoadedModel
from ssah_engine.testing import tiny_model, tiny_tokenizer
from ssah_engine.unitmap import UnitMap
from ssah_engine.units import UnitSpace

from .conftest import make_dataset

SCU, UCU, CU, RU = (LABEL[name] for name in ("SCU", "UCU", "CU", "RU"))
TRAIN = dict(lr=1e-2, weight_decay=0.1, warmup_ratio=0.0, batch_size=4, max_steps=4, max_length=64, log_every=1)


# One tokenizer shared by every run (built once: it is the slow part of a tiny model).
TOKENIZER = tiny_tokenizer()


def loaded_model(family: str) -> LoadedModel:
    model, _ = tiny_model(family)
    return LoadedModel(model, TOKENIZER, f"builtin:tiny-{family}", f"builtin:tiny-{family}")


def planted_map(space: UnitSpace, seed: int = 0) -> UnitMap:
    """Random labels, with hand-placed heads so both KV-group cases occur in every mode."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 4, (space.size,), generator=generator).to(torch.int8)
    heads, _ = space.split(labels)
    heads[0] = torch.tensor([SCU, SCU, SCU, UCU])  # layer 0: group 0 all frozen in (i)/(ii), group 1 mixed
    heads[1] = torch.tensor([RU, CU, RU, RU])  # layer 1: budget trains group 0's k/v (one RU head), group 1
    return UnitMap(
        space=space,
        labels=labels,
        z_safety=torch.randn(space.size, generator=generator, dtype=torch.float64),
        z_utility=torch.randn(space.size, generator=generator, dtype=torch.float64),
        head_input_mean=torch.zeros(space.num_layers, space.num_heads * space.head_dim),
        neuron_input_mean=torch.zeros(space.num_layers, space.intermediate_size),
    )


def sft_set(count: int = 8):
    return make_dataset("sft", [(f"Say the number {i}.", f"The number is {i}, and that is all.") for i in range(count)])


def expected_top_cu(unit_map: UnitMap, fraction: float) -> set[int]:
    """Greedy by z_S over CU, independent of the engine's implementation."""
    weights = unit_map.space.param_weights()
    budget, used, chosen = fraction * float(weights.sum()), 0.0, set()
    cu = [i for i in range(unit_map.space.size) if unit_map.labels[i] == CU]
    for unit in sorted(cu, key=lambda i: -float(unit_map.z_safety[i])):
        if used + float(weights[unit]) > budget:
            break
        used += float(weights[unit])
        chosen.add(unit)
    return chosen


def unit_slices(model, space: UnitSpace):
    """(unit index, kind, tensor view getter) for every piece of every head, KV group and neuron."""
    layout = describe(model)
    hd, size = layout.head_dim, layout.intermediate_size
    pieces = []
    for layer in layout.layers:
        i = layer.index
        for h in range(layout.num_heads):
            unit = i * layout.num_heads + h
            q0 = layer.q.offset + h * hd
            pieces.append((("head", unit), f"q{h}", layer.q.linear.weight, lambda w, a=q0: w[a : a + hd]))
            pieces.append((("head", unit), f"o{h}", layer.o.weight, lambda w, a=h * hd: w[:, a : a + hd]))
        for g in range(layout.num_kv_heads):
            heads = [i * layout.num_heads + g * layout.group_size + k for k in range(layout.group_size)]
            for part in (layer.k, layer.v):
                start = part.offset + g * hd
                pieces.append((("group", tuple(heads)), "kv", part.linear.weight, lambda w, a=start: w[a : a + hd]))
        for n in range(size):
            unit = space.total_heads + i * size + n
            pieces.append((("neuron", unit), "gate", layer.gate.linear.weight, lambda w, a=layer.gate.offset + n: w[a]))
            pieces.append((("neuron", unit), "up", layer.up.linear.weight, lambda w, a=layer.up.offset + n: w[a]))
            pieces.append((("neuron", unit), "down", layer.down.weight, lambda w, a=n: w[:, a]))
    return pieces


def assert_units(model, before: dict, space: UnitSpace, frozen_units: torch.Tensor, rule: str = "function"):
    """Every frozen unit's slices are bit-identical; every trainable unit's slices changed.

    A KV group is frozen when any of its query heads is (rule "function") or all of them ("rows").
    """
    names = {id(p): name for name, p in model.named_parameters()}
    checked = {"frozen": 0, "trainable": 0}
    group_frozen = (lambda units: units.any()) if rule == "function" else (lambda units: units.all())
    for (kind, key), label, weight, view in unit_slices(model, space):
        frozen = bool(group_frozen(frozen_units[list(key)])) if kind == "group" else bool(frozen_units[key])
        old, new = view(before[names[id(weight)]]), view(weight.detach())
        if frozen:
            assert torch.equal(old, new), (kind, key, label)
        else:
            assert not torch.equal(old, new), (kind, key, label)
        checked["frozen" if frozen else "trainable"] += 1
    return checked


def snapshot(model) -> dict:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


CASES = {
    "full": dict(mode="full"),
    "freeze-i": dict(mode="freeze", setting="i"),
    "freeze-ii": dict(mode="freeze", setting="ii"),
    "freeze-classes": dict(mode="freeze", freeze_classes=("ESU", "RU")),
    "budget": dict(mode="budget"),
    "layers": dict(mode="full", freeze_layers="1"),
}


def norm_stays(name: str, space: UnitSpace, frozen: torch.Tensor, rule: str) -> bool:
    """Llama/Phi-3 layer norms under rule "function": the pre-attention norm is held by any frozen head
    of its layer, the pre-MLP norm by any frozen neuron; rule "rows" holds none."""
    if rule != "function" or ".layers." not in name:
        return False
    layer = int(name.split(".layers.")[1].split(".")[0])
    heads, neurons = space.split(frozen)
    return bool(heads[layer].any()) if "input_layernorm" in name else bool(neurons[layer].any())


@pytest.mark.parametrize("rule", ["function", "rows"])
@pytest.mark.parametrize("family", ["llama", "phi3"])
@pytest.mark.parametrize("case", list(CASES))
def test_frozen_elements_stay_and_trainable_units_move(family, case, rule, tmp_path):
    loaded = loaded_model(family)
    model = loaded.model
    space = UnitSpace.from_layout(describe(model))
    unit_map = planted_map(space)
    config = FinetuneConfig(**CASES[case], **TRAIN, freeze_rule=rule)
    before = snapshot(model)
    result = run_finetune(loaded, sft_set(), config, unit_map, tmp_path)

    labels = unit_map.labels
    expected = {
        "full": torch.zeros(space.size, dtype=torch.bool),
        "freeze-i": labels == SCU,
        "freeze-ii": (labels == SCU) | (labels == CU),
        "freeze-classes": (labels == SCU) | (labels == RU),
        "budget": labels != RU,
        "layers": torch.zeros(space.size, dtype=torch.bool),
    }[case].clone()
    if case == "freeze-i":
        expected[list(expected_top_cu(unit_map, 0.06))] = True
    if case == "layers":
        heads, neurons = space.split(expected)
        heads[1], neurons[1] = True, True
    masks = ParamMasks.load(tmp_path / "masks.safetensors")
    assert torch.equal(masks.frozen_units, expected)
    checked = assert_units(model, before, space, expected, rule)
    assert checked["trainable"] > 0 and (case == "full" or checked["frozen"] > 0)

    # Tensors outside units: trainable by default except in budget mode; a frozen layer keeps its norms,
    # and under rule "function" so does a layer norm a frozen unit passes through.
    for name, parameter in model.named_parameters():
        if "norm" in name or "embed" in name or "lm_head" in name:
            stays = case == "budget" or (case == "layers" and ".layers.1." in name)
            stays = stays or norm_stays(name, space, expected, rule)
            assert torch.equal(parameter, before[name]) == stays, name
    assert result.masks["freeze_rule"] == rule
    assert (result.masks["frozen_beyond_rows_rule"]["parameters"] > 0) == (
        rule == "function" and case not in ("full", "layers")
    )
    assert result.history[-1]["loss"] < result.history[0]["loss"]


def test_setting_i_freezes_scu_plus_top_cu_by_safety_score():
    model, _ = tiny_model("llama")
    space = UnitSpace.from_layout(describe(model))
    unit_map = planted_map(space, seed=3)
    from ssah_engine.finetune import frozen_units_for

    frozen = frozen_units_for(FinetuneConfig(mode="freeze", setting="i", cu_top=0.2), space, unit_map)
    top = expected_top_cu(unit_map, 0.2)
    assert len(top) > 3
    assert set(torch.nonzero(frozen & (unit_map.labels == CU)).squeeze(1).tolist()) == top
    assert torch.equal(frozen & (unit_map.labels != CU), unit_map.labels == SCU)


def test_kv_group_freezes_when_any_query_head_is_frozen():
    model, _ = tiny_model("phi3")  # fused qkv: k/v rows sit after the q rows
    layout = describe(model)
    space = UnitSpace.from_layout(layout)
    units = torch.zeros(space.size, dtype=torch.bool)
    heads, _ = space.split(units)
    heads[0] = torch.tensor([True, False, False, False])  # group 0 half, group 1 free
    masks = build_masks(model, units)
    assert masks.frozen_kv_groups.tolist() == [[True, False], [False, False]]
    name = "model.layers.0.self_attn.qkv_proj.weight"
    rows = masks.trainable(name, model.get_parameter(name).shape).all(1)
    hd, q_size, kv_size = layout.head_dim, layout.num_heads * layout.head_dim, layout.num_kv_heads * layout.head_dim
    for start in (q_size, q_size + kv_size):  # k, then v: group 0 frozen, group 1 trains
        assert not rows[start : start + hd].any() and rows[start + hd : start + 2 * hd].all()
    # Two k/v heads of hd rows, 32 columns each, plus the layer's pre-attention norm (32).
    assert masks.beyond_rows == {"kv_rows": 2 * hd * 32, "norms": 32}


def test_rows_rule_freezes_a_kv_group_only_when_every_query_head_is_frozen():
    model, _ = tiny_model("phi3")  # fused qkv: k/v rows sit after the q rows
    layout = describe(model)
    space = UnitSpace.from_layout(layout)
    units = torch.zeros(space.size, dtype=torch.bool)
    heads, _ = space.split(units)
    heads[0] = torch.tensor([True, True, False, True])  # group 0 whole, group 1 half
    heads[1] = torch.tensor([True, False, True, False])  # no whole group
    masks = build_masks(model, units, rule="rows")
    assert masks.frozen_kv_groups.tolist() == [[True, False], [False, False]]
    hd, q_size, kv_size = layout.head_dim, layout.num_heads * layout.head_dim, layout.num_kv_heads * layout.head_dim
    name = "model.layers.0.self_attn.qkv_proj.weight"
    trainable = masks.trainable(name, model.get_parameter(name).shape)
    rows = trainable.all(1)
    assert not rows[: hd * 2].any() and rows[hd * 2 : hd * 3].all() and not rows[hd * 3 : q_size].any()
    for start in (q_size, q_size + kv_size):  # k, then v
        assert not rows[start : start + hd].any() and rows[start + hd : start + 2 * hd].all()
    name = "model.layers.1.self_attn.qkv_proj.weight"
    assert masks.trainable(name, model.get_parameter(name).shape).all(1)[q_size:].all()


def test_zeroing_gradients_alone_would_let_weight_decay_move_frozen_rows():
    """The restore step is what keeps frozen slices exact: without it this test's check fails."""
    model, tokenizer = tiny_model("llama")[0], TOKENIZER
    space = UnitSpace.from_layout(describe(model))
    units = torch.zeros(space.size, dtype=torch.bool)
    units[space.total_heads : space.total_heads + 5] = True  # five neurons of layer 0
    masks = build_masks(model, units)
    masks.apply(model)
    config = FinetuneConfig(**TRAIN)
    window = StepBatches(tokenizer, sft_set(), config).window(0)
    gate = model.model.layers[0].mlp.gate_proj.weight
    original = gate[:5].detach().clone()

    frozen = FrozenSlices(model, masks)
    restore = frozen.restore
    frozen.restore = lambda: None  # zero the gradients, but skip the write-back
    optimizer = make_optimizer(model, config)
    train_step(model, optimizer, window, frozen, config)
    assert not torch.equal(gate[:5], original)  # decoupled weight decay shrank them
    restore()
    train_step(model, optimizer, window, frozen, config)
    restore()
    assert torch.equal(gate[:5], original)


class Crash(Exception):
    pass


def test_resume_from_a_checkpoint_gives_the_same_weights(tmp_path):
    config = FinetuneConfig(
        mode="freeze", setting="i", **{**TRAIN, "max_steps": 6, "batch_size": 2}, grad_accum=2, checkpoint_every=3
    )
    space = UnitSpace.from_layout(describe(tiny_model("llama")[0]))
    unit_map = planted_map(space)

    straight = loaded_model("llama")
    run_finetune(straight, sft_set(10), config, unit_map, tmp_path / "a")

    def crash_at_step_5(stage, fraction):
        if stage.startswith("step 5/"):
            raise Crash

    crashed = loaded_model("llama")
    with pytest.raises(Crash):
        run_finetune(crashed, sft_set(10), config, unit_map, tmp_path / "b", progress=crash_at_step_5)
    assert (tmp_path / "b" / "checkpoints" / "step-3").is_dir()
    with pytest.raises(ValueError, match="resume it"):
        run_finetune(loaded_model("llama"), sft_set(10), config, unit_map, tmp_path / "b")

    resumed = loaded_model("llama")
    torch.manual_seed(123)  # the run must restore its own RNG state
    result = run_finetune(
        resumed, sft_set(10), FinetuneConfig(**{**config.to_dict(), "resume": True}), unit_map, tmp_path / "b"
    )
    assert len(result.history) == 6
    for (name, a), (_, b) in zip(straight.model.named_parameters(), resumed.model.named_parameters()):
        assert torch.equal(a, b), name
    assert not torch.equal(straight.model.lm_head.weight, tiny_model("llama")[0].lm_head.weight)


def test_budget_mode_finds_redundant_units_on_utility_alone(tmp_path, utility_set):
    loaded = loaded_model("llama")
    before = snapshot(loaded.model)
    config = FinetuneConfig(mode="budget", budget=0.2, **TRAIN)
    result = run_finetune(loaded, sft_set(), config, None, tmp_path, utility=utility_set)
    budget_map = UnitMap.load(tmp_path / "budget_units")
    assert budget_map.z_safety is None
    weights = budget_map.space.param_weights()
    ru = budget_map.mask("RU")
    assert 0.15 < float(weights[ru].sum() / weights.sum()) <= 0.2
    assert_units(loaded.model, before, budget_map.space, ~ru)
    assert result.masks["trainable_fraction"] < 0.2
    assert torch.equal(loaded.model.model.embed_tokens.weight, before["model.embed_tokens.weight"])


def test_saved_model_loads_and_evaluation_hook_runs_before_and_after(tmp_path):
    from transformers import AutoModelForCausalLM

    from ssah_engine.losses import response_nll

    loaded = loaded_model("llama")
    pairs = [(e.prompt, e.response) for e in sft_set().examples]
    result = run_finetune(
        loaded,
        sft_set(),
        FinetuneConfig(**TRAIN, evaluate=True),
        None,
        tmp_path,
        evaluate_fn=lambda lm: {"nll": response_nll(lm.model, lm.tokenizer, pairs)},
    )
    assert result.evaluation["after"]["nll"] < result.evaluation["before"]["nll"]
    reloaded = AutoModelForCausalLM.from_pretrained(result.model_dir)
    for name, parameter in loaded.model.named_parameters():
        assert torch.equal(reloaded.get_parameter(name), parameter), name
    for file in ("finetune_config.json", "loss.json", "masks.safetensors", "evaluation.json"):
        assert (tmp_path / file).is_file(), file


def test_config_refuses_bad_settings():
    with pytest.raises(ValueError, match="only apply to mode 'freeze'"):
        FinetuneConfig(mode="budget", setting="i")
    with pytest.raises(ValueError, match="unknown unit class"):
        FinetuneConfig(mode="freeze", freeze_classes=("XYZ",))
    with pytest.raises(ValueError, match="layer range"):
        FinetuneConfig(freeze_layers="a-b")
    assert FinetuneConfig(freeze_layers="0-2,5").layers_frozen == (0, 1, 2, 5)
