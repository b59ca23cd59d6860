"""Strict conversion of YAML mappings into frozen dataclasses.

Written by hand because the standard library has no validating loader and pydantic would be a
second way of declaring configs next to the dataclasses the rest of the suite uses. Errors name
the file and the full key path (``students[1].method``).
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar, Union

from clir_eval.io import short_repr

T = TypeVar("T")


class ConfigError(ValueError):
    """A config value is missing, unknown or of the wrong type; the message names the key.

    Several problems may be given at once, one line each (``errors``).
    """

    def __init__(self, *lines: str, partial: Any = None) -> None:
        self.errors = list(lines)
        # What could be built all the same, with defaults for what was refused (None if nothing could be).
        self.partial = partial
        super().__init__("\n".join(lines))


class FieldProblems(ValueError):
    """What a dataclass's ``__post_init__`` refuses, every problem at once: ``(field, message)`` pairs.

    ``field`` is the field to blame ("" when no one field is), so that :func:`build` can report the problem
    and go on checking the rest of the config with that field at its default.
    """

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(message for _, message in self.problems))


def raise_problems(problems: list[tuple[str, str]]) -> None:
    """Raise :class:`FieldProblems` when ``problems`` is not empty (the end of a collecting ``__post_init__``)."""
    if problems:
        raise FieldProblems(problems)


@dataclasses.dataclass(frozen=True)
class Built:
    """What :func:`build` made: the object (None when no object could be made), every problem found, and the
    fields set to their default because their value was refused."""

    value: Any
    errors: tuple[str, ...]
    defaulted: frozenset[str]


# YAML 1.1 (PyYAML) reads ``1e-5`` as a string: it wants a dot (``1.0e-5``). A number of this shape is a number.
_DECIMAL = re.compile(r"[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")
_INT64 = 2**63 - 1  # no int setting means more; numpy, torch and faiss take no larger


def _describe(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _number(value: Any, tp: type, where: str) -> int | float:
    """``value`` as a finite ``int`` or ``float`` (``tp``); a number written as a string is read as one."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ConfigError(f"{where}: expected {tp.__name__}, got {short_repr(value)}")
    if isinstance(value, str):
        text = value.strip()
        if len(text) > 400 or not _DECIMAL.fullmatch(text):
            raise ConfigError(f"{where}: expected {tp.__name__}, got {short_repr(value)}")
        value = float(text) if tp is float or not text.lstrip("+-").isdigit() else int(text)
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{where}: must be a finite number, got {value}")
    if tp is int:
        if isinstance(value, float):
            if not value.is_integer():
                raise ConfigError(f"{where}: expected int, got {value}")
            value = int(value)
        if abs(value) > _INT64:
            raise ConfigError(f"{where}: {short_repr(value)} is out of range (at most {_INT64} in magnitude)")
        return value
    return float(value)


def _convert(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, where)
            except ConfigError as exc:
                errors.append(exc)
        if len(errors) == 1:
            raise errors[0]
        raise ConfigError(f"{where}: expected {_describe(tp)}, got {short_repr(value)}")
    if origin is typing.Literal:
        if not isinstance(value, typing.Hashable) or value not in args:
            raise ConfigError(f"{where}: must be one of {list(args)}, got {short_repr(value)}")
        return value
    if dataclasses.is_dataclass(tp):
        built = build(tp, value, where)
        if built.errors:
            raise ConfigError(*built.errors, partial=built.value)
        return built.value
    if origin in (tuple, list):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {short_repr(value)}")
        if origin is tuple and len(args) > 1 and args[1] is not Ellipsis:  # fixed length: tuple[str, str]
            if len(value) != len(args):
                raise ConfigError(f"{where}: expected a list of {len(args)} items, got {short_repr(value)}")
            pairs = [(v, t, f"{where}[{i}]") for i, (v, t) in enumerate(zip(value, args))]
        else:
            item_type = args[0] if args else Any
            pairs = [(v, item_type, f"{where}[{i}]") for i, v in enumerate(value)]
        try:
            items = _convert_all(pairs)
        except ConfigError as exc:
            partial = exc.partial
            raise ConfigError(*exc.errors, partial=None if partial is None else
                              tuple(partial) if origin is tuple else partial) from None
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {short_repr(value)}")
        key_type, val_type = args if args else (Any, Any)
        keys = _convert_all([(k, key_type, where) for k in value])
        values = _convert_all([(v, val_type, f"{where}.{k}") for k, v in value.items()])
        return dict(zip(keys, values))
    if tp in (int, float):
        return _number(value, tp, where)
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"{where}: expected {_describe(tp)}, got {short_repr(value)}")
    return value


def _convert_all(items: list[tuple[Any, Any, str]]) -> list[Any]:
    """Convert every ``(value, type, where)``, reporting the problems of all of them together."""
    converted, errors, complete = [], [], True
    for value, tp, where in items:
        try:
            converted.append(_convert(value, tp, where))
        except ConfigError as exc:
            errors += exc.errors
            converted.append(exc.partial)
            complete &= exc.partial is not None
    if errors:
        raise ConfigError(*errors, partial=converted if complete else None)
    return converted


def _has_default(field: dataclasses.Field) -> bool:
    return field.default is not dataclasses.MISSING or field.default_factory is not dataclasses.MISSING


def build(cls: type[T], data: Any, where: str = "config") -> Built:
    """Build dataclass ``cls`` from a mapping, collecting every problem instead of stopping at the first.

    A refused value whose field has a default is reported and replaced by the default, so the rest of the
    config is still checked (and the object can still be made for checks that need it); a problem without
    such a way round (a required field, a check across fields) leaves ``value`` None.
    """
    if not isinstance(data, dict):
        return Built(None, (f"{where}: expected a mapping, got {short_repr(data)}",), frozenset())
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    errors: list[str] = []
    unknown = [key for key in data if key not in fields]
    if unknown:
        errors.append(f"{where}: unknown key(s) {sorted(map(str, unknown))}; valid keys are {sorted(fields)}")
    kwargs: dict[str, Any] = {}
    defaulted: set[str] = set()
    fatal = False
    for name, field in fields.items():
        if name in data:
            try:
                kwargs[name] = _convert(data[name], hints[name], f"{where}.{name}")
            except ConfigError as exc:
                # Refused in part or whole: the part built (refused values at their defaults), else the default.
                errors += exc.errors
                defaulted.add(name)
                if exc.partial is not None:
                    kwargs[name] = exc.partial
                else:
                    fatal |= not _has_default(field)
        elif not _has_default(field):
            errors.append(f"{where}: missing required key {name!r}")
            fatal = True
    while not fatal:
        try:
            return Built(cls(**kwargs), tuple(errors), frozenset(defaulted))
        except FieldProblems as exc:
            errors += [f"{where}: {message}" for _, message in exc.problems]
            blamed = {name for name, _ in exc.problems}
            # Retry with the blamed fields at their defaults; give up where that cannot help.
            if not blamed <= (set(kwargs) & {n for n, f in fields.items() if _has_default(f)}):
                fatal = True
            for name in blamed & set(kwargs):
                del kwargs[name]
                defaulted.add(name)
        except ConfigError as exc:
            errors += exc.errors
            fatal = True
        except (ValueError, TypeError) as exc:
            errors.append(f"{where}: {exc}")
            fatal = True
    return Built(None, tuple(errors), frozenset(defaulted))


def from_mapping(cls: type[T], data: Any, where: str = "config") -> T:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys and wrong types.

    ``__post_init__`` validation errors (``ValueError``) are re-raised as :class:`ConfigError`
    prefixed with ``where``; every problem found is reported, one line each.
    """
    built = build(cls, data, where)
    if built.errors:
        raise ConfigError(*built.errors)
    return built.value


def convert_known(cls: type, data: dict[str, Any], where: str) -> dict[str, Any]:
    """``data`` with the value of each field of dataclass ``cls`` converted to the field's type (numbers written
    as strings read as numbers); other keys are left for ``cls`` to judge.

    Raises:
        ConfigError: one line per value refused.
    """
    hints = typing.get_type_hints(cls)
    known = [(name, value) for name, value in data.items() if name in hints]
    converted = _convert_all([(value, hints[name], f"{where}.{name}") for name, value in known])
    return {**data, **dict(zip((name for name, _ in known), converted))}


def to_mapping(obj: Any) -> Any:
    """Dataclass (nested) -> plain dicts/lists, for manifests and hashing."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_mapping(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_mapping(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): to_mapping(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj
