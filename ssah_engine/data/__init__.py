"""Prompt/response datasets for calibration, evaluation and fine-tuning.

`load_dataset(source)` reads `builtin:NAME` (sets shipped with the package, see
`builtin_names()`), `hf:org/name[:split][?config=..&revision=..&prompt=COLUMN..]`, a named
benchmark `bench:NAME[/SUBSET][=PATH]` (see `BENCHMARKS`), or a .csv (AdvBench/HarmBench), .jsonl,
.json (Alpaca-style) or .txt file, and returns an immutable `Dataset` with a content hash.
"""

from .benchmarks import BENCHMARKS, benchmark_names, benchmark_role
from .builtin import builtin_names
from .examples import Dataset, DatasetError, Example, content_sha256
from .loaders import load_dataset

__all__ = [
    "BENCHMARKS",
    "benchmark_names",
    "benchmark_role",
    "Dataset",
    "DatasetError",
    "Example",
    "builtin_names",
    "content_sha256",
    "load_dataset",
]
