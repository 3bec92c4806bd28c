"""Layer-streamed audit against the whole-model audit: peak memory and time, same unit map.

Each mode runs in a fresh process on the same pairs; its peak RSS growth is ``ru_maxrss`` at the
end minus the RSS after imports (the model's weights, activations, tokenizer and statistics, not
the interpreter). The imports include the model family's transformers code, which transformers
imports lazily on the first load (~70 MiB for SmolLM2's Llama code, the same in both modes).
Time covers loading and scoring (the streamed audit reads its weights while it scores). Prints
``peak_ratio=`` (streamed / whole; issue 21 target <= 0.35), ``time_ratio=`` (target <= 1.3) and
whether the labels agree. One pair of runs: on a busy machine time the two modes over several
runs (``--mode whole|streamed --out DIR``, one process each) and quote the median.

    python bench/streamed_audit.py --model builtin:smollm2 --pairs 16
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _rss_mib() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _import_model_code(source: str, options) -> None:
    """Import the transformers modules that load ``source`` (code both modes run, not model memory)."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    from ssah_engine.loading import resolve_source

    MODEL_FOR_CAUSAL_LM_MAPPING[type(AutoConfig.from_pretrained(resolve_source(source, options)[0]))]


def child(args) -> None:
    import torch

    from ssah_engine.audit import run_audit
    from ssah_engine.audit_config import AuditConfig
    from ssah_engine.data import load_dataset
    from ssah_engine.loading import LoadOptions, load_model
    from ssah_engine.streaming import load_streamed

    torch.set_num_threads(args.threads)
    safety, utility = load_dataset("builtin:safety"), load_dataset("builtin:utility")
    options = LoadOptions(device="cpu", dtype="float32")
    _import_model_code(args.model, options)
    config = AuditConfig(samples=args.pairs, batch_size=args.batch_size, stream_layers=args.mode == "streamed")
    baseline = _rss_mib()
    started = time.perf_counter()
    loaded = load_streamed(args.model, options) if config.stream_layers else load_model(args.model, options)
    unit_map = run_audit(loaded, safety, utility, config)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    unit_map.save(Path(args.out))
    print(json.dumps({"seconds": seconds, "peak_growth_mib": peak - baseline, "baseline_mib": baseline}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="builtin:smollm2")
    parser.add_argument("--pairs", type=int, default=16, help="pairs per calibration set")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--mode", choices=("whole", "streamed"), help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode:
        child(args)
        return

    import torch

    from ssah_engine.unitmap import UnitMap

    results, maps = {}, {}
    with tempfile.TemporaryDirectory() as scratch:
        for mode in ("whole", "streamed"):
            out = Path(scratch) / mode
            command = [sys.executable, __file__, "--mode", mode, "--out", str(out), "--model", args.model]
            command += [
                "--pairs",
                str(args.pairs),
                "--batch-size",
                str(args.batch_size),
                "--threads",
                str(args.threads),
            ]
            finished = subprocess.run(command, check=True, capture_output=True, text=True)
            results[mode] = json.loads(finished.stdout.strip().splitlines()[-1])
            maps[mode] = UnitMap.load(out)
            print(
                f"{mode}: {results[mode]['seconds']:.1f} s, peak RSS growth {results[mode]['peak_growth_mib']:.0f} MiB"
            )
    whole, streamed = maps["whole"], maps["streamed"]
    print(f"labels_equal={bool(torch.equal(whole.labels, streamed.labels))}")
    print(f"max_score_diff={float((whole.z_safety - streamed.z_safety).abs().max()):.2e}")
    print(f"peak_ratio={results['streamed']['peak_growth_mib'] / results['whole']['peak_growth_mib']:.3f}")
    print(f"time_ratio={results['streamed']['seconds'] / results['whole']['seconds']:.3f}")
    print(f"load_average={os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
