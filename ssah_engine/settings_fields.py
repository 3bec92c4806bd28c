"""The fields of a job's engine config, described once for every front end that exposes them.

Each config (``AuditConfig``, ``FinetuneConfig``, ``ProbeConfig``) is a frozen dataclass whose
fields carry ``metadata={"help": ..., "choices": ..., "ge"/"gt"/"le"/"lt": ...}``. The CLI's flags and the REST schemas are
built from this description, so a field, its default, its allowed values and its help text exist
in one place; the config's own ``__post_init__`` stays the one validator.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any

BOUND_KEYS = ("ge", "gt", "le", "lt")


@dataclass(frozen=True)
class SettingField:
    name: str
    annotation: Any  # the resolved type hint, e.g. int, str | None, tuple[str, ...]
    default: Any
    help: str
    choices: tuple | None = None
    bounds: dict = dataclasses.field(default_factory=dict)  # ge/gt/le/lt, for a front end to check early

    @property
    def optional(self) -> bool:
        return type(None) in typing.get_args(self.annotation)

    @property
    def base_type(self) -> Any:
        """The annotation without ``| None``."""
        args = [arg for arg in typing.get_args(self.annotation) if arg is not type(None)]
        return args[0] if self.optional and len(args) == 1 else self.annotation


def setting_fields(config_cls: type) -> list[SettingField]:
    """Every field of ``config_cls`` in declaration order, with its default (factories called)."""
    hints = typing.get_type_hints(config_cls)
    described = []
    for item in dataclasses.fields(config_cls):
        if item.default is not dataclasses.MISSING:
            default = item.default
        elif item.default_factory is not dataclasses.MISSING:
            default = item.default_factory()
        else:
            raise TypeError(f"{config_cls.__name__}.{item.name} has no default: every setting needs one")
        choices = item.metadata.get("choices")
        bounds = {key: item.metadata[key] for key in BOUND_KEYS if key in item.metadata}
        described.append(
            SettingField(
                item.name,
                hints[item.name],
                default,
                item.metadata.get("help", ""),
                tuple(choices) if choices is not None else None,
                bounds,
            )
        )
    return described
