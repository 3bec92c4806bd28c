"""Masked fine-tuning with FSDP2-sharded weights on 2 gloo ranks: frozen slices bit-exact, trainable ones as a
single process (the same tiny masked llama and data as the data-parallel test)."""

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from ssah_engine.finetune import FinetuneConfig
from ssah_engine.finetune.batches import StepBatches
from ssah_engine.finetune.distributed import Shard
from ssah_engine.finetune.fsdp import _local_rows, full_state, train_fsdp
from ssah_engine.finetune.trainer import train

from .test_finetune import TOKENIZER, sft_set
from .test_finetune_distributed import SETTINGS, WORLD, masked_model

FSDP_SETTINGS = {**SETTINGS, "checkpoint_every": 0, "packed_optimizer": False}


def _rank(rank: int, port: int, out_dir: str, overrides: dict) -> None:
    from torch.distributed.device_mesh import init_device_mesh

    os.environ.update(OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        shard = Shard.current()
        assert shard is not None
        model, masks = masked_model()
        config = FinetuneConfig(**{**FSDP_SETTINGS, **overrides})
        history = train_fsdp(
            model, StepBatches(TOKENIZER, sft_set(), config), masks, config, shard, init_device_mesh("cpu", (WORLD,))
        )
        sharded = {name: p.to_local().numel() for name, p in model.named_parameters()}
        weights = full_state(model)
        weights["loss"] = torch.tensor([entry["loss"] for entry in history], dtype=torch.float64)
        weights["local_numel"] = torch.tensor(sum(sharded.values()))
        save_file({k: v.contiguous() for k, v in weights.items()}, str(Path(out_dir) / f"rank-{rank}.safetensors"))
    finally:
        dist.destroy_process_group()


def run_ranks(out_dir: Path, **overrides) -> list[dict[str, torch.Tensor]]:
    out_dir.mkdir(parents=True, exist_ok=True)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    mp.spawn(_rank, args=(port, str(out_dir), overrides), nprocs=WORLD, join=True)
    return [load_file(str(out_dir / f"rank-{rank}.safetensors")) for rank in range(WORLD)]


def test_fsdp_ranks_train_as_one_process_and_keep_frozen_slices_bit_exact(tmp_path):
    model, masks = masked_model()
    config = FinetuneConfig(**FSDP_SETTINGS)
    history = train(model, StepBatches(TOKENIZER, sft_set(), config), masks, config, tmp_path / "single")
    single = {name: p.detach().clone() for name, p in model.named_parameters()}
    ranks = run_ranks(tmp_path / "fsdp")
    base, masks = masked_model()
    total = sum(p.numel() for p in base.parameters())
    assert all(int(weights["local_numel"]) < 0.6 * total for weights in ranks)  # each rank holds about half
    moved, worst = 0, 0.0
    for name, start in base.named_parameters():
        trainable = masks.trainable(name, start.shape)
        for weights in ranks:
            assert torch.equal(weights[name], ranks[0][name]), name
            assert torch.equal(weights[name][~trainable], start.detach()[~trainable]), name  # frozen: bit-exact
        delta = (ranks[0][name][trainable] - single[name][trainable]).abs()
        worst = max(worst, float(delta.max()) if delta.numel() else 0.0)
        moved += int(not torch.equal(single[name][trainable], start.detach()[trainable]))
    print(f"max |trainable FSDP - single process| = {worst:.3g}")
    assert worst < 1e-5, worst
    assert moved >= 8
    losses = torch.tensor([entry["loss"] for entry in history], dtype=torch.float64)
    assert torch.allclose(ranks[0]["loss"], losses, atol=1e-6)


def test_row_shards_take_their_own_frozen_rows():
    index = torch.tensor([0, 2, 3, 6])
    assert _local_rows(index, 7, 0, 2).tolist() == [0, 2, 3]  # rows 0-3
    assert _local_rows(index, 7, 1, 2).tolist() == [2]  # rows 4-6: row 6 is local row 2
    assert _local_rows(torch.tensor([2]), 3, 2, 4).tolist() == [0]  # torch.chunk: 3 rows over 4 ranks, one each
    assert _local_rows(torch.tensor([2]), 3, 3, 4).tolist() == []  # the last rank holds none


def test_fsdp_refuses_what_it_does_not_do():
    model, masks = masked_model()
    config = FinetuneConfig(**{**FSDP_SETTINGS, "checkpoint_every": 2})
    with pytest.raises(ValueError, match="checkpoint_every"):
        train_fsdp(model, StepBatches(TOKENIZER, sft_set(), config), masks, config, Shard(0, 2), mesh=None)
