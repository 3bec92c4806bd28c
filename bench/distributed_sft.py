"""Masked fine-tuning over 2 gloo ranks against one process, on a random-weight SmolLM2-shaped model.

The model is a llama with SmolLM2-135M's layer shape (hidden 576, 9/3 heads, 1,536 neurons),
``--layers`` decoder layers and the byte-level test tokenizer's vocabulary, weights from a seed (no
download). The unit map has random scores classified at the paper's cuts (bench/common/fabricated.py);
the masks are freeze setting (ii) (SCU + CU frozen; embeddings, norms and LM head train, the
engine's defaults). Every run trains the same model on the same windows of builtin:benign_sft
(``--batch-size`` pairs per micro-batch, ``--grad-accum`` micro-batches per optimizer step, so
each of the 2 ranks takes half of every step's window):

  single = one process, ``train_step`` over the whole window, packed AdamW
  ddp    = 2 ranks (torch.multiprocessing spawn, gloo), each its share of the window, gradients
           summed by ``TrainableGradReducer`` (one all-reduce of only the trainable entries)
  fsdp   = 2 ranks, FSDP2 (``fully_shard`` per layer and root), torch AdamW on each rank's shard
           (``--no-fsdp`` leaves it out)

Step 1 is an untimed warm-up (it allocates the optimizer state); steps 2..``--steps``+1 are timed
(per step the slower rank). Each process uses one thread, so on a 2-core machine the 2-rank ratio
says how two workers share the compute of one global batch (ideal 0.5), plus the all-reduce; it is
no statement about GPUs. It prints:

  allreduce_entries_ratio=   entries one all-reduce sends / entries a dense DDP all-reduce sends
                             (every gradient of a tensor that has a trainable entry)
  full_shape_allreduce_entries_ratio=   the same for the whole SmolLM2-135M shape (30 layers,
                             vocabulary 49,152, tied embeddings), built on the meta device
  allreduce_s=               median seconds of the all-reduce per step (waiting for the other rank included)
  step_time_ratio_2ranks=    median step time, 2 ranks / 1 process, same global batch
  max_abs_delta_vs_single=   largest |trainable weight, rank 0 - single process| after the steps
  frozen_bit_exact=          every frozen entry equal to the start on both ranks (and ranks equal)
  fsdp_param_fraction_per_rank=, fsdp_step_time_ratio_2ranks=, fsdp_max_abs_delta_vs_single=,
  fsdp_frozen_bit_exact=     the same for FSDP

    python bench/distributed_sft.py [--layers 2] [--steps 5] [--batch-size 2] [--grad-accum 2] [--max-length 128]
    python bench/distributed_sft.py --tiny      # a tiny shape, seconds: what tests/engine/test_bench_finetune.py runs
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/common
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository
from common.fabricated import SHAPES, class_shares, random_model, random_unit_map  # noqa: E402

from ssah_engine.architectures import describe  # noqa: E402
from ssah_engine.data import load_dataset  # noqa: E402
from ssah_engine.finetune import FinetuneConfig, FrozenSlices, build_masks, frozen_units_for, make_optimizer  # noqa: E402
from ssah_engine.finetune.batches import StepBatches  # noqa: E402
from ssah_engine.finetune.distributed import Shard, TrainableGradReducer  # noqa: E402
from ssah_engine.finetune.trainer import train_step  # noqa: E402
from ssah_engine.units import UnitSpace  # noqa: E402

WORLD = 2


class TimedReducer(TrainableGradReducer):
    """The engine's reducer, timing each all-reduce (waiting for the slower rank included)."""

    def __init__(self, model, masks):
        super().__init__(model, masks)
        self.seconds: list[float] = []

    def all_reduce(self, loss_sum: float) -> float:
        started = time.perf_counter()
        total = super().all_reduce(loss_sum)
        self.seconds.append(time.perf_counter() - started)
        return total


def setup(args):
    """The same model, masks, config and batches in every process (all from seeds)."""
    model, tokenizer = random_model(args.shape, args.layers, seed=args.seed)
    unit_map = random_unit_map(model, seed=args.seed)
    config = FinetuneConfig(
        mode="freeze",
        setting="ii",
        lr=1e-4,
        weight_decay=0.1,
        warmup_ratio=0.0,
        batch_size=args.batch_size,
        grad_accum=args.grad_accum,
        max_length=args.max_length,
        max_steps=args.steps + 1,
        max_grad_norm=1.0,
    )
    space = UnitSpace.from_layout(describe(model))
    masks = build_masks(model, frozen_units_for(config, space, unit_map))
    dataset = load_dataset("builtin:benign_sft", require_response=True)
    data = StepBatches(tokenizer, dataset, config)
    return model, unit_map, masks, config, data


def run_steps(model, optimizer, data, frozen, config, step_fn) -> list[float]:
    """Warm-up step, then the timed ones; seconds per timed step."""
    model.train()
    times = []
    for step in range(data.total_steps):
        started = time.perf_counter()
        step_fn(model, optimizer, data.window(step), frozen, config)
        if step:
            times.append(time.perf_counter() - started)
    model.eval()
    return times


def single(args) -> tuple[dict[str, torch.Tensor], list[float], dict]:
    model, unit_map, masks, config, data = setup(args)
    masks.apply(model)
    reducer = TrainableGradReducer(model, masks)  # its counts only: nothing is reduced in one process
    optimizer = make_optimizer(model, config, masks)
    frozen = FrozenSlices(model, masks, snapshot=False)
    times = run_steps(model, optimizer, data, frozen, config, train_step)
    info = {
        "parameters": sum(p.numel() for p in model.parameters()),
        "entries": reducer.numel,
        "dense_entries": reducer.dense_numel,
        "shares": class_shares(unit_map),
        "tokens": sum(int(batch.attention_mask.sum()) for batch in data.window(0)),
        "summary": masks.summary(model, UnitSpace.from_layout(describe(model))),
    }
    return {name: p.detach().clone() for name, p in model.named_parameters()}, times, info


def slowest(times: list[float]) -> list[float]:
    """Per step, the slower rank's time (the steps meet in a collective anyway)."""
    tensor = torch.tensor(times, dtype=torch.float64)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor.tolist()


def _rank(rank: int, port: int, out_dir: str, args) -> None:
    os.environ.update(OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        shard = Shard.current()
        assert shard is not None
        model, _, masks, config, data = setup(args)
        masks.apply(model)
        reducer = TimedReducer(model, masks)
        optimizer = make_optimizer(model, config, masks)
        frozen = FrozenSlices(model, masks, snapshot=False)

        def ddp_step(model, optimizer, window, frozen, config):
            return train_step(model, optimizer, window, frozen, config, shard=shard, reducer=reducer)

        result: dict[str, object] = {"ddp_times": slowest(run_steps(model, optimizer, data, frozen, config, ddp_step))}
        result["allreduce_times"] = slowest(reducer.seconds[1:])  # the warm-up step's left out
        result["ddp"] = {name: p.detach().clone() for name, p in model.named_parameters()}
        if args.fsdp:
            result.update(fsdp_run(args, shard))
        torch.save(result, Path(out_dir) / f"rank-{rank}.pt")
    finally:
        dist.destroy_process_group()


def fsdp_run(args, shard: Shard) -> dict:
    from torch.distributed.device_mesh import init_device_mesh

    from ssah_engine.finetune.fsdp import ShardedFrozenSlices, fsdp_train_step, full_state, shard_model

    model, _, masks, config, data = setup(args)
    config = replace(config, packed_optimizer=False)  # the FSDP path takes torch's AdamW
    masks.apply(model)  # before sharding: FSDP2 sees which tensors train
    total = sum(p.numel() for p in model.parameters())
    shard_model(model, init_device_mesh("cpu", (WORLD,)))
    local = sum(p.to_local().numel() for p in model.parameters())  # DTensors after fully_shard
    optimizer = make_optimizer(model, config)
    frozen = ShardedFrozenSlices(model, masks, shard)

    def step(model, optimizer, window, frozen, config):
        return fsdp_train_step(model, optimizer, window, frozen, config, shard)

    times = slowest(run_steps(model, optimizer, data, frozen, config, step))
    return {"fsdp_times": times, "fsdp": full_state(model), "fsdp_fraction": local / total}


def full_shape_ratio(seed: int) -> tuple[int, float]:
    """(parameters, all-reduce entries ratio) of the whole SmolLM2-135M shape (30 layers, vocabulary 49,152,
    tied embeddings) under the same recipe: built on the meta device, nothing computed."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    shape = AutoConfig.for_model(
        "llama", **SHAPES["smollm2"], num_hidden_layers=30, vocab_size=49152, tie_word_embeddings=True
    )
    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(shape)
    model.tie_weights()
    config = FinetuneConfig(mode="freeze", setting="ii")
    masks = build_masks(
        model, frozen_units_for(config, UnitSpace.from_layout(describe(model)), random_unit_map(model, seed))
    )
    masks.apply(model)
    reducer = TrainableGradReducer(model, masks)
    return sum(p.numel() for p in model.parameters()), reducer.numel / reducer.dense_numel


def compare(
    base: dict[str, torch.Tensor], masks, single_weights, ranks: list[dict[str, torch.Tensor]]
) -> tuple[float, bool]:
    """(max |trainable rank 0 - single|, frozen entries bit-exact on every rank and ranks equal)."""
    worst, exact = 0.0, True
    for name, start in base.items():
        trainable = masks.trainable(name, start.shape)
        for weights in ranks:
            exact &= torch.equal(weights[name], ranks[0][name])
            exact &= torch.equal(weights[name][~trainable], start[~trainable])
        delta = (ranks[0][name][trainable] - single_weights[name][trainable]).abs()
        worst = max(worst, float(delta.max()) if delta.numel() else 0.0)
    return worst, bool(exact)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5, help="timed steps (after one warm-up step)")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--grad-accum", type=int, default=2)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-fsdp", dest="fsdp", action="store_false", help="leave the FSDP arm out")
    parser.add_argument("--tiny", action="store_true", help="a tiny shape, 2 timed steps of short pairs: seconds")
    args = parser.parse_args()
    args.shape = "smollm2"
    if args.tiny:
        args.shape, args.steps, args.max_length = "tiny", 2, 64
    torch.set_num_threads(1)

    base_model, _, masks, _, _ = setup(args)
    base = {name: p.detach().clone() for name, p in base_model.named_parameters()}
    del base_model
    started = time.perf_counter()
    single_weights, single_times, info = single(args)
    single_s = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as scratch:
        with socket.socket() as probe:  # a free port for the rendezvous
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        started = time.perf_counter()
        mp.spawn(_rank, args=(port, scratch, args), nprocs=WORLD, join=True)
        ranks_s = time.perf_counter() - started
        results = [torch.load(Path(scratch) / f"rank-{rank}.pt") for rank in range(WORLD)]

    summary = info["summary"]
    print(
        f"shape={args.shape} layers={args.layers} parameters={info['parameters']} "
        f"batch={args.batch_size}x{args.grad_accum} pairs per step ({info['tokens']} tokens) "
        f"timed_steps={args.steps} threads_per_process=1 world={WORLD}"
    )
    print(
        "unit shares (random map, paper cuts): "
        + " ".join(f"{name}={100 * share:.1f}%" for name, share in info["shares"].items())
        + f"; setting (ii) trainable parameters {100 * summary['trainable_fraction']:.2f} %"
    )
    print(
        f"single_step_s={statistics.median(single_times):.4f} ddp_step_s={statistics.median(results[0]['ddp_times']):.4f}"
    )
    print(f"wall: single process {single_s:.1f}s, 2 ranks {ranks_s:.1f}s (spawn and imports included)")
    print(f"allreduce_entries={info['entries']} dense_allreduce_entries={info['dense_entries']}")
    print(f"allreduce_entries_ratio={info['entries'] / info['dense_entries']:.4f}")
    parameters, ratio = full_shape_ratio(args.seed)
    print(f"full_shape_parameters={parameters} full_shape_allreduce_entries_ratio={ratio:.4f}")
    print(f"allreduce_s={statistics.median(results[0]['allreduce_times']):.4f} (median per step, waits included)")
    print(f"step_time_ratio_2ranks={statistics.median(results[0]['ddp_times']) / statistics.median(single_times):.3f}")
    worst, exact = compare(base, masks, single_weights, [result["ddp"] for result in results])
    print(f"max_abs_delta_vs_single={worst:.3g}")
    print(f"frozen_bit_exact={exact}")
    if args.fsdp:
        worst, exact = compare(base, masks, single_weights, [result["fsdp"] for result in results])
        fraction = max(result["fsdp_fraction"] for result in results)
        fsdp_ratio = statistics.median(results[0]["fsdp_times"]) / statistics.median(single_times)
        print(f"fsdp_step_s={statistics.median(results[0]['fsdp_times']):.4f}")
        print(f"fsdp_param_fraction_per_rank={fraction:.4f}")
        print(f"fsdp_step_time_ratio_2ranks={fsdp_ratio:.3f}")
        print(f"fsdp_max_abs_delta_vs_single={worst:.3g}")
        print(f"fsdp_frozen_bit_exact={exact}")


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
