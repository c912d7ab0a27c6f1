"""A safe arithmetic calculator: the `calculator` tool of the tool-use data (and later the RL tool).

The expression is parsed with `ast` and walked by hand; nothing is ever passed to `eval`. Allowed: int and
float literals, unary + and -, the binary operators + - * / // % **, and parentheses. Every intermediate value
must stay within ±1e100, and a power is refused before it is computed when its result would leave that range.
"""

from __future__ import annotations

import ast
import math
import operator

MAX_LENGTH = 500
MAX_MAGNITUDE = 10**100

CALCULATOR_TOOL = {
    "type": "function",
    "function": {
        "name": "calculator",
        "description": "Evaluate an arithmetic expression. Supports numbers, + - * / // % ** and parentheses.",
        "parameters": {
            "type": "object",
            "properties": {
                "expression": {"type": "string", "description": "The expression to evaluate, e.g. \"(3 + 4) * 12\""},
            },
            "required": ["expression"],
        },
    },
}

_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}


class CalculatorError(ValueError):
    """An expression the calculator refuses or cannot evaluate; the message says why."""


def calculate(expression: str) -> int | float:
    """The value of `expression`, with Python's int/float rules (`/` always gives a float). Raises
    CalculatorError for anything but numbers, the allowed operators and parentheses."""
    if not isinstance(expression, str):
        raise CalculatorError(f"the expression must be a string, got {type(expression).__name__}")
    if len(expression) > MAX_LENGTH:
        raise CalculatorError(f"expression longer than {MAX_LENGTH} characters")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError:
        raise CalculatorError(f"not an arithmetic expression: {expression!r}") from None
    return _evaluate(tree.body)


def format_number(value: int | float) -> str:
    """How a result is written in text and tool messages: integral values without a decimal point."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return str(value) if isinstance(value, int) else f"{value:.12g}"


def _evaluate(node: ast.expr) -> int | float:
    if isinstance(node, ast.Constant):
        if type(node.value) not in (int, float):
            raise CalculatorError(f"only numbers are allowed, not {node.value!r}")
        return _bounded(node.value)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_evaluate(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow):
            _check_power(left, right)
        try:
            result = _BINARY[type(node.op)](left, right)
        except ZeroDivisionError:
            raise CalculatorError("division by zero") from None
        except OverflowError:
            raise CalculatorError("result too large") from None
        if isinstance(result, complex):
            raise CalculatorError("a negative number to a fractional power is not a real number")
        return _bounded(result)
    raise CalculatorError(f"{type(node).__name__} is not allowed: only numbers, + - * / // % ** and parentheses")


def _check_power(base: int | float, exponent: int | float) -> None:
    if base != 0 and exponent * math.log10(abs(base)) > math.log10(MAX_MAGNITUDE):
        raise CalculatorError(f"power too large: {format_number(base)} ** {format_number(exponent)}")


def _bounded(value: int | float) -> int | float:
    if not abs(value) <= MAX_MAGNITUDE:        # also catches inf and nan
        raise CalculatorError("result too large")
    return value
