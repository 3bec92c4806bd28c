"""What running the shared system turn once saves in an evaluation's safety pass.

`ssah eval` scores the refusal margin and generates greedily for every prompt of each condition;
with the safety system prompt (Llama-2's, ~130 tokens) every rendered prompt opens with the same
tokens. Over the same harmful prompts (builtin:harmful_eval, the 'system' condition), in alternating
rounds, the margin and the generation run once with every prompt fed in full (the baseline) and once
starting from copies of the shared prefix's KV cache (`share_prefix=True`, the default); responses
must be identical token for token and margins equal to rounding. Prints

    eval_prefix_time_ratio = shared_s / full_s     (target < 1)

    python bench/eval_prefix.py [--model builtin:smollm2] [--prompts 24] [--max-new-tokens 40] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="builtin:smollm2")
    parser.add_argument("--prompts", type=int, default=24)
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=24)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from ssah_engine.data import load_dataset
    from ssah_engine.evaluation import Protocol, opening_ids, opening_logprobs
    from ssah_engine.evaluation.generation import encode_rendered, generate_greedy_ids
    from ssah_engine.evaluation.prompts import render
    from ssah_engine.kv_cache import common_prefix
    from ssah_engine.loading import load_model

    loaded = load_model(args.model)
    model, tokenizer = loaded.model, loaded.tokenizer
    protocol = Protocol()
    prompts = [example.prompt for example in load_dataset("builtin:harmful_eval", limit=args.prompts).examples]
    rendered = [render(tokenizer, prompt, protocol.system_prompt, "chat") for prompt in prompts]
    ids = encode_rendered(tokenizer, rendered)
    candidates = opening_ids(tokenizer, rendered[0], protocol.refusal_openings + protocol.compliance_openings)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def run(share: bool):
        started = time.perf_counter()
        scores = opening_logprobs(model, ids, candidates, pad_id=pad_id, batch_size=args.batch_size, share_prefix=share)
        tokens = generate_greedy_ids(
            model,
            tokenizer,
            ids,
            max_new_tokens=args.max_new_tokens,
            batch_size=args.batch_size,
            share_prefix=share,
        )
        return time.perf_counter() - started, scores, tokens

    run(True)  # warm-up
    times: dict[bool, list[float]] = {True: [], False: []}
    outputs = {}
    for round_ in range(args.rounds):
        for share in (False, True):
            elapsed, scores, tokens = run(share)
            times[share].append(elapsed)
            outputs[share] = (scores, tokens)
        print(f"round {round_ + 1}: full {times[False][-1]:.1f}s shared {times[True][-1]:.1f}s", flush=True)
    same_tokens = outputs[True][1] == outputs[False][1]
    margin_gap = float((outputs[True][0] - outputs[False][0]).abs().max())
    lengths = [len(row) for row in ids]
    print(
        f"model={args.model} prompts={len(ids)} prompt_tokens={sum(lengths)} shared_prefix={common_prefix(ids)} "
        f"max_new_tokens={args.max_new_tokens} identical_responses={same_tokens} max_margin_logprob_gap={margin_gap:.2e}"
    )
    full_s, shared_s = statistics.median(times[False]), statistics.median(times[True])
    print(f"full_s={full_s:.2f} shared_s={shared_s:.2f}")
    print(f"eval_prefix_time_ratio={shared_s / full_s:.3f} ratio={shared_s / full_s:.3f}")


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
