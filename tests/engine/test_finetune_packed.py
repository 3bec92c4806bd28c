"""PackedAdamW: moments only for trainable rows/columns, the dense masked AdamW's updates bit for bit."""

import copy

import pytest
import torch

from ssah_engine.architectures import describe
from ssah_engine.finetune import FinetuneConfig, FrozenSlices, build_masks, run_finetune
from ssah_engine.finetune.batches import StepBatches
from ssah_engine.finetune.optimizer import make_optimizer
from ssah_engine.finetune.packed import PACKING_KEY, PackedAdamW, Packing, packings_for
from ssah_engine.finetune.trainer import train_step
from ssah_engine.units import UnitSpace

from .test_finetune import TOKENIZER, TRAIN, loaded_model, planted_map, sft_set

PAPER = {**TRAIN, "max_steps": 3, "paper_schedule": True}  # 2 steps of setting (ii), then 4 of (i)


def mixed_masks(model):
    """Row masks (q, k/v, gate, up, q bias), column masks (o, down) and a layer frozen whole."""
    space = UnitSpace.from_layout(describe(model))
    generator = torch.Generator().manual_seed(1)
    units = torch.rand(space.size, generator=generator) < 0.4
    return build_masks(model, units, freeze_layers=(1,))


def train_both(family: str, steps: int):
    """The same steps under the dense masked AdamW (snapshot + restore) and under PackedAdamW."""
    dense_model = loaded_model(family).model
    packed_model = copy.deepcopy(dense_model)
    base = copy.deepcopy(dense_model)
    masks = mixed_masks(dense_model)
    window = StepBatches(TOKENIZER, sft_set(), FinetuneConfig(**TRAIN)).window(0)
    runs = []
    for model, packed in ((dense_model, False), (packed_model, True)):
        config = FinetuneConfig(**TRAIN, packed_optimizer=packed)
        masks.apply(model)
        optimizer = make_optimizer(model, config, masks)
        frozen = FrozenSlices(model, masks, snapshot=not packed)
        for _ in range(steps):
            train_step(model, optimizer, window, frozen, config)
        runs.append((model, optimizer))
    return base, masks, runs


@pytest.mark.parametrize("family", ["llama", "phi3"])  # phi3: fused qkv/gate_up, rows through offsets
def test_packed_updates_equal_the_dense_masked_adamw_bit_for_bit(family):
    base, masks, ((dense, dense_opt), (packed, packed_opt)) = train_both(family, steps=4)
    assert isinstance(packed_opt, PackedAdamW) and not isinstance(dense_opt, PackedAdamW)
    assert (
        masks.whole
        and any(p.dim == 0 for p in masks.slices.values())
        and any(p.dim == 1 for p in masks.slices.values())
    )
    before = dict(base.named_parameters())
    dense_parameters = dict(dense.named_parameters())
    for name, parameter in packed.named_parameters():
        assert torch.equal(parameter, dense_parameters[name]), name
        trainable = masks.trainable(name, parameter.shape)
        assert torch.equal(parameter[~trainable], before[name][~trainable]), name  # frozen: untouched
        if trainable.any() and parameter.ndim == 2:
            assert not torch.equal(parameter[trainable], before[name][trainable]), name  # trainable: moved
    # The moments are the dense ones' trainable entries, in packed shape.
    names = {id(p): name for name, p in packed.named_parameters()}
    for parameter, state in packed_opt.state.items():
        name = names[id(parameter)]
        dense_state = dense_opt.state[dense_parameters[name]]
        assert torch.equal(state["step"], dense_state["step"])
        packing = packed_opt.packings.get(parameter)
        for key in ("exp_avg", "exp_avg_sq"):
            expected = dense_state[key] if packing is None else packing.gather(dense_state[key])
            assert torch.equal(state[key], expected), (name, key)
        if name in masks.slices:
            part = masks.slices[name]
            shape = list(parameter.shape)
            shape[part.dim] -= part.index.numel()
            assert list(state["exp_avg"].shape) == shape, name


def test_state_holds_two_moments_per_trainable_entry_and_no_more():
    model = loaded_model("llama").model
    masks = mixed_masks(model)
    _, _, ((_, dense_opt), (packed, packed_opt)) = train_both("llama", steps=1)
    trainable_bytes = sum(masks.trainable_numel(name, p) * p.element_size() for name, p in packed.named_parameters())
    steps_bytes = sum(state["step"].nbytes for state in packed_opt.state.values())
    assert packed_opt.state_bytes() - steps_bytes == 2 * trainable_bytes
    # The dense path holds moments for the frozen rows/columns of partly frozen tensors too.
    dense_bytes = sum(v.nbytes for state in dense_opt.state.values() for v in state.values())
    held = sum(p.nbytes for name, p in packed.named_parameters() if name not in masks.whole)
    assert dense_bytes - steps_bytes == 2 * held > 2 * trainable_bytes
    rows = {name for name, part in masks.slices.items() if part.dim == 0}
    columns = {name for name, part in masks.slices.items() if part.dim == 1}
    assert any(name.endswith("o_proj.weight") for name in columns)
    assert any(name.endswith("down_proj.weight") for name in columns)
    assert any(name.endswith("q_proj.weight") for name in rows)


def test_a_general_mask_packs_into_a_flat_vector_with_the_same_updates():
    torch.manual_seed(0)
    dense = torch.nn.Linear(37, 29)
    packed = copy.deepcopy(dense)
    mask = torch.rand(29, 37) < 0.3
    dense_opt = torch.optim.AdamW(dense.parameters(), lr=1e-2, weight_decay=0.1, foreach=True)
    packed_opt = PackedAdamW(
        packed.parameters(), lr=1e-2, weight_decay=0.1, foreach=True, packings={packed.weight: Packing(mask=mask)}
    )
    start = dense.weight.detach().clone()
    x = torch.randn(8, 37)
    for _ in range(5):
        for module, optimizer in ((dense, dense_opt), (packed, packed_opt)):
            optimizer.zero_grad()
            module(x).square().sum().backward()
            module.weight.grad.masked_fill_(~mask, 0.0)
            optimizer.step()
        dense.weight.data[~mask] = start[~mask]  # the dense path's write-back
    assert torch.equal(packed.weight, dense.weight) and torch.equal(packed.bias, dense.bias)
    assert torch.equal(packed.weight[~mask], start[~mask])
    assert packed_opt.state[packed.weight]["exp_avg"].shape == (int(mask.sum()),)


def test_state_dict_round_trip_resumes_bit_for_bit(tmp_path):
    """2 steps, save, a fresh optimizer loads, 2 more steps = 4 straight steps."""
    config = FinetuneConfig(**TRAIN)
    window = StepBatches(TOKENIZER, sft_set(), config).window(0)
    straight, resumed = loaded_model("llama").model, loaded_model("llama").model
    masks = mixed_masks(straight)
    for model in (straight, resumed):
        masks.apply(model)
    optimizer = make_optimizer(straight, config, masks)
    for _ in range(4):
        train_step(straight, optimizer, window, FrozenSlices(straight, masks, snapshot=False), config)

    first = make_optimizer(resumed, config, masks)
    for _ in range(2):
        train_step(resumed, first, window, FrozenSlices(resumed, masks, snapshot=False), config)
    torch.save(first.state_dict(), tmp_path / "state.pt")
    saved = torch.load(tmp_path / "state.pt", weights_only=True)
    assert saved[PACKING_KEY]
    second = make_optimizer(resumed, config)  # no masks yet: the saved packing is adopted
    second.load_state_dict(saved)
    second.set_packings(packings_for(resumed, masks))
    for _ in range(2):
        train_step(resumed, second, window, FrozenSlices(resumed, masks, snapshot=False), config)
    for (name, a), (_, b) in zip(straight.named_parameters(), resumed.named_parameters()):
        assert torch.equal(a, b), name


class Crash(Exception):
    pass


def crash_at(step: int):
    def progress(stage, fraction):
        if stage.startswith(f"step {step}/"):
            raise Crash

    return progress


@pytest.mark.parametrize(("first", "then"), [(True, True), (True, False), (False, True)])
def test_run_resumes_across_paths_and_equals_the_dense_run(tmp_path, first, then):
    """A checkpoint of either path resumes on either; every run ends with the dense run's weights."""
    config = FinetuneConfig(mode="freeze", setting="ii", **TRAIN, checkpoint_every=2)
    space = UnitSpace.from_layout(describe(loaded_model("llama").model))
    unit_map = planted_map(space)
    dense = loaded_model("llama")
    run_finetune(
        dense, sft_set(), FinetuneConfig(**{**config.to_dict(), "packed_optimizer": False}), unit_map, tmp_path / "d"
    )
    crashed = loaded_model("llama")
    with pytest.raises(Crash):
        run_finetune(
            crashed,
            sft_set(),
            FinetuneConfig(**{**config.to_dict(), "packed_optimizer": first}),
            unit_map,
            tmp_path / "r",
            progress=crash_at(3),
        )
    state = torch.load(tmp_path / "r" / "checkpoints" / "step-2" / "state.pt", weights_only=True)
    assert bool(state["optimizer"].get(PACKING_KEY)) == first
    resumed = loaded_model("llama")
    values = {**config.to_dict(), "packed_optimizer": then, "resume": True}
    result = run_finetune(resumed, sft_set(), FinetuneConfig(**values), unit_map, tmp_path / "r")
    assert len(result.history) == TRAIN["max_steps"]
    for (name, a), (_, b) in zip(dense.model.named_parameters(), resumed.model.named_parameters()):
        assert torch.equal(a, b), name


def test_paper_schedule_repacks_at_the_phase_change_and_resumes_there(tmp_path):
    """Setting (ii) then (i): entries that start training get zero moments, as under dense AdamW."""
    space = UnitSpace.from_layout(describe(loaded_model("llama").model))
    unit_map = planted_map(space)
    config = FinetuneConfig(mode="freeze", setting="i", **PAPER, checkpoint_every=2)
    dense = loaded_model("llama")
    run_finetune(
        dense, sft_set(), FinetuneConfig(**{**config.to_dict(), "packed_optimizer": False}), unit_map, tmp_path / "d"
    )
    packed = loaded_model("llama")
    with pytest.raises(Crash):  # the checkpoint at step 2 is packed by setting (ii), resumed under (i)
        run_finetune(packed, sft_set(), config, unit_map, tmp_path / "p", progress=crash_at(3))
    resumed = loaded_model("llama")
    result = run_finetune(
        resumed, sft_set(), FinetuneConfig(**{**config.to_dict(), "resume": True}), unit_map, tmp_path / "p"
    )
    assert [p["setting"] for p in result.schedule["phases"]] == ["ii", "i"] and len(result.history) == 6
    for (name, a), (_, b) in zip(dense.model.named_parameters(), resumed.model.named_parameters()):
        assert torch.equal(a, b), name


def test_packed_optimizer_refuses_what_it_does_not_implement():
    layer = torch.nn.Linear(3, 3)
    with pytest.raises(ValueError, match="fused"):
        PackedAdamW(layer.parameters(), fused=True)
    optimizer = PackedAdamW(layer.parameters())
    with pytest.raises(ValueError, match="does not hold"):
        optimizer.set_packings({torch.nn.Parameter(torch.zeros(3, 3)): Packing(dim=0, index=torch.tensor([0]))})
