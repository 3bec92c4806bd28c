"""Command-line flags built from an engine config's fields (``ssah_engine.settings_fields``).

``--field-name`` per field, with the field's default, choices and help; booleans get ``--x/--no-x``;
tuples are comma lists. The values go back through the config's ``from_dict``, which validates them.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from collections.abc import Iterable

from ssah_engine.settings_fields import SettingField, setting_fields


def _comma_list(item_type: type):
    def parse(text: str) -> tuple:
        try:
            return tuple(item_type(part.strip()) for part in text.split(",") if part.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a comma list of {item_type.__name__}, got {text!r}") from None

    return parse


def _or_none(kind: type):
    """``kind``, or None for the word 'none' (an optional field such as max_grad_norm turned off; its help
    says what None means)."""

    def parse(text: str):
        return None if text.strip().lower() == "none" else kind(text)

    parse.__name__ = kind.__name__  # argparse names the type in its error messages
    return parse


def _parsed(kind: type):
    def parse(text: str):
        try:
            return kind.parse(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    return parse


def _show(value) -> str:
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


def _add_flag(parser: argparse.ArgumentParser, setting: SettingField, help_text: str | None) -> None:
    flag = "--" + setting.name.replace("_", "-")
    text = (help_text or setting.help).replace("%", "%%")  # argparse expands %-formats in help
    kind = setting.base_type
    if kind is bool:
        parser.add_argument(
            flag, dest=setting.name, action=argparse.BooleanOptionalAction, default=setting.default, help=text
        )
        return
    if dataclasses.is_dataclass(kind):  # a nested setting with a text form, e.g. Cuts "0.10,0.01,0.10"
        parser.add_argument(
            flag,
            dest=setting.name,
            type=_parsed(kind),
            default=setting.default,
            help=f"{text} (default: {kind.format(setting.default)})",
        )
        return
    if typing.get_origin(kind) is tuple:
        item_type = typing.get_args(kind)[0]
        parser.add_argument(
            flag,
            dest=setting.name,
            type=_comma_list(item_type),
            default=setting.default,
            metavar="A,B,...",
            help=f"{text} (default: {_show(setting.default) or 'none'})",
        )
        return
    default_note = "" if setting.default in (None, "") else f" (default: {setting.default})"
    parse = _or_none(kind) if setting.optional and setting.choices is None and kind is not str else kind
    parser.add_argument(
        flag, dest=setting.name, type=parse, choices=setting.choices, default=setting.default, help=text + default_note
    )


def add_config_flags(
    parser: argparse.ArgumentParser,
    config_cls: type,
    *,
    skip: Iterable[str] = (),
    help_overrides: dict[str, str] | None = None,
) -> list[str]:
    """Add one flag per field of ``config_cls`` except ``skip``; returns the field names added."""
    skip, overrides, added = set(skip), help_overrides or {}, []
    for setting in setting_fields(config_cls):
        if setting.name not in skip:
            _add_flag(parser, setting, overrides.get(setting.name))
            added.append(setting.name)
    return added


def add_prefixed_flags(
    parser: argparse.ArgumentParser, config_cls: type, prefix: str, *, skip: Iterable[str] = ()
) -> list[str]:
    """``--PREFIX-field`` flags (dest ``PREFIX_field``) for a nested config such as the evaluation's judge.

    Unset flags stay None, so a value from a protocol file is overridden only by the flags given."""
    skip, added = set(skip), []
    for setting in setting_fields(config_cls):
        if setting.name not in skip:
            nested = dataclasses.replace(setting, name=f"{prefix}_{setting.name}", default=None)
            _add_flag(parser, nested, setting.help)
            default = _show(setting.default) if setting.default not in (None, "") else "none"
            parser._actions[-1].help = f"{setting.help} (default: {default})".replace("%", "%%")  # the config's default
            added.append(setting.name)
    return added


def config_values(args: argparse.Namespace, names: Iterable[str]) -> dict:
    """The parsed values of the config flags ``names``, ready for the config's ``from_dict``."""
    return {name: getattr(args, name) for name in names}
