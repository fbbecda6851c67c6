"""The operators of autoscale formulas, on the types Azure's documentation lists for each:
arithmetic on doubles and doubleVecs (element-wise), on timeintervals and timestamps;
comparisons of doubles, strings, timestamps and timeintervals (1 or 0); && and || on
doubles; unary minus and !. Anything else is an evaluation error naming the types."""

from __future__ import annotations

import operator
from datetime import datetime, timedelta

from .values import FormulaError, Vec, show, type_name

_ARITHMETIC = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv}
_COMPARE = {"<": operator.lt, "<=": operator.le, "==": operator.eq, ">=": operator.ge, ">": operator.gt,
            "!=": operator.ne}


def _undefined(op: str, left, right) -> FormulaError:
    return FormulaError(f"The operator '{op}' is not defined for {type_name(left)} and {type_name(right)}.")


def _divide(left: float, right: float) -> float:
    if right == 0:
        raise FormulaError("Division by zero.")
    return left / right


def _doubles(op: str, left: float, right: float) -> float:
    return _divide(left, right) if op == "/" else _ARITHMETIC[op](left, right)


def arithmetic(op: str, left, right):
    if isinstance(left, float) and isinstance(right, float):
        return _doubles(op, left, right)
    if isinstance(left, Vec) or isinstance(right, Vec):
        return _vector(op, left, right)
    if isinstance(left, timedelta) or isinstance(right, timedelta) or isinstance(left, datetime):
        return _time(op, left, right)
    raise _undefined(op, left, right)


def _vector(op: str, left, right) -> Vec:
    if isinstance(left, Vec) and isinstance(right, Vec):
        if len(left) != len(right):
            raise FormulaError(f"The operator '{op}' needs doubleVecs of the same length ({len(left)} and "
                               f"{len(right)}).")
        return Vec(_doubles(op, a, b) for a, b in zip(left, right))
    if isinstance(left, Vec) and isinstance(right, float):
        return Vec(_doubles(op, a, right) for a in left)
    if isinstance(left, float) and isinstance(right, Vec):
        return Vec(_doubles(op, left, b) for b in right)
    raise _undefined(op, left, right)


def _time(op: str, left, right):
    try:
        return _time_value(op, left, right)
    except (OverflowError, ValueError):  # past an interval's or a time's range, or a NaN factor
        raise FormulaError(f"{show(left)} {op} {show(right)} is out of the range of a time or an interval.") from None


def _time_value(op: str, left, right):
    if op == "*" and isinstance(left, float) and isinstance(right, timedelta):
        return right * left
    if isinstance(left, timedelta) and isinstance(right, float) and op in ("*", "/"):
        return left * right if op == "*" else left / _nonzero(right)
    if isinstance(left, timedelta) and isinstance(right, timedelta) and op in ("+", "-"):
        return left + right if op == "+" else left - right
    if op == "+" and isinstance(left, timedelta) and isinstance(right, datetime):
        return right + left
    if isinstance(left, datetime) and isinstance(right, timedelta) and op in ("+", "-"):
        return left + right if op == "+" else left - right
    if op == "-" and isinstance(left, datetime) and isinstance(right, datetime):
        return left - right
    raise _undefined(op, left, right)


def _nonzero(value: float) -> float:
    if value == 0:
        raise FormulaError("Division by zero.")
    return value


def compare(op: str, left, right) -> float:
    comparable = (float, str, datetime, timedelta)
    if type(left) is not type(right) or not isinstance(left, comparable):
        raise _undefined(op, left, right)
    return 1.0 if _COMPARE[op](left, right) else 0.0


def logical(op: str, left, right) -> float:
    if not (isinstance(left, float) and isinstance(right, float)):
        raise _undefined(op, left, right)
    return 1.0 if (op == "&&" and left and right) or (op == "||" and (left or right)) else 0.0


def negate(value):
    if isinstance(value, (float, timedelta)):
        return -value
    if isinstance(value, Vec):
        return Vec(-v for v in value)
    raise FormulaError(f"The operator '-' is not defined for {type_name(value)}.")


def logical_not(value) -> float:
    if not isinstance(value, float):
        raise FormulaError(f"The operator '!' is not defined for {type_name(value)}.")
    return 0.0 if value else 1.0


def truth(value) -> bool:
    """A ternary's condition: a double, nonzero is true."""
    if not isinstance(value, float):
        raise FormulaError(f"The condition of '?:' must be a double, not {type_name(value)}.")
    return value != 0
