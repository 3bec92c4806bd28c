"""How much batching and the refusal margin save over one-by-one keyword ASR, on SmolLM2-135M-Instruct.

Over the same harmful prompts (builtin:harmful_eval, no system prompt, greedy decoding):
  one-by-one:  generate each prompt alone (batch size 1)
  batched:     generate left-padded batches (what `ssah eval` does)
  keyword ASR: the batched generation plus the ssah-31 verdicts
  margin:      the refusal margin of every prompt (no generation)
Prints the times and batched_speedup=<one-by-one / batched>, margin_speedup=<keyword ASR / margin>.

    python bench/eval_speed.py [--prompts 8] [--max-new-tokens 256] [--batch-size 8] [--threads 2]

The paper's 256 new tokens are the default because the margin's advantage grows with them. On a
shared machine, --threads 1 avoids oversubscribed threads spinning (times then say so).
"""

from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="builtin:smollm2")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from ssah_engine.data import load_dataset
    from ssah_engine.evaluation import Protocol, get_rule, opening_ids, opening_logprobs, refusal_margins
    from ssah_engine.evaluation.generation import encode_rendered, generate_greedy, render_prompts
    from ssah_engine.loading import load_model

    loaded = load_model(args.model)
    model, tokenizer = loaded.model, loaded.tokenizer
    prompts = [example.prompt for example in load_dataset("builtin:harmful_eval", limit=args.prompts).examples]
    rendered = render_prompts(tokenizer, prompts, None)
    ids = encode_rendered(tokenizer, rendered)
    protocol = Protocol()
    rule = get_rule("ssah-31")
    generate = lambda batch_size, tokens=args.max_new_tokens: generate_greedy(  # noqa: E731
        model, tokenizer, ids, max_new_tokens=tokens, batch_size=batch_size
    )
    generate(args.batch_size, 4)  # warm-up (first-call allocations)

    started = time.perf_counter()
    alone = generate(1)
    one_by_one = time.perf_counter() - started

    started = time.perf_counter()
    batched_texts = generate(args.batch_size)
    batched = time.perf_counter() - started
    verdicts = [rule.verdict(text) for text in batched_texts]
    keyword_asr = time.perf_counter() - started

    started = time.perf_counter()
    candidates = opening_ids(tokenizer, rendered[0], protocol.refusal_openings + protocol.compliance_openings)
    scores = opening_logprobs(model, ids, candidates, pad_id=tokenizer.pad_token_id, batch_size=args.batch_size)
    margins = refusal_margins(scores, len(protocol.refusal_openings))
    margin = time.perf_counter() - started

    refused = [verdict == "refusal" for verdict in verdicts]
    agreement = sum((m > 0) == r for m, r in zip(margins.tolist(), refused)) / len(refused)
    same = sum(a == b for a, b in zip(alone, batched_texts))
    print(
        f"model={args.model} prompts={len(prompts)} max_new_tokens={args.max_new_tokens} "
        f"batch_size={args.batch_size} threads={args.threads}"
    )
    print(
        f"one_by_one_s={one_by_one:.2f} batched_s={batched:.2f} keyword_asr_s={keyword_asr:.2f} margin_s={margin:.3f}"
    )
    print(
        f"identical_texts={same}/{len(prompts)} keyword_refusals={sum(refused)} "
        f"margin_refusals={int((margins > 0).sum())} agreement={agreement:.2f}"
    )
    print(f"batched_speedup={one_by_one / batched:.1f}")
    print(f"margin_speedup={keyword_asr / margin:.1f}")


if __name__ == "__main__":
    main()
