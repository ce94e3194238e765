"""Settings dataclasses: each setting's one home (default, help text, allowed values).

A step's settings are a frozen dataclass whose fields are made with `setting(...)`.
The CLI generates its flags from them (pipelines.cli_flags), the KFP components and
the pipeline spell them out because KFP needs literal signatures (a test checks that
they match), and `check` reports every bad value at once, before any work starts.

    @dataclass(frozen=True)
    class VocabSettings:
        vocab_size: int = setting(30522, "size of the WordPiece vocab", minimum=5)
"""

from __future__ import annotations

import dataclasses
import math
import typing
from typing import Any

from components.core.errors import BertpipeError

_MISSING = dataclasses.MISSING


def setting(default: Any = _MISSING, help: str = "", *, choices: tuple | None = None, minimum: float | None = None,
            maximum: float | None = None, above: float | None = None, below: float | None = None) -> Any:
    """A dataclass field with its help text and bounds: `minimum`/`maximum` inclusive, `above`/`below` exclusive."""
    if not help:
        raise ValueError("every setting needs a help text")
    metadata = {"help": help, "choices": choices, "minimum": minimum, "maximum": maximum, "above": above, "below": below}
    return dataclasses.field(default=default, metadata=metadata)


def field_types(cls) -> dict[str, type]:
    """Each field's type (resolved from string annotations)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def describe(cls) -> list[dict]:
    """name, type, default (or MISSING), help and bounds of every field, in order."""
    types = field_types(cls)
    return [{"name": f.name, "type": types[f.name], "default": f.default, **f.metadata} for f in dataclasses.fields(cls)]


def _bound_problems(name: str, value, meta: dict) -> list[str]:
    problems = []
    if meta.get("choices") and value not in meta["choices"]:
        problems.append(f"{name}={value!r}: must be one of {', '.join(map(str, meta['choices']))}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if isinstance(value, float) and not math.isfinite(value):
            return [f"{name}={value!r}: must be a finite number"]
        limits = (("minimum", lambda v, b: v >= b, "at least"), ("maximum", lambda v, b: v <= b, "at most"),
                  ("above", lambda v, b: v > b, "greater than"), ("below", lambda v, b: v < b, "less than"))
        for key, ok, words in limits:
            bound = meta.get(key)
            if bound is not None and not ok(value, bound):
                problems.append(f"{name}={value!r}: must be {words} {bound:g}")
    return problems


def _type_problem(name: str, value, kind: type) -> str | None:
    if kind is bool:
        good = isinstance(value, bool)
    elif kind is int:
        good = isinstance(value, int) and not isinstance(value, bool)
    elif kind is float:
        good = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif kind is str:
        good = isinstance(value, str)
    else:
        return None
    return None if good else f"{name}={value!r}: must be {'a' if kind is not int else 'an'} {kind.__name__}"


def value_problems(cls, field_name: str, value, shown_as: str | None = None) -> list[str]:
    """What is wrong with `value` for one field of `cls`, named `shown_as` (e.g. the pipeline's name for it)."""
    shown_as = shown_as or field_name
    meta = next(f.metadata for f in dataclasses.fields(cls) if f.name == field_name)
    wrong_type = _type_problem(shown_as, value, field_types(cls)[field_name])
    return [wrong_type] if wrong_type else _bound_problems(shown_as, value, meta)


def problems(settings) -> list[str]:
    """Every bad value of a settings object, one line each (empty: all good).

    A class may add checks that span several fields with a `cross_checks()` method
    returning more lines; it runs only when each field is fine on its own.
    """
    found = []
    for f in dataclasses.fields(settings):
        found += value_problems(type(settings), f.name, getattr(settings, f.name))
    if not found and hasattr(settings, "cross_checks"):
        found += settings.cross_checks()
    return found


def check(settings, step: str) -> None:
    """Raise one BertpipeError that lists every bad value of `settings`."""
    found = problems(settings)
    if found:
        raise BertpipeError(f"{step}: " + "; ".join(found))


def from_mapping(cls, values: dict):
    """Build `cls` from a JSON-like mapping: whole floats become ints where the field is an int
    (KFP and JSON turn every number into a float64), unknown keys are refused."""
    types = field_types(cls)
    unknown = sorted(set(values) - set(types))
    if unknown:
        raise BertpipeError(f"{cls.__name__}: unknown settings {', '.join(unknown)}")
    coerced = {}
    for name, value in values.items():
        if types[name] is int and isinstance(value, float) and value.is_integer():
            value = int(value)
        coerced[name] = value
    return cls(**coerced)


def as_dict(settings) -> dict:
    return dataclasses.asdict(settings)


def pick(cls, namespace: dict):
    """`cls` from the entries of `namespace` that are its fields (a KFP component passes its `locals()`)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return from_mapping(cls, {name: value for name, value in namespace.items() if name in names})
