"""The in-memory form of a dataset: examples, a content hash, and the error loaders raise."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np


@dataclass(frozen=True)
class Example:
    """One prompt, with the response to score or train on (None for prompt-only sets).

    ``id`` and ``category`` are a benchmark's own labels (HarmBench ``BehaviorID``, JailbreakBench
    ``Category``...), carried to every evaluation record so results can be broken down by them.
    """

    prompt: str
    response: str | None = None
    id: str | None = None
    category: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.prompt, str):
            raise TypeError(f"Example.prompt must be a str, got {type(self.prompt).__name__}")
        for name in ("response", "id", "category"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise TypeError(f"Example.{name} must be a str or None, got {type(value).__name__}")

    @property
    def metadata(self) -> dict[str, str]:
        """The labels that are set (``id``, ``category``); empty for a plain prompt."""
        return {name: value for name in ("id", "category") if (value := getattr(self, name)) is not None}


def content_sha256(examples: Iterable[Example]) -> str:
    """Hash of the canonical content, so the same examples hash the same from any file format.

    An example's labels count only when it has some, so sets without labels keep the hash they had
    before labels existed (pinned protocols stay valid).
    """
    canonical = [[ex.prompt, ex.response, ex.metadata] if ex.metadata else [ex.prompt, ex.response] for ex in examples]
    text = json.dumps(canonical, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Dataset:
    """A named, ordered, immutable set of examples with its content hash.

    `sha256` may be left out; it is then computed from `examples`. A hash given explicitly
    must match the content, so a stored hash can be checked by rebuilding the dataset.
    """

    name: str
    examples: tuple[Example, ...]
    sha256: str = field(default="")

    def __post_init__(self) -> None:
        examples = tuple(self.examples)
        for i, ex in enumerate(examples):
            if not isinstance(ex, Example):
                raise TypeError(f"Dataset.examples[{i}] is {type(ex).__name__}, not Example")
        object.__setattr__(self, "examples", examples)
        digest = content_sha256(examples)
        if self.sha256 and self.sha256 != digest:
            raise ValueError(f"Dataset {self.name!r}: sha256 {self.sha256} does not match its content ({digest})")
        object.__setattr__(self, "sha256", digest)

    def __len__(self) -> int:
        return len(self.examples)

    @property
    def has_responses(self) -> bool:
        """True when every example carries a response."""
        return all(ex.response is not None for ex in self.examples)

    def take(self, n: int | None) -> "Dataset":
        """The first `n` examples (all of them when `n` is None or larger than the set)."""
        if n is None:
            return self
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"take(n): n must be a non-negative int or None, got {n!r}")
        if n >= len(self.examples):
            return self
        return Dataset(name=self.name, examples=self.examples[:n])

    def sample(self, n: int | None, seed: int = 0) -> "Dataset":
        """``n`` examples in seeded random order (all of them, shuffled, when ``n`` is None or larger).

        The same draw as Hugging Face's ``shuffle(seed=seed).select(range(n))``, which the SSAH
        authors used: numpy's ``default_rng(seed).permutation``.
        """
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"sample(seed): seed must be a non-negative int, got {seed!r}")
        order = np.random.default_rng(seed).permutation(len(self.examples))
        count = len(self.take(n))  # take validates n
        return Dataset(name=self.name, examples=tuple(self.examples[i] for i in order[:count]))


class DatasetError(ValueError):
    """A dataset could not be read; the message names the file, the line (1-based) and the field.

    Attributes `path`, `line` and `field` hold the same facts for programs (None where they
    do not apply); `reason` is the message without the location.
    """

    def __init__(
        self,
        reason: str,
        path: str | None = None,
        line: int | None = None,
        field: str | None = None,
        line_label: str = "line",
    ) -> None:
        self.reason = reason
        self.path = path
        self.line = line
        self.field = field
        self.line_label = line_label
        where = []
        if path is not None:
            where.append(str(path))
        if line is not None:
            where.append(f"{line_label} {line}")
        if field is not None:
            where.append(f"field {field!r}")
        message = f"{', '.join(where)}: {reason}" if where else reason
        super().__init__(message)

    def __reduce__(self):
        # Rebuild from the parts so the attributes survive pickling (e.g. across processes).
        return (
            type(self),
            (self.reason, self.path, self.line, self.field, self.line_label),
        )
