"""Request fields derived from an engine config, so the API takes what the CLI takes, by the same names.

``settings_fields(FinetuneConfig, ...)`` gives pydantic fields with the config's defaults, allowed
values and help; the API adds only what is the server's business: upper limits on what a job may
cost (``limits``) and fields it keeps to itself (``exclude``: server paths, checkpoint handling).
The config's own ``__post_init__`` validates the combination (see ``engine_config``).
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

from ssah_engine.settings_fields import SettingField, setting_fields


@functools.cache
def _nested_model(config_cls: type) -> type[BaseModel]:
    """A nested setting (e.g. ``Cuts``) as a strict object of its own fields; the engine class validates it."""
    return create_model(  # type: ignore[call-overload]  # mypy checks **fields against the __dunder__ keywords
        config_cls.__name__,
        __config__=ConfigDict(extra="forbid"),
        __doc__=config_cls.__doc__,
        **settings_fields(config_cls),
    )


def _annotation(setting: SettingField) -> Any:
    if dataclasses.is_dataclass(setting.base_type):
        return _nested_model(typing.cast(type, setting.base_type))
    if setting.choices is None:
        return setting.annotation
    allowed = Literal[setting.choices]  # type: ignore[name-defined]  # the choices are known at run time only
    return allowed | None if setting.optional else allowed


def _field(setting: SettingField, extra: dict[str, Any]) -> Any:
    extra = {"description": setting.help, **setting.bounds, **extra}
    if dataclasses.is_dataclass(setting.base_type):  # the nested model, built from the engine's default
        model = _nested_model(typing.cast(type, setting.base_type))
        return Field(default_factory=functools.partial(model, **dataclasses.asdict(setting.default)), **extra)
    return Field(setting.default, **extra)


def settings_fields(
    config_cls: type, *, exclude: typing.Iterable[str] = (), limits: dict[str, dict[str, Any]] | None = None
) -> dict[str, tuple[Any, Any]]:
    """``{name: (type, Field)}`` for ``pydantic.create_model``: every field of ``config_cls`` but ``exclude``."""
    exclude, limits = set(exclude), limits or {}
    unknown = (exclude | set(limits)) - {setting.name for setting in setting_fields(config_cls)}
    if unknown:
        raise ValueError(f"{config_cls.__name__} has no field {', '.join(sorted(unknown))}")
    return {
        setting.name: (_annotation(setting), _field(setting, limits.get(setting.name, {})))
        for setting in setting_fields(config_cls)
        if setting.name not in exclude
    }


def setting_names(config_cls: type, *, exclude: typing.Iterable[str] = ()) -> tuple[str, ...]:
    exclude = set(exclude)
    return tuple(setting.name for setting in setting_fields(config_cls) if setting.name not in exclude)


def stored_config(config_cls: type, params: dict[str, Any], *, exclude: typing.Iterable[str] = ()):
    """The engine config of a request body or a stored job's parameters (``config_cls.from_dict`` validates)."""
    names = setting_names(config_cls, exclude=exclude)
    from_dict = config_cls.from_dict  # type: ignore[attr-defined]  # every engine config has one
    return from_dict({name: params[name] for name in names if name in params})


class EngineJob(BaseModel):
    """A job body whose settings are the fields of ``engine_config_class`` (less ``server_only``).

    Subclasses declare the row ids a job names; ``job_schema`` adds the settings. The engine's own
    validator runs on every body, so what it would refuse is a 422 before the job is queued.
    """

    model_config = ConfigDict(extra="forbid")
    engine_config_class: ClassVar[type]
    server_only: ClassVar[tuple[str, ...]] = ()

    @model_validator(mode="after")
    def _valid_config(self) -> EngineJob:
        self.check(self.engine_config())
        return self

    def check(self, config: Any) -> None:
        """What the job needs beyond its config's own checks (e.g. an audit for freeze mode)."""

    def engine_config(self) -> Any:
        return stored_config(self.engine_config_class, self.model_dump(mode="json"), exclude=self.server_only)


def job_schema(name: str, base: type[EngineJob], *, limits: dict[str, dict[str, Any]], module: str) -> Any:
    """The request model ``name``: ``base``'s fields and every setting of its engine config, capped by ``limits``.

    Typed ``Any``: the class is built at import time, so a type checker cannot see its fields."""
    settings = settings_fields(base.engine_config_class, exclude=base.server_only, limits=limits)
    return create_model(name, __base__=base, __module__=module, **settings)  # type: ignore[call-overload]
