"""Probe cost vs a plain forward pass over the probe's own inputs, on SmolLM2-135M-Instruct.

The paper's probe feeds 3 inputs per harmful query and k (the query alone, + k refusal tokens, + k
compliance tokens): 3 * N * |k| sequences. ``plain`` runs exactly those, batched and right-padded,
as ``model(input_ids, attention_mask)`` under inference_mode. ``probe`` is ``probe_distances``,
which needs one sequence per continuation (query + the largest k tokens: causal attention gives
every shorter k for free) and runs the prefix all inputs share once through the KV cache. Phases
alternate so machine noise hits both alike; peak memory as in bench/common. Last line:
``ratio=<probe time / plain time>`` (target <= 0.9).

    python bench/probe_overhead.py [--queries 32] [--rounds 3] [--batch-size 8]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from common.peak_memory import PeakMemory  # bench/ is on sys.path when a bench runs

from ssah_engine.architectures import describe
from ssah_engine.data import load_dataset
from ssah_engine.loading import load_model
from ssah_engine.probe import ProbeConfig, probe_distances
from ssah_engine.probe.inputs import build_inputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="builtin:smollm2")
    parser.add_argument("--queries", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    loaded = load_model(args.model)
    model, tokenizer = loaded.model, loaded.tokenizer
    layout = describe(model)
    config = ProbeConfig(queries=args.queries, batch_size=args.batch_size)
    data = load_dataset("builtin:safety", limit=args.queries, require_response=True)
    inputs = build_inputs(tokenizer, [(e.prompt, e.response) for e in data.examples], config)
    plain_inputs = [item.refusal[: item.query_length + k] for item in inputs for k in config.ks]
    plain_inputs += [item.compliance[: item.query_length + k] for item in inputs for k in config.ks]
    plain_inputs += [item.refusal[: item.query_length] for item in inputs for _ in config.ks]
    plain_inputs.sort(key=len)
    tokens = sum(len(ids) for ids in plain_inputs)
    print(
        f"device={loaded.device} threads={torch.get_num_threads()} queries={len(inputs)} ks={list(config.ks)} "
        f"plain_inputs={len(plain_inputs)} plain_tokens={tokens} batch_size={args.batch_size}"
    )

    def plain() -> None:
        with torch.inference_mode():
            for start in range(0, len(plain_inputs), args.batch_size):
                chunk = plain_inputs[start : start + args.batch_size]
                width = max(len(ids) for ids in chunk)
                ids = torch.full((len(chunk), width), tokenizer.pad_token_id, dtype=torch.long)
                mask = torch.zeros_like(ids)
                for row, sequence in enumerate(chunk):
                    ids[row, : len(sequence)] = torch.tensor(sequence)
                    mask[row, : len(sequence)] = 1
                model(input_ids=ids.to(loaded.device), attention_mask=mask.to(loaded.device))

    def probe() -> None:
        probe_distances(model, layout, inputs, config, pad_id=tokenizer.pad_token_id)

    memory = PeakMemory(loaded.device)
    times = {"plain": [], "probe": []}
    peaks = {"plain": 0.0, "probe": 0.0}
    plain()  # warm-up
    probe()
    for _ in range(args.rounds):
        for name, phase in (("plain", plain), ("probe", probe)):
            memory.reset()
            started = time.perf_counter()
            phase()
            if loaded.device.type == "cuda":
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - started)
            peaks[name] = max(peaks[name], memory.read_mib())
    plain_s, probe_s = statistics.median(times["plain"]), statistics.median(times["probe"])
    print(f"plain_s={plain_s:.3f} probe_s={probe_s:.3f} (median of {args.rounds} alternating rounds)")
    print(
        f"plain_peak_mib={peaks['plain']:.0f} probe_peak_mib={peaks['probe']:.0f} "
        f"memory_ratio={peaks['probe'] / peaks['plain']:.3f}"
    )
    print(f"ratio={probe_s / plain_s:.3f}")


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
