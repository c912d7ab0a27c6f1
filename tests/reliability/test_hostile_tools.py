"""Hostile tool calls, as a model in RL or an evaluation may write them: every one comes back as an "error: …"
answer from the tool process, and the next call still works (docs/reliability.md)."""

import json

import pytest

from minimind.rl.tools import TOOLS, register_tool, run_tool

ALLOWED = ["calculator", "convert_units", "lookup"]

CASES = [
    ("import", "calculator", {"expression": "__import__('os').system('true')"}, "not allowed"),
    ("dunder chain", "calculator", {"expression": "().__class__.__bases__[0].__subclasses__()"}, "not allowed"),
    ("huge power", "calculator", {"expression": "9**9**9**9"}, "power too large"),
    ("deep nesting", "calculator", {"expression": "(" * 400 + "1" + ")" * 400}, "error:"),
    ("huge string", "calculator", {"expression": "1" * 100_000}, "longer than 500 characters"),
    ("wrong argument name", "calculator", {"expr": "1"}, "unexpected keyword"),
    ("wrong argument type", "lookup", {"table": "capital", "key": 5}, "has no attribute 'strip'"),
    ("wrong argument type", "convert_units", {"value": "ten", "from_unit": "m", "to_unit": "km"}, "error:"),
    ("NaN argument", "convert_units", json.loads('{"value": NaN, "from_unit": "m", "to_unit": "km"}'),
     "non-finite number (nan)"),
    ("overflow to inf", "convert_units", {"value": 1e308, "from_unit": "mi", "to_unit": "mm"}, "non-finite"),
    ("unknown unit", "convert_units", {"value": 1, "from_unit": "parsec", "to_unit": "m"}, "unknown unit"),
    ("unknown table", "lookup", {"table": "passwords", "key": "root"}, "unknown table"),
]


@pytest.mark.parametrize("kind, name, arguments, message", CASES, ids=[c[0] for c in CASES])
def test_hostile_arguments_are_answered_with_an_error(kind, name, arguments, message):
    answer = run_tool({"name": name, "arguments": arguments}, ALLOWED)
    assert answer.startswith("error:") and message in answer, answer
    assert run_tool({"name": "calculator", "arguments": {"expression": "6 * 7"}}, ALLOWED) == "42"


@pytest.fixture
def registered():
    names = []

    def register(name, function):
        register_tool(name, function, name, {})
        names.append(name)
    yield register
    for name in names:
        del TOOLS[name]


def test_a_tool_that_never_returns_is_killed_at_its_timeout(registered):
    registered("spin", lambda: [None for _ in iter(int, 1)])
    assert run_tool({"name": "spin", "arguments": {}}, ["spin"], timeout=0.3) == "error: spin took longer than 0.3 s"
    assert run_tool({"name": "calculator", "arguments": {"expression": "2 + 2"}}, ALLOWED) == "4"


def test_memory_is_limited_and_a_crashing_tool_ends_only_its_process(registered):
    registered("hog", lambda: len(bytearray(1 << 30)))
    registered("die", lambda: __import__("os")._exit(3))
    registered("long", lambda: "x" * 1_000_000)
    assert run_tool({"name": "hog", "arguments": {}}, ["hog"]).startswith("error: hog ran out of memory")
    assert run_tool({"name": "die", "arguments": {}}, ["die"]).startswith("error: die stopped its process")
    assert run_tool({"name": "long", "arguments": {}}, ["long"]).endswith("(cut: 1,000,000 characters in all)")
    assert run_tool({"name": "calculator", "arguments": {"expression": "2 + 2"}}, ALLOWED) == "4"


def test_calls_outside_the_whitelist_never_run(registered):
    ran = []
    registered("side_effect", lambda: ran.append(1) or "ran")
    assert run_tool({"name": "side_effect", "arguments": {}}, ALLOWED) == "error: unknown tool 'side_effect'"
    assert run_tool({"name": "calculator", "arguments": ["6*7"]}, ALLOWED) == "error: arguments must be a JSON object"
    assert ran == []


def test_a_long_error_is_cut_like_a_long_answer(registered):
    def fail():
        raise ValueError("x" * 200_000)
    registered("loud", fail)
    answer = run_tool({"name": "loud", "arguments": {}}, ["loud"])
    assert answer.startswith("error: xxx") and answer.endswith("(cut: 200,007 characters in all)")


def test_the_tool_process_dies_with_its_parent(tmp_path):
    """A trainer killed by SIGKILL must not leave its tool worker behind (holding its stdout open)."""
    import os
    import subprocess
    import sys
    import time

    script = ("import os, signal\nfrom minimind.rl.tools import run_tool, _CURRENT\n"
              "run_tool({'name': 'calculator', 'arguments': {'expression': '1+1'}}, ['calculator'])\n"
              "print(_CURRENT[0].process.pid, flush=True)\nos.kill(os.getpid(), signal.SIGKILL)\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    worker = int(proc.stdout.split()[0])
    for _ in range(50):
        try:
            os.kill(worker, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(worker, 9)
    raise AssertionError(f"the tool worker {worker} outlived its parent")
