"""CLI flags generated from a step's settings dataclass (components.core.settings), so the two never drift.

Each field becomes `--field-name` with the field's type, default and help text; bools
become `--name/--no-name`. `settings_from_args` builds the dataclass back from the
parsed namespace and checks it (every bad value reported at once).
"""

from __future__ import annotations

import argparse
import dataclasses

from components.core import settings as settings_core


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _help(entry: dict) -> str:
    text = entry["help"]
    if entry.get("choices"):
        text += f" (one of: {', '.join(map(str, entry['choices']))})"
    return text + (" (default: %(default)s)" if entry["default"] is not dataclasses.MISSING else "")


def add_settings_flags(parser: argparse.ArgumentParser, cls, *, defaults: dict | None = None, skip: tuple = ()) -> None:
    """One flag per field of `cls`; `defaults` overrides the dataclass's defaults for this command."""
    defaults = defaults or {}
    group = parser.add_argument_group(cls.__name__.removesuffix("Settings").lower() + " settings" if cls.__name__ != "Settings" else "settings")
    for entry in settings_core.describe(cls):
        name = entry["name"]
        if name in skip:
            continue
        default = defaults.get(name, entry["default"])
        required = default is dataclasses.MISSING
        kwargs = dict(default=None if required else default, required=required, help=_help({**entry, "default": default}))
        if entry["type"] is bool:
            group.add_argument(flag(name), action=argparse.BooleanOptionalAction, **kwargs)
        else:
            group.add_argument(flag(name), type=entry["type"], metavar=name.upper(), **kwargs)


def settings_from_args(cls, args: argparse.Namespace, step: str, **fixed):
    """The settings object from parsed flags (plus `fixed` fields), checked."""
    names = [f.name for f in dataclasses.fields(cls)]
    values = {name: getattr(args, name) for name in names if name not in fixed and hasattr(args, name)}
    built = cls(**values, **fixed)
    settings_core.check(built, step)
    return built
