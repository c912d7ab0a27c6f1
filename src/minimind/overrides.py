"""`key=value` overrides of a config dataclass, as typed on the command line."""

from __future__ import annotations

import dataclasses
import json
from typing import TypeVar

from minimind.errors import MiniMindError

T = TypeVar("T")


def apply_overrides(config: T, items: list[str]) -> T:
    """Return a copy of dataclass `config` with each "key=value" applied. Values are read as JSON
    (numbers, true/false, null, objects) and otherwise as strings; the dataclass validates the types."""
    names = {f.name for f in dataclasses.fields(config)}
    changes = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise MiniMindError(f"override {item!r} is not of the form key=value")
        if key not in names:
            raise MiniMindError(f"unknown config key {key!r} in override {item!r}")
        try:
            changes[key] = json.loads(raw)
        except json.JSONDecodeError:
            changes[key] = raw
    return dataclasses.replace(config, **changes)
