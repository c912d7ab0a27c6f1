"""Tools an agent may call during RL rollouts: whitelisted Python functions with a time limit.

A tool is a function of its JSON arguments returning text, with the OpenAI function schema the prompt shows.
Built in: `calculator` (an AST evaluator — never eval/exec — with bounded magnitudes), `convert_units`
(length, mass, volume, time, temperature) and `lookup` (small fact tables). `register_tool` adds more. A call
runs in a worker thread with `timeout` seconds; a failure of any kind — unknown tool, bad arguments, an
exception, the time limit — becomes the text "error: …", which the model sees as the tool's answer.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable
from dataclasses import dataclass

from minimind.data.default.calculator import CALCULATOR_TOOL, CalculatorError, calculate, format_number


@dataclass
class Tool:
    schema: dict                          # {"type": "function", "function": {"name", "description", "parameters"}}
    function: Callable[..., str]          # keyword arguments from the call's JSON → text


def _schema(name: str, description: str, properties: dict, required: list[str]) -> dict:
    return {"type": "function", "function": {"name": name, "description": description, "parameters": {
        "type": "object", "properties": properties, "required": required}}}


def _calculator(expression: str) -> str:
    return format_number(calculate(expression))


UNITS = {  # unit → (dimension, value in the dimension's base unit)
    "mm": ("length", 0.001), "cm": ("length", 0.01), "m": ("length", 1.0), "km": ("length", 1000.0),
    "in": ("length", 0.0254), "ft": ("length", 0.3048), "mi": ("length", 1609.344),
    "g": ("mass", 0.001), "kg": ("mass", 1.0), "lb": ("mass", 0.45359237), "oz": ("mass", 0.028349523125),
    "ml": ("volume", 0.001), "l": ("volume", 1.0), "gal": ("volume", 3.785411784),
    "s": ("time", 1.0), "min": ("time", 60.0), "h": ("time", 3600.0), "day": ("time", 86400.0),
}
TEMPERATURES = {"c": (1.0, 0.0), "f": (5 / 9, -32 * 5 / 9), "k": (1.0, -273.15)}     # → °C = a·x + b


def _convert_units(value: float, from_unit: str, to_unit: str) -> str:
    a, b = from_unit.strip().lower(), to_unit.strip().lower()
    if a in TEMPERATURES and b in TEMPERATURES:
        celsius = TEMPERATURES[a][0] * float(value) + TEMPERATURES[a][1]
        return format_number(round((celsius - TEMPERATURES[b][1]) / TEMPERATURES[b][0], 10))
    if a not in UNITS or b not in UNITS:
        raise ValueError(f"unknown unit {a if a not in UNITS else b!r}; known: {', '.join([*UNITS, 'c', 'f', 'k'])}")
    if UNITS[a][0] != UNITS[b][0]:
        raise ValueError(f"cannot convert {UNITS[a][0]} ({a}) to {UNITS[b][0]} ({b})")
    return format_number(round(float(value) * UNITS[a][1] / UNITS[b][1], 10))


FACTS = {
    "capital": {"france": "Paris", "japan": "Tokyo", "china": "Beijing", "germany": "Berlin", "italy": "Rome",
                "canada": "Ottawa", "australia": "Canberra", "brazil": "Brasília", "india": "New Delhi",
                "egypt": "Cairo", "spain": "Madrid", "kenya": "Nairobi"},
    "boiling_point_c": {"water": "100", "ethanol": "78.37", "mercury": "356.7", "nitrogen": "-195.8"},
    "days_in_month": {"january": "31", "february": "28 (29 in leap years)", "march": "31", "april": "30",
                      "may": "31", "june": "30", "july": "31", "august": "31", "september": "30",
                      "october": "31", "november": "30", "december": "31"},
}


def _lookup(table: str, key: str) -> str:
    rows = FACTS.get(table.strip().lower())
    if rows is None:
        raise ValueError(f"unknown table {table!r}; tables: {', '.join(FACTS)}")
    value = rows.get(key.strip().lower())
    if value is None:
        raise ValueError(f"{key!r} is not in table {table!r}")
    return value


TOOLS: dict[str, Tool] = {
    "calculator": Tool(CALCULATOR_TOOL, _calculator),
    "convert_units": Tool(_schema("convert_units", "Convert a value between units of length, mass, volume, time "
                                  "or temperature (c, f, k).",
                                  {"value": {"type": "number"}, "from_unit": {"type": "string"},
                                   "to_unit": {"type": "string"}}, ["value", "from_unit", "to_unit"]),
                          _convert_units),
    "lookup": Tool(_schema("lookup", "Look a key up in a fact table: " + ", ".join(FACTS) + ".",
                           {"table": {"type": "string"}, "key": {"type": "string"}}, ["table", "key"]), _lookup),
}


def register_tool(name: str, function: Callable[..., str], description: str, properties: dict,
                  required: list[str] | None = None) -> None:
    """Make `function` callable by agents under `name` (its parameters described as JSON-schema properties)."""
    TOOLS[name] = Tool(_schema(name, description, properties, list(required or properties)), function)


_POOL = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="minimind-tool")


def run_tool(call: dict, allowed: list[str], timeout: float = 2.0) -> str:
    """The text result of one call {"name", "arguments"} to an allowed tool, or "error: …"."""
    name, arguments = call.get("name"), call.get("arguments")
    if name not in allowed or name not in TOOLS:
        return f"error: unknown tool {name!r}"
    if not isinstance(arguments, dict):
        return "error: arguments must be a JSON object"
    future = _POOL.submit(TOOLS[name].function, **arguments)
    try:
        return str(future.result(timeout=timeout))
    except concurrent.futures.TimeoutError:
        future.cancel()
        return f"error: {name} took longer than {timeout} s"
    except (CalculatorError, ValueError, TypeError, ArithmeticError) as e:
        return f"error: {e}"
