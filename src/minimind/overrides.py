"""Typed config dataclasses from YAML dicts and `key=value` overrides (dotted keys reach nested sections).

Every value is checked against the field's annotation (int, float, bool, str, Literal[...], list[...], X | None,
nested dataclasses, dict); an unknown key or a value of the wrong type is an error naming the key.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

from minimind.errors import MiniMindError

T = TypeVar("T")


def from_dict(cls: type[T], data: dict, where: str = "") -> T:
    """Build dataclass `cls` from a (YAML) dict, recursively; missing keys keep their defaults."""
    if not isinstance(data, dict):
        raise MiniMindError(f"config{' ' + where if where else ''}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else key
        if key not in names:
            raise MiniMindError(f"unknown config key '{path}'")
        kwargs[key] = _convert(hints[key], value, path)
    try:
        return cls(**kwargs)
    except TypeError as e:              # a required field left out
        raise MiniMindError(f"config{' ' + where if where else ''}: {e}") from None


def to_dict(config) -> dict:
    return dataclasses.asdict(config)


def apply_overrides(config: T, items: list[str]) -> T:
    """A copy of dataclass `config` with each "key=value" (key may be dotted: optim.lr=1e-3) applied. Values are
    read as JSON (numbers, true/false, null, lists, objects) and otherwise as strings."""
    data = to_dict(config)
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise MiniMindError(f"override {item!r} is not of the form key=value")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        section = data
        *parents, leaf = key.split(".")
        for part in parents:
            if not isinstance(section.get(part), dict):
                raise MiniMindError(f"unknown config key '{key}' in override {item!r}")
            section = section[part]
        if leaf not in section:
            raise MiniMindError(f"unknown config key '{key}' in override {item!r}")
        section[leaf] = value
    return from_dict(type(config), data)


def load_yaml(config: T, path: str | Path | None, overrides: list[str]) -> T:
    """Dataclass `config` updated by the YAML file at `path` (if any), then by the "key=value" `overrides`, then
    checked by its `validate()`."""
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise MiniMindError(f"{path}: file not found")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise MiniMindError(f"{path}: not valid YAML ({e})") from None
        try:
            config = from_dict(type(config), to_dict(config) | data)
        except (MiniMindError, TypeError) as e:
            raise MiniMindError(f"{path}: {e}") from None
    config = apply_overrides(config, overrides)
    config.validate()
    return config


def _convert(annotation, value: Any, path: str):
    """`value` checked (and, for nested dataclasses, built) against `annotation`."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _convert(option, value, path)
            except MiniMindError as e:
                errors.append(e)
        raise errors[0]
    if dataclasses.is_dataclass(annotation):
        return value if isinstance(value, annotation) else from_dict(annotation, value, path)
    if origin is Literal:
        if value not in args:
            raise MiniMindError(f"config key '{path}' must be one of {', '.join(map(repr, args))}; got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise MiniMindError(f"config key '{path}' must be a list, got {value!r}")
        return [_convert(args[0], v, f"{path}[{i}]") for i, v in enumerate(value)] if args else value
    if annotation is Any:
        return value
    if origin is dict or annotation is dict:
        if not isinstance(value, dict):
            raise MiniMindError(f"config key '{path}' must be a mapping, got {value!r}")
        return value
    if annotation is bool:
        if not isinstance(value, bool):
            raise MiniMindError(f"config key '{path}' must be true or false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise MiniMindError(f"config key '{path}' must be an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise MiniMindError(f"config key '{path}' must be a number, got {value!r}")
        return float(value)
    if annotation is str:
        if isinstance(value, (int, float)) and not isinstance(value, bool):     # out=2024 read as JSON
            return str(value)
        if not isinstance(value, str):
            raise MiniMindError(f"config key '{path}' must be a string, got {value!r}")
        return value
    raise TypeError(f"unsupported annotation {annotation!r} for {path}")
