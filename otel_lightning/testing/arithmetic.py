"""Evaluate small arithmetic expressions safely (no eval): what a calculator tool needs."""

from __future__ import annotations

import ast
import operator
import re

_OPERATORS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
}
_EXPRESSION = re.compile(r"-?\d+(?:\s*[-+*/%]\s*-?\d+)+")


def evaluate(expression: str) -> float:
    """Value of an expression of numbers, + - * / // % and parentheses; ValueError otherwise."""

    def walk(node: ast.AST) -> float:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            return node.value
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            value = walk(node.operand)
            return -value if isinstance(node.op, ast.USub) else value
        if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
            return _OPERATORS[type(node.op)](walk(node.left), walk(node.right))
        raise ValueError(f"not plain arithmetic: {ast.dump(node)[:60]}")

    try:
        return walk(ast.parse(expression.strip(), mode="eval"))
    except (SyntaxError, ZeroDivisionError) as error:
        raise ValueError(f"cannot evaluate {expression!r}: {error}") from None


def format_number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.6g}"


def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression such as 17+25."""
    # The tool the example agents give their frameworks (the docstring is its description there):
    # errors come back as text, for the model to read.
    try:
        return format_number(evaluate(expression))
    except ValueError as error:
        return f"error: {error}"


def find_expression(text: str) -> str | None:
    match = _EXPRESSION.search(text)
    return match.group(0) if match else None
