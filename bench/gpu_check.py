"""GPU check (issue 21, part 5): random-weight models of real shapes, every figure as one key=value line.

For each shape (``--config llama2-7b,llama3-8b``; ``--tiny`` for a tiny one that runs on a CPU in
seconds) the weights are drawn from ``--seed`` directly on the device (no download), saved once as
safetensors to a temporary directory, and measured on ``--pairs`` + ``--pairs`` calibration pairs of
``--tokens`` tokens (the shipped safety/utility pairs, responses repeated to the length):

- ``audit_*`` against ``forward_*``: the whole-model audit (WIFV) against a plain forward over the
  same batches of the same tokens: seconds and peak memory (the allocator's on CUDA, VmHWM on CPU);
- ``streamed_*``: the layer-streamed audit of the saved checkpoint (whole model freed first), its
  ratios to the whole-model audit and whether the labels agree;
- ``plain_step_*`` / ``masked_step_*``: one AdamW step (median of ``--steps``) with every tensor
  trainable, and under freeze setting (ii) masks from the audit's unit map with the packed optimizer;
- ``gen_*``: batched greedy generation throughput (the engine's ``generate_greedy_ids``).

    python bench/gpu_check.py                       # on a GPU: both real shapes, bf16
    python bench/gpu_check.py --tiny                # anywhere: a tiny Llama, float32, < 1 min on a CPU
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/common
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository
from common.peak_memory import PeakMemory  # noqa: E402

SHAPES = {
    "llama2-7b": dict(
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=32,
        vocab_size=32000,
        max_position_embeddings=4096,
        rope_theta=10000.0,
        rms_norm_eps=1e-5,
    ),
    "llama3-8b": dict(
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=128256,
        max_position_embeddings=8192,
        rope_theta=500000.0,
        rms_norm_eps=1e-5,
    ),
    "tiny": dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=320,
        max_position_embeddings=512,
        rope_theta=10000.0,
        rms_norm_eps=1e-5,
    ),
}


def say(name: str, key: str, value) -> None:
    text = f"{value:.4g}" if isinstance(value, float) else str(value)
    # One plain key per line (shape name first, "-" as "_"), like every bench: llama2_7b_audit_time_ratio=...
    print(f"{name.replace('-', '_')}_{key}={text}", flush=True)


def calibration_sets(pairs: int, tokens: int):
    """``pairs`` pairs of builtin:safety and of builtin:utility: prompts cut to a third of ``tokens`` characters,
    responses repeated past ``tokens`` (the byte-level tokenizer: a token per character), so every pair fills it."""
    from ssah_engine.data import Dataset, Example, content_sha256, load_dataset

    sets = []
    for source in ("builtin:safety", "builtin:utility"):
        shipped = [example for example in load_dataset(source).examples if example.response]
        examples = []
        for number in range(pairs):
            example = shipped[number % len(shipped)]
            response = (str(example.response) + " ") * (tokens // max(len(str(example.response)), 1) + 2)
            prompt = f"({number}) {example.prompt}"[: tokens // 3]  # room left for the template and a response
            examples.append(Example(prompt, response))
        sets.append(Dataset(f"{source}~{tokens}", tuple(examples), content_sha256(tuple(examples))))
    return sets[0], sets[1]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, peak: PeakMemory, function):
    """(result, seconds, peak MiB) of ``function()``."""
    peak.reset()
    sync(device)
    started = time.perf_counter()
    result = function()
    sync(device)
    return result, time.perf_counter() - started, peak.read_mib()


def check_shape(name: str, shape: dict, args, device: torch.device, dtype: torch.dtype, scratch: Path) -> None:
    from transformers import AutoModelForCausalLM, LlamaConfig

    from ssah_engine.architectures import describe
    from ssah_engine.audit import run_audit
    from ssah_engine.audit_config import AuditConfig
    from ssah_engine.encoding import encode_pairs, make_batches
    from ssah_engine.evaluation.generation import encode_rendered, generate_greedy_ids, render_prompts
    from ssah_engine.finetune import FinetuneConfig, FrozenSlices, build_masks, frozen_units_for, make_optimizer
    from ssah_engine.finetune.batches import StepBatches
    from ssah_engine.finetune.trainer import train_step
    from ssah_engine.loading import LoadedModel, LoadOptions
    from ssah_engine.streaming import load_streamed
    from ssah_engine.testing import tiny_tokenizer
    from ssah_engine.units import UnitSpace

    peak = PeakMemory(device)
    tokenizer = tiny_tokenizer()  # byte-level: a token per character, any model vocabulary is larger
    config = LlamaConfig(**shape, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(args.seed)
    started = time.perf_counter()
    with torch.device(device):  # drawn where it runs: no host copy of a 7B model
        model = AutoModelForCausalLM.from_config(config, dtype=dtype).eval()
    sync(device)
    say(name, "parameters", sum(parameter.numel() for parameter in model.parameters()))
    say(name, "init_seconds", time.perf_counter() - started)
    directory = scratch / name
    started = time.perf_counter()
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    say(name, "save_seconds", time.perf_counter() - started)

    safety, utility = calibration_sets(args.pairs, args.tokens)
    audit_config = AuditConfig(samples=args.pairs, batch_size=args.batch_size, max_length=args.tokens)
    loaded = LoadedModel(model, tokenizer, f"random:{name}", str(directory))
    whole, seconds, mib = timed(device, peak, lambda: run_audit(loaded, safety, utility, audit_config))
    say(name, "audit_seconds", seconds)
    say(name, "audit_peak_mib", mib)
    audit_seconds, audit_mib = seconds, mib

    encoded = [
        pair
        for dataset in (safety, utility)
        for pair in encode_pairs(
            tokenizer, [(e.prompt, str(e.response)) for e in dataset.examples], max_length=args.tokens
        )
    ]
    say(name, "calibration_tokens", sum(len(pair.input_ids) for pair in encoded))

    @torch.inference_mode()
    def forward() -> None:
        for batch in make_batches(encoded, args.batch_size, tokenizer.pad_token_id):
            model(input_ids=batch.input_ids.to(device), attention_mask=batch.attention_mask.to(device))

    _, seconds, mib = timed(device, peak, forward)
    say(name, "forward_seconds", seconds)
    say(name, "forward_peak_mib", mib)
    say(name, "audit_time_ratio", audit_seconds / seconds)
    say(name, "audit_peak_ratio", audit_mib / mib)

    rendered = render_prompts(tokenizer, [e.prompt for e in safety.examples[: args.gen_batch]], None)
    prompts = encode_rendered(tokenizer, rendered)

    def generate():
        return generate_greedy_ids(
            model, tokenizer, prompts, max_new_tokens=args.gen_tokens, batch_size=args.gen_batch, share_prefix=False
        )

    generate()  # warm-up (kernels, cache allocation)
    generated, seconds, mib = timed(device, peak, generate)
    say(name, "gen_batch", len(prompts))
    say(name, "gen_new_tokens", args.gen_tokens)
    say(name, "gen_seconds", seconds)
    say(name, "gen_tokens_per_second", len(prompts) * args.gen_tokens / seconds)
    say(name, "gen_tokens_before_eos", sum(len(row) for row in generated))
    say(name, "gen_peak_mib", mib)

    train_config = FinetuneConfig(
        mode="freeze", setting="ii", lr=1e-5, batch_size=args.train_batch, max_length=args.tokens, max_steps=1
    )
    data = StepBatches(tokenizer, utility, train_config)
    window = data.window(0)
    space = UnitSpace.from_layout(describe(model))
    masks = build_masks(model, frozen_units_for(train_config, space, whole))
    medians = {}
    for phase in ("plain", "masked"):
        if phase == "plain":
            for parameter in model.parameters():
                parameter.requires_grad_(True)
            optimizer, frozen = make_optimizer(model, replace(train_config, packed_optimizer=False)), None
        else:
            masks.apply(model)
            optimizer = make_optimizer(model, train_config, masks)
            frozen = FrozenSlices(model, masks, snapshot=False)
        model.train()
        peak.reset()
        train_step(model, optimizer, window, frozen, train_config)  # allocates gradients and moments
        times = []
        for _ in range(args.steps):
            sync(device)
            started = time.perf_counter()
            train_step(model, optimizer, window, frozen, train_config)
            sync(device)
            times.append(time.perf_counter() - started)
        mib = peak.read_mib()  # since the phase began: its gradients and moments included
        state = sum(v.numel() * v.element_size() for s in optimizer.state.values() for v in s.values() if v.ndim)
        medians[phase] = statistics.median(times)
        say(name, f"{phase}_step_seconds", medians[phase])
        say(name, f"{phase}_step_peak_mib", mib)
        say(name, f"{phase}_optimizer_state_mib", state / 2**20)
        del optimizer, frozen
        model.zero_grad(set_to_none=True)
        model.eval()
    say(name, "train_tokens_per_step", sum(int(batch.attention_mask.sum()) for batch in window))
    say(name, "step_time_ratio", medians["masked"] / medians["plain"])

    loaded.model = model = None  # free the whole model (the closures above are done with it)
    streamed_options = LoadOptions(device=str(device), dtype=str(dtype).removeprefix("torch."))
    streamed_config = replace(audit_config, stream_layers=True)

    def streamed_audit():
        return run_audit(load_streamed(str(directory), streamed_options), safety, utility, streamed_config)

    streamed, seconds, mib = timed(device, peak, streamed_audit)
    say(name, "streamed_audit_seconds", seconds)
    say(name, "streamed_audit_peak_mib", mib)
    say(name, "streamed_time_ratio", seconds / audit_seconds)
    say(name, "streamed_peak_ratio", mib / audit_mib)
    say(name, "streamed_labels_equal", bool(torch.equal(streamed.labels, whole.labels)))
    shutil.rmtree(directory, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="llama2-7b,llama3-8b", help=f"comma list of {', '.join(SHAPES)}")
    parser.add_argument(
        "--shape", help="JSON overrides of the shape's config fields, e.g. '{\"num_hidden_layers\": 4}'"
    )
    parser.add_argument("--tiny", action="store_true", help="the tiny shape and small sizes: a CPU check in seconds")
    parser.add_argument("--device", default=None, help="default: cuda if present, else cpu")
    parser.add_argument("--pairs", type=int, default=128, help="pairs of each calibration set")
    parser.add_argument("--tokens", type=int, default=200, help="tokens per calibration pair")
    parser.add_argument("--batch-size", type=int, default=16, help="pairs per audit and forward batch")
    parser.add_argument("--train-batch", type=int, default=8, help="pairs per training step")
    parser.add_argument("--steps", type=int, default=3, help="timed training steps per phase (median)")
    parser.add_argument("--gen-batch", type=int, default=64, help="prompts generated together")
    parser.add_argument("--gen-tokens", type=int, default=128, help="new tokens per prompt")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scratch", default=None, help="directory for the saved checkpoints (default: a temp dir)")
    args = parser.parse_args()
    if args.tiny:
        args.config = "tiny"
        for name, value in (("pairs", 8), ("batch_size", 4), ("train_batch", 4), ("steps", 2)):
            setattr(args, name, value)
        args.gen_batch, args.gen_tokens = 4, 8
        args.tokens = 96
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    print(f"device={device}" + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""))
    print(f"dtype={str(dtype).removeprefix('torch.')}")
    print(f"torch={torch.__version__}")
    overrides = json.loads(args.shape) if args.shape else {}
    with tempfile.TemporaryDirectory(dir=args.scratch) as scratch:
        for name in filter(None, (part.strip() for part in args.config.split(","))):
            if name not in SHAPES:
                parser.error(f"unknown shape {name!r}; shapes: {', '.join(SHAPES)}")
            started = time.perf_counter()
            check_shape(name, {**SHAPES[name], **overrides}, args, device, dtype, Path(scratch))
            say(name, "total_seconds", time.perf_counter() - started)
            if device.type == "cuda":
                torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
