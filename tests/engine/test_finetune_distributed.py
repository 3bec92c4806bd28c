"""Masked fine-tuning on 2 gloo ranks: frozen slices bit-exact everywhere, trainable ones as a single process."""

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from ssah_engine.architectures import describe
from ssah_engine.finetune import FinetuneConfig, build_masks
from ssah_engine.finetune.batches import StepBatches
from ssah_engine.finetune.distributed import Shard, TrainableGradReducer
from ssah_engine.finetune.trainer import train
from ssah_engine.testing import tiny_model
from ssah_engine.units import UnitSpace

from .test_finetune import TOKENIZER, sft_set

WORLD = 2
# 8 pairs, 2 per micro-batch, 2 micro-batches per step: each rank takes one micro-batch of each step.
SETTINGS = dict(
    lr=1e-2, weight_decay=0.1, warmup_ratio=0.0, batch_size=2, grad_accum=2, max_steps=4, max_length=64,
    log_every=1, checkpoint_every=2, max_grad_norm=1.0,
)  # fmt: skip


def masked_model(seed: int = 0):
    """A tiny llama with 40 % of its units frozen plus layer 1 frozen whole (the same on every rank)."""
    model, _ = tiny_model("llama", seed=seed)
    space = UnitSpace.from_layout(describe(model))
    units = torch.rand(space.size, generator=torch.Generator().manual_seed(1)) < 0.4
    return model, build_masks(model, units, freeze_layers=(1,))


def run(out_dir: Path, shard: Shard | None, **overrides) -> dict[str, torch.Tensor]:
    model, masks = masked_model()
    config = FinetuneConfig(**{**SETTINGS, **overrides})
    data = StepBatches(TOKENIZER, sft_set(), config)
    history = train(model, data, masks, config, out_dir, shard=shard)
    weights = {name: p.detach().clone() for name, p in model.named_parameters()}
    weights["loss"] = torch.tensor([entry["loss"] for entry in history], dtype=torch.float64)
    return weights


def _rank(rank: int, port: int, out_dir: str, overrides: dict) -> None:
    os.environ.update(OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        shard = Shard.current()
        assert shard is not None and shard.rank == rank
        weights = run(Path(out_dir), shard, **overrides)
        save_file({k: v.contiguous() for k, v in weights.items()}, str(Path(out_dir) / f"rank-{rank}.safetensors"))
    finally:
        dist.destroy_process_group()


def run_ranks(out_dir: Path, **overrides) -> list[dict[str, torch.Tensor]]:
    with socket.socket() as probe:  # a free port for the rendezvous
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    mp.spawn(_rank, args=(port, str(out_dir), overrides), nprocs=WORLD, join=True)
    return [
        {k: v.clone() for k, v in load_file(str(out_dir / f"rank-{rank}.safetensors")).items()} for rank in range(WORLD)
    ]


@pytest.mark.parametrize("packed", [True, False])
def test_two_gloo_ranks_train_as_one_process_and_keep_frozen_slices_bit_exact(tmp_path, packed):
    single = run(tmp_path / "single", None, packed_optimizer=packed)
    ranks = run_ranks(tmp_path / "ddp", packed_optimizer=packed)
    base, masks = masked_model()
    moved, worst = 0, 0.0
    for name, start in base.named_parameters():
        trainable = masks.trainable(name, start.shape)
        for weights in ranks:
            assert torch.equal(weights[name], ranks[0][name]), name  # every rank holds the same weights
            assert torch.equal(weights[name][~trainable], start.detach()[~trainable]), name  # frozen: bit-exact
        delta = (ranks[0][name][trainable] - single[name][trainable]).abs()
        worst = max(worst, float(delta.max()) if delta.numel() else 0.0)
        moved += int(not torch.equal(single[name][trainable], start.detach()[trainable]))
    print(f"max |trainable DDP - single process| = {worst:.3g}")
    assert worst < 1e-5, worst  # trainable: the single-process weights to float32 rounding
    assert moved >= 8  # the comparison is between trained weights, not two copies of the base
    assert torch.allclose(ranks[0]["loss"], single["loss"], atol=1e-6)

    # Resume from rank 0's step-2 checkpoint on 2 fresh ranks: steps 3-4 end where the uninterrupted run did.
    resumed = run_ranks(tmp_path / "ddp", packed_optimizer=packed, resume=True)
    for name, _ in base.named_parameters():
        assert torch.equal(resumed[0][name], ranks[0][name]) and torch.equal(resumed[1][name], ranks[0][name]), name


def test_the_reducer_sends_only_trainable_entries():
    model, masks = masked_model()
    masks.apply(model)
    reducer = TrainableGradReducer(model, masks)
    expected = sum(masks.trainable_numel(name, p) for name, p in model.named_parameters())
    assert reducer.numel == expected
    assert reducer.numel < reducer.dense_numel  # the frozen rows/columns are left out
    assert all(parameter.requires_grad for parameter, _, _ in reducer.parts)  # tensors frozen whole: skipped
