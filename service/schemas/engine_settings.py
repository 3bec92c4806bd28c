"""Request fields derived from an engine config, so the API takes what the CLI takes, by the same names.

``settings_fields(FinetuneConfig, ...)`` gives pydantic fields with the config's defaults, allowed
values and help; the API adds only what is the server's business: upper limits on what a job may
cost (``limits``) and fields it keeps to itself (``exclude``: server paths, checkpoint handling).
The config's own ``__post_init__`` validates the combination (see ``engine_config``).
"""

from __future__ import annotations

import typing
from typing import Any, Literal

from pydantic import Field

from ssah_engine.settings_fields import SettingField, setting_fields


def _annotation(setting: SettingField) -> Any:
    if setting.choices is None:
        return setting.annotation
    allowed = Literal[setting.choices]  # type: ignore[valid-type]
    return allowed | None if setting.optional else allowed


def settings_fields(config_cls: type, *, exclude: typing.Iterable[str] = (),
                    limits: dict[str, dict[str, Any]] | None = None) -> dict[str, tuple[Any, Any]]:
    """``{name: (type, Field)}`` for ``pydantic.create_model``: every field of ``config_cls`` but ``exclude``."""
    exclude, limits = set(exclude), limits or {}
    unknown = (exclude | set(limits)) - {setting.name for setting in setting_fields(config_cls)}
    if unknown:
        raise ValueError(f"{config_cls.__name__} has no field {', '.join(sorted(unknown))}")
    return {
        setting.name: (_annotation(setting), Field(setting.default,
                                                   **{"description": setting.help, **limits.get(setting.name, {})}))
        for setting in setting_fields(config_cls) if setting.name not in exclude
    }


def setting_names(config_cls: type, *, exclude: typing.Iterable[str] = ()) -> tuple[str, ...]:
    exclude = set(exclude)
    return tuple(setting.name for setting in setting_fields(config_cls) if setting.name not in exclude)
