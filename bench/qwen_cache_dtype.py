"""Would a 16-bit cache of builtin:qwen2.5-coder-0.5b change what the engine finds or says?

The GGUF is dequantised to float32 (2.5 GB). This loads that copy, rounds every weight to float16
or bfloat16 and back (what a 16-bit cache loaded in float32 would give), and compares with the
float32 copy: how many weights change, greedy answers to chat prompts, next-token agreement, and
the audit's labels (same config, same data). Prints key=value lines.

    OMP_NUM_THREADS=2 python bench/qwen_cache_dtype.py --audit-samples 16 --prompts 8
"""

from __future__ import annotations

import argparse
import time

import torch

from ssah_engine.audit import AuditConfig, run_audit
from ssah_engine.data import load_dataset
from ssah_engine.loading import LoadOptions, load_model


def round_weights(model, dtype: torch.dtype) -> tuple[int, int, float]:
    """Round every parameter to ``dtype`` and back in place; return (changed, total, max relative error)."""
    changed = total = 0
    worst = 0.0
    with torch.no_grad():
        for param in model.parameters():
            rounded = param.to(dtype).to(param.dtype)
            diff = rounded != param
            changed += int(diff.sum())
            total += param.numel()
            nonzero = param != 0
            if nonzero.any():
                worst = max(worst, float(((rounded - param).abs()[nonzero] / param.abs()[nonzero]).max()))
            param.copy_(rounded)
    return changed, total, worst


def chat_inputs(tokenizer, prompts: list[str]) -> list[torch.Tensor]:
    return [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": p}], add_generation_prompt=True, return_tensors="pt", return_dict=True
        )["input_ids"]
        for p in prompts
    ]


def greedy(model, inputs: list[torch.Tensor], tokens: int) -> list[list[int]]:
    with torch.no_grad():
        return [
            model.generate(ids, max_new_tokens=tokens, do_sample=False)[0, ids.shape[1] :].tolist() for ids in inputs
        ]


def next_token_logprobs(model, inputs: list[torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return torch.stack([model(ids).logits[0, -1].log_softmax(-1) for ids in inputs])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=8, help="harmful + harmless chat prompts (half each)")
    parser.add_argument("--tokens", type=int, default=40, help="greedy new tokens per prompt")
    parser.add_argument("--audit-samples", type=int, default=16, help="pairs per calibration set; 0: no audit")
    parser.add_argument("--dtypes", default="float16,bfloat16")
    args = parser.parse_args()

    source = "builtin:qwen2.5-coder-0.5b"
    harmful = [e.prompt for e in load_dataset("builtin:harmful_eval").take(args.prompts // 2).examples]
    harmless = [e.prompt for e in load_dataset("builtin:harmless_eval").take(args.prompts - args.prompts // 2).examples]
    safety = load_dataset("builtin:safety", require_response=True)
    utility = load_dataset("builtin:utility", require_response=True)
    config = AuditConfig(samples=max(args.audit_samples, 1))

    reference = load_model(source, LoadOptions(device="cpu", dtype="float32"))
    inputs = chat_inputs(reference.tokenizer, harmful + harmless)
    ref_answers = greedy(reference.model, inputs, args.tokens)
    ref_logprobs = next_token_logprobs(reference.model, inputs)
    ref_labels = None
    if args.audit_samples:
        started = time.perf_counter()
        ref_labels = run_audit(reference, safety, utility, config).labels
        print(f"audit_seconds_float32={time.perf_counter() - started:.0f}")
    del reference

    for name in args.dtypes.split(","):
        loaded = load_model(source, LoadOptions(device="cpu", dtype="float32"))
        changed, total, worst = round_weights(loaded.model, getattr(torch, name))
        print(f"{name}_weights_changed={changed / total:.4f} {name}_max_relative_error={worst:.2e}")
        answers = greedy(loaded.model, inputs, args.tokens)
        same = sum(a == b for a, b in zip(answers, ref_answers))
        first = [next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None) for a, b in zip(answers, ref_answers)]
        print(f"{name}_greedy_identical={same}/{len(inputs)} {name}_first_divergence={first}")
        for index, (a, b) in enumerate(zip(answers, ref_answers)):
            if a != b:
                text = loaded.tokenizer.decode
                print(f"{name}_differs_{index}: float32={text(b)!r} {name}={text(a)!r}")
        logprobs = next_token_logprobs(loaded.model, inputs)
        top1 = int((logprobs.argmax(-1) == ref_logprobs.argmax(-1)).sum())
        print(
            f"{name}_next_token_top1_agree={top1}/{len(inputs)} "
            f"{name}_max_logprob_diff={float((logprobs - ref_logprobs).abs().max()):.4f}"
        )
        if ref_labels is not None:
            labels = run_audit(loaded, safety, utility, config).labels
            agree = int((labels == ref_labels).sum())
            print(
                f"{name}_audit_labels_agree={agree}/{labels.numel()} ({100 * agree / labels.numel():.3f} %) "
                f"{name}_label_agreement_ratio={agree / labels.numel():.5f}"
            )  # against the float32 cache
        del loaded


if __name__ == "__main__":
    main()
