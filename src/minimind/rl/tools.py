"""Tools an agent may call during RL rollouts: whitelisted Python functions, run in a separate process.

A tool is a function of its JSON arguments returning text, with the OpenAI function schema the prompt shows.
Built in: `calculator` (an AST evaluator — never eval/exec — with bounded magnitudes), `convert_units`
(length, mass, volume, time, temperature) and `lookup` (small fact tables). `register_tool` adds more.

Calls run in a worker process (forked once, re-forked when a tool is registered or the worker dies; it dies with
its parent) under limits: CPU time (the call's timeout, rounded up, + 1 s; the kernel stops it past that), address
space (`MEMORY_LIMIT` beyond what the worker starts with, on Linux), wall time (the worker is killed at `timeout`)
and `MAX_RESULT` characters of answer. A failure of any kind — unknown tool, bad arguments, any exception, a
non-finite number, a limit — becomes the text "error: …", which the model sees as the tool's answer.
"""

from __future__ import annotations

import ctypes
import importlib
import math
import multiprocessing
import os
import resource
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass

from minimind.data.default.calculator import CALCULATOR_TOOL, calculate, format_number
from minimind.errors import MiniMindError


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
    register_schema(_schema(name, description, properties, list(required or properties)), function)


def register_schema(schema: dict, function: Callable[..., str]) -> None:
    """Make `function` the implementation of an OpenAI function schema (e.g. one a dataset's records carry)."""
    TOOLS[schema["function"]["name"]] = Tool(schema, function)
    _VERSION[0] += 1


def import_function(spec: str, what: str) -> Callable:
    """"package.module:function" → the function; MiniMindError naming `what` when it cannot be imported."""
    module, _, name = spec.partition(":")
    try:
        function = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as e:
        raise MiniMindError(f"{what}: cannot import {name!r} from {module!r} ({e})") from None
    if not callable(function):
        raise MiniMindError(f"{what}: {spec} is not callable")
    return function


def tool_name(schema: dict) -> str | None:
    """The function name of an OpenAI tool schema ({"type": "function", "function": {"name", …}} or the bare
    function object), or None."""
    function = schema.get("function", schema) if isinstance(schema, dict) else None
    return function.get("name") if isinstance(function, dict) else None


def resolve_record_tools(records: list[dict], implementations: dict[str, str]) -> None:
    """Make every tool the records offer callable: a built-in or registered one by its name, else the
    `module:function` that `implementations` names for it (registered with the record's schema). Refuses, before
    any rollout, a tool with neither."""
    done = set()
    for record in records:
        for schema in record.get("tools") or []:
            name = tool_name(schema)
            if name in done:
                continue
            done.add(name)
            if name in implementations:
                function = import_function(implementations[name], f"config key 'rl.tool_functions.{name}'")
                register_schema(schema if "function" in schema else {"type": "function", "function": schema},
                                function)
            elif name not in TOOLS:
                raise MiniMindError(f"rl data: the records offer the tool {name!r}, which has no implementation: "
                                    f"add rl.tool_functions.{name}=module:function (built in: {', '.join(TOOLS)})")


MEMORY_LIMIT = 256 << 20          # bytes a call may allocate beyond the worker's starting address space
MAX_RESULT = 4000                 # characters of a result the model sees; the rest is cut, and says so


def run_tool(call: dict, allowed: list[str], timeout: float = 2.0) -> str:
    """The text result of one call {"name", "arguments"} to an allowed tool, or "error: …"."""
    name, arguments = call.get("name"), call.get("arguments")
    if name not in allowed or name not in TOOLS:
        return f"error: unknown tool {name!r}"
    if not isinstance(arguments, dict):
        return "error: arguments must be a JSON object"
    with _LOCK:
        return _worker().call(name, arguments, timeout)


def _answer(name: str, arguments: dict) -> str:
    """Run one call in the worker: its text, or "error: …" for anything that goes wrong (non-finite numbers too)."""
    try:
        text = str(TOOLS[name].function(**arguments))
    except MemoryError:
        return f"error: {name} ran out of memory (limit {MEMORY_LIMIT >> 20} MiB)"
    except Exception as e:                              # any failure is an answer the model sees, never a crash
        return _cut(f"error: {e}" if str(e) else f"error: {type(e).__name__}")
    try:
        value = float(text)
    except ValueError:
        return _cut(text)
    return text if math.isfinite(value) else f"error: {name} gave a non-finite number ({text})"


def _cut(text: str) -> str:
    return text if len(text) <= MAX_RESULT else f"{text[:MAX_RESULT]}… (cut: {len(text):,} characters in all)"


class _Worker:
    """One forked process answering calls over a pipe, with the tools as they were when it was forked."""

    def __init__(self):
        self.version = _VERSION[0]
        self.conn, child = multiprocessing.get_context("fork").Pipe()
        self.process = multiprocessing.get_context("fork").Process(target=_serve, args=(child, self.conn),
                                                                   daemon=True, name="minimind-tools")
        self.process.start()
        child.close()

    def call(self, name: str, arguments: dict, timeout: float) -> str:
        try:
            self.conn.send((name, arguments, timeout))
            if self.conn.poll(timeout):
                return self.conn.recv()
        except (EOFError, OSError, BrokenPipeError):
            self.stop()
            return f"error: {name} stopped its process (CPU time or memory limit, or a crash)"
        except Exception as e:                          # e.g. arguments that cannot be sent
            self.stop()
            return f"error: {e}"
        self.stop()
        return f"error: {name} took longer than {timeout:g} s"

    def stop(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join()
        self.conn.close()


def _serve(conn, parent_end) -> None:
    """The worker's loop: limits set, then one answer per request until the parent closes the pipe or dies."""
    parent_end.close()                       # else the pipe never reports the parent gone
    _limit_worker()
    hard_cpu = resource.getrlimit(resource.RLIMIT_CPU)[1]
    while True:
        try:
            name, arguments, timeout = conn.recv()
        except EOFError:
            return
        used = resource.getrusage(resource.RUSAGE_SELF)
        cpu = math.ceil(used.ru_utime + used.ru_stime + timeout) + 1
        resource.setrlimit(resource.RLIMIT_CPU, (cpu if hard_cpu == resource.RLIM_INFINITY else min(cpu, hard_cpu),
                                                 hard_cpu))
        conn.send(_answer(name, arguments))


def _limit_worker() -> None:
    """The worker's own limits: it dies with its parent (Linux), dumps no core when the CPU limit stops it, and may
    allocate MEMORY_LIMIT beyond its starting address space (where /proc tells that size; elsewhere no memory
    limit)."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, resource.getrlimit(resource.RLIMIT_CORE)[1]))
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)        # PR_SET_PDEATHSIG: killed when the parent dies, even by SIGKILL
        with open("/proc/self/statm") as f:
            start = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        resource.setrlimit(resource.RLIMIT_AS, (start + MEMORY_LIMIT, resource.getrlimit(resource.RLIMIT_AS)[1]))
    except (OSError, ValueError):
        pass                                 # not Linux: the wall and CPU limits still hold


def start_worker() -> None:
    """Fork the tool process now (early, before rollouts start their threads), rather than at the first call."""
    with _LOCK:
        _worker()


_LOCK = threading.Lock()
_VERSION = [0]                  # bumped by register_tool: the worker is re-forked to see the new tool
_CURRENT: list[_Worker] = []


def _worker() -> _Worker:
    if _CURRENT and (_CURRENT[0].version != _VERSION[0] or not _CURRENT[0].process.is_alive()):
        _CURRENT.pop().stop()
    if not _CURRENT:
        _CURRENT.append(_Worker())
    return _CURRENT[0]
