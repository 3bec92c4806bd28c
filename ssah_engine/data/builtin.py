"""The datasets shipped with the package under `ssah_engine/data/builtin/`."""

from __future__ import annotations

from importlib import resources
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

BUILTIN_PREFIX = "builtin:"
_SUFFIXES = (".jsonl", ".txt")


def _builtin_dir() -> Traversable:
    return resources.files(__package__).joinpath("builtin")


def _builtin_files() -> dict[str, Traversable]:
    found: dict[str, Traversable] = {}
    root = _builtin_dir()
    if not root.is_dir():
        return found
    for entry in root.iterdir():
        name = entry.name
        for suffix in _SUFFIXES:
            if entry.is_file() and name.endswith(suffix):
                found[name[: -len(suffix)]] = entry
    return found


def builtin_names() -> list[str]:
    """Names accepted by `load_dataset("builtin:NAME")`, sorted."""
    return sorted(_builtin_files())


def builtin_file(name: str) -> Traversable | None:
    """The shipped file for `name`, or None when there is no such builtin set."""
    return _builtin_files().get(name)
