"""Prompt/response datasets for calibration, evaluation and fine-tuning.

`load_dataset(source)` reads `builtin:NAME` (sets shipped with the package, see
`builtin_names()`), `hf:org/name[:split]`, or a .csv (AdvBench/HarmBench), .jsonl,
.json (Alpaca-style) or .txt file, and returns an immutable `Dataset` with a content hash.
"""

from .builtin import builtin_names
from .examples import Dataset, DatasetError, Example, content_sha256
from .loaders import load_dataset

__all__ = [
    "Dataset",
    "DatasetError",
    "Example",
    "builtin_names",
    "content_sha256",
    "load_dataset",
]
