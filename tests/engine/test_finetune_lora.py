"""Safety-aware LoRA: the merged update is exactly zero outside RU, the adapter loads as a model source."""

import json

import pytest
import torch

from ssah_engine.architectures import describe
from ssah_engine.classes import LABEL
from ssah_engine.finetune import FinetuneConfig, run_finetune
from ssah_engine.loading import LoadedModel, load_model
from ssah_engine.testing import tiny_model, tiny_tokenizer
from ssah_engine.unitmap import UnitMap
from ssah_engine.units import UnitSpace

from .conftest import make_dataset

RU, CU = LABEL["RU"], LABEL["CU"]
TOKENIZER = tiny_tokenizer()
IDS = torch.tensor([[5, 17, 99, 42, 8, 230, 11, 3]])
TRAIN = dict(lr=2e-2, warmup_ratio=0.0, batch_size=4, max_steps=8, max_length=64, log_every=1, lora_rank=4)


def ru_map(space: UnitSpace, seed: int = 0) -> UnitMap:
    """Half the units RU at random; layer 1's second KV group all RU so its k/v rows train too."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.where(torch.rand(space.size, generator=generator) < 0.5, RU, CU).to(torch.int8)
    heads, _ = space.split(labels)
    heads[1] = torch.tensor([CU, RU, RU, RU])
    return UnitMap(
        space=space,
        labels=labels,
        z_safety=None,
        z_utility=torch.randn(space.size, generator=generator, dtype=torch.float64),
        head_input_mean=torch.zeros(space.num_layers, space.num_heads * space.head_dim),
        neuron_input_mean=torch.zeros(space.num_layers, space.intermediate_size),
    )


def ru_positions(model, unit_map: UnitMap) -> dict[str, tuple[int, set[int]]]:
    """weight name -> (dim, rows/columns RU may change), worked out from the labels by hand."""
    layout = describe(model)
    names = {id(parameter): name for name, parameter in model.named_parameters()}
    heads, neurons = unit_map.space.split(unit_map.labels == RU)
    hd, group = layout.head_dim, layout.group_size
    allowed: dict[str, tuple[int, set[int]]] = {}

    def add(linear, dim, positions):
        allowed.setdefault(names[id(linear.weight)], (dim, set()))[1].update(positions)

    for layer in layout.layers:
        i = layer.index
        for h in range(layout.num_heads):
            if heads[i][h]:
                add(layer.q.linear, 0, range(layer.q.offset + h * hd, layer.q.offset + (h + 1) * hd))
                add(layer.o, 1, range(h * hd, (h + 1) * hd))
        for g in range(layout.num_kv_heads):
            whole_group = bool(heads[i][g * group : (g + 1) * group].all())  # a frozen head holds its k/v
            for part in (layer.k, layer.v):
                add(part.linear, 0, range(part.offset + g * hd, part.offset + (g + 1) * hd) if whole_group else ())
        for n in range(layout.intermediate_size):
            if neurons[i][n]:
                add(layer.gate.linear, 0, [layer.gate.offset + n])
                add(layer.up.linear, 0, [layer.up.offset + n])
                add(layer.down, 1, [n])
    return allowed


def _logits(model):
    with torch.no_grad():
        return model(IDS).logits


@pytest.mark.parametrize("family", ["llama", "phi3"])
def test_lora_changes_only_ru_rows_and_columns_and_loads_as_an_adapter(family, tmp_path):
    model, _ = tiny_model(family)
    base = {name: parameter.detach().clone() for name, parameter in model.named_parameters()}
    source = f"builtin:tiny-{family}"
    loaded = LoadedModel(model, TOKENIZER, source, source)
    unit_map = ru_map(UnitSpace.from_layout(describe(model)))
    allowed = ru_positions(model, unit_map)
    data = make_dataset("sft", [(f"Say the number {i}.", f"The number is {i}, and that is all.") for i in range(8)])

    result = run_finetune(loaded, data, FinetuneConfig(mode="budget", **TRAIN), unit_map, tmp_path / "out")

    merged = dict(loaded.model.named_parameters())
    assert set(merged) == set(base)  # plain linears again, no lora tensors left
    moved = 0
    for name, before in base.items():
        delta = merged[name].detach() - before
        if name not in allowed:
            assert torch.equal(delta, torch.zeros_like(delta)), f"{name} changed but holds no unit"
            continue
        dim, positions = allowed[name]
        outside = torch.ones(delta.shape[dim], dtype=torch.bool)
        outside[list(positions)] = False
        assert torch.equal(delta.index_select(dim, torch.nonzero(outside).squeeze(1)).abs().sum(), torch.tensor(0.0)), (
            f"{name} changed outside RU"
        )
        moved += int(positions and delta.abs().sum() > 0)
    assert moved == sum(1 for _, positions in allowed.values() if positions)  # every tensor with RU moved

    losses = [entry["loss"] for entry in result.history]
    assert len(losses) == 8 and sum(losses[-2:]) / 2 < 0.98 * sum(losses[:2]) / 2  # 5.54 -> 5.37 on llama
    assert result.lora is not None and result.lora["rank"] == 4
    assert 0 < result.lora["trainable_parameters"] < result.lora["adapter_parameters"]

    adapter = result.adapter_dir
    assert (
        adapter is not None
        and json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"] == source
    )
    expected = _logits(loaded.model)
    assert not torch.allclose(expected, _logits(tiny_model(family)[0]))
    assert torch.allclose(_logits(load_model(str(adapter)).model), expected, atol=1e-5)
    assert torch.allclose(_logits(load_model(str(result.model_dir)).model), expected, atol=1e-6)
    record = json.loads((tmp_path / "out" / "finetune_config.json").read_text())
    assert record["lora"]["targets"] == result.lora["targets"] and record["config"]["lora_rank"] == 4
    assert '"lora": {' in (result.model_dir / "README.md").read_text()  # the model card names the adapter


def test_lora_settings_are_checked():
    with pytest.raises(ValueError, match="mode 'budget'"):
        FinetuneConfig(mode="full", lora_rank=4)
    with pytest.raises(ValueError, match="only the adapter trains"):
        FinetuneConfig(mode="budget", lora_rank=4, train_norms=True)
    with pytest.raises(ValueError, match="lora_alpha needs lora_rank"):
        FinetuneConfig(mode="budget", lora_alpha=8)


class Crash(Exception):
    pass


def test_a_lora_run_resumes_from_its_checkpoint_to_the_same_weights(tmp_path):
    space = UnitSpace.from_layout(describe(tiny_model("llama")[0]))
    unit_map = ru_map(space)
    data = make_dataset("sft", [(f"Say {i}.", f"I say {i}, once.") for i in range(8)])
    config = FinetuneConfig(mode="budget", **{**TRAIN, "max_steps": 4, "batch_size": 2}, checkpoint_every=2)

    def loaded():
        return LoadedModel(tiny_model("llama")[0], TOKENIZER, "builtin:tiny-llama", "builtin:tiny-llama")

    straight = loaded()
    run_finetune(straight, data, config, unit_map, tmp_path / "a")

    def crash_at_step_3(stage, fraction):
        if stage.startswith("step 3/"):
            raise Crash

    with pytest.raises(Crash):
        run_finetune(loaded(), data, config, unit_map, tmp_path / "b", progress=crash_at_step_3)
    assert (tmp_path / "b" / "checkpoints" / "step-2").is_dir()
    resumed = loaded()
    torch.manual_seed(123)  # the run restores its own RNG state; the adapter's init is seeded by the config
    result = run_finetune(
        resumed, data, FinetuneConfig(**{**config.to_dict(), "resume": True}), unit_map, tmp_path / "b"
    )
    assert len(result.history) == 4
    for (name, a), (_, b) in zip(straight.model.named_parameters(), resumed.model.named_parameters()):
        assert torch.equal(a, b), name
