"""Passing a key/value cache to a model across transformers versions.

Transformers 5.x renamed the ``past_key_values`` argument and output field to ``cache``; older
releases ignore an unknown ``cache=`` keyword silently, which would drop the prompt context.
"""

from __future__ import annotations

import inspect

from torch import nn


def cache_argument(module: nn.Module) -> str:
    """The keyword ``module.forward`` takes a cache under (``cache`` or ``past_key_values``)."""
    return "cache" if "cache" in inspect.signature(module.forward).parameters else "past_key_values"


def returned_cache(output):
    """The cache a forward pass with ``use_cache=True`` returned."""
    return output["cache"] if "cache" in output else output["past_key_values"]
