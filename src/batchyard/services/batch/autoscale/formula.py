"""Autoscale formulas: parsed with Lark (the grammar is `formula.lark`), evaluated against
a pool's current targets and the samples of its metrics.

`parse` raises `FormulaSyntaxError` with the line and column of the first thing it cannot
read (Azure refuses such a formula with 400 AutoScalingFormulaSyntaxError). `evaluate`
runs the statements in order and returns a `Run`: the three settable variables, the user
variables, and the error that stopped it, if any; `Run.results` is Azure's results text,
`$TargetDedicatedNodes=3;$TargetLowPriorityNodes=0;$NodeDeallocationOption=requeue` then
each user variable in name order.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from pathlib import Path

from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from . import functions, operators
from .values import DEALLOCATION_OPTIONS, TIME_INTERVALS, FormulaError, Metric, show

MAX_LENGTH = 8192
MAX_STATEMENTS = 100
DEDICATED, LOW_PRIORITY, DEALLOCATION = "$TargetDedicatedNodes", "$TargetLowPriorityNodes", "$NodeDeallocationOption"
# Older names of the targets; the full name wins when a formula sets both.
ALIASES = {"$TargetDedicated": DEDICATED, "$TargetLowPriority": LOW_PRIORITY}
SETTABLE = (DEDICATED, LOW_PRIORITY, DEALLOCATION)


class FormulaSyntaxError(Exception):
    def __init__(self, message: str, line: int, column: int):
        super().__init__(message)
        self.message, self.line, self.column = message, line, column


@lru_cache(maxsize=1)
def _parser() -> Lark:
    grammar = (Path(__file__).parent / "formula.lark").read_text()
    return Lark(grammar, parser="lalr", propagate_positions=True)


@lru_cache(maxsize=256)
def parse(text: str) -> Tree:
    if len(text) > MAX_LENGTH:
        raise FormulaSyntaxError(f"The formula is {len(text)} characters long; at most {MAX_LENGTH} are allowed.",
                                 1, 1)
    try:
        tree = _parser().parse(text)
    except UnexpectedInput as exc:
        line, column = _position(exc, text)
        raise FormulaSyntaxError(_syntax_message(exc), line, column) from None
    if len(tree.children) > MAX_STATEMENTS:
        raise FormulaSyntaxError(f"The formula has {len(tree.children)} statements; at most {MAX_STATEMENTS} are "
                                 "allowed.", 1, 1)
    return tree


def _at_end(exc: UnexpectedInput) -> bool:
    return isinstance(exc, UnexpectedEOF) or (isinstance(exc, UnexpectedToken) and exc.token.type == "$END")


def _position(exc: UnexpectedInput, text: str) -> tuple[int, int]:
    """Line and column (from 1) of what could not be read; just past the text when it
    ended too soon."""
    if _at_end(exc) or exc.line < 1:
        lines = text.split("\n")
        return len(lines), len(lines[-1]) + 1
    return exc.line, exc.column


def _syntax_message(exc: UnexpectedInput) -> str:
    if isinstance(exc, UnexpectedCharacters):
        return f"Unexpected character '{exc.char}'."
    if _at_end(exc):
        return "Unexpected end of the formula."
    if isinstance(exc, UnexpectedToken):
        return f"Unexpected '{exc.token}'."
    return "The formula cannot be read."


@dataclass
class Context:
    """What a formula reads: the pool's current targets and node counts, its metrics."""
    now: datetime
    targets: dict[str, object]  # the settable variables' values before the formula
    doubles: dict[str, float]  # read-only values: $CurrentDedicatedNodes, $TaskSlotsPerNode, ...
    metrics: dict[str, Metric]  # read-only sampled metrics: $PendingTasks, $CPUPercent, ...
    rng: random.Random = field(default_factory=random.Random)


@dataclass
class Run:
    settable: dict[str, object]
    user: dict[str, object]
    error: str | None = None  # what stopped the evaluation

    @property
    def results(self) -> str:
        parts = [f"{name}={show(self.settable[name])}" for name in SETTABLE]
        parts += [f"{name}={show(value)}" for name, value in sorted(self.user.items())]
        return ";".join(parts)


def evaluate(tree: Tree, context: Context) -> Run:
    evaluation = _Evaluation(context)
    try:
        for statement in tree.children:
            evaluation.statement(statement)
    except functions.Stop:
        pass
    except FormulaError as exc:
        return Run(dict(context.targets), {}, str(exc))
    except OverflowError as exc:
        # a time or interval beyond what it can hold reached where no check stood (a sample
        # window of a million days): an error of this run, as Azure reports one
        return Run(dict(context.targets), {}, f"A value is out of range: {exc}.")
    except RecursionError:
        return Run(dict(context.targets), {}, "The formula nests its expressions too deeply.")
    return evaluation.run()


class _Evaluation:
    def __init__(self, context: Context):
        self.context = context
        self.settable: dict[str, object] = dict(context.targets)
        self.set_by_full_name: set[str] = set()
        self.user: dict[str, object] = {}

    def run(self) -> Run:
        return Run(self.settable, self.user)

    def statement(self, node: Tree) -> None:
        if node.data == "assign":
            name, expression = node.children
            self.assign(str(name), self.value(expression))
        else:
            self.value(node.children[0])

    def assign(self, name: str, value) -> None:
        full = ALIASES.get(name, name)
        if full in SETTABLE:
            self._set(name, full, value)
        elif name in self.context.doubles or name in self.context.metrics:
            raise FormulaError(f"{name} is read-only.")
        else:
            self.user[name] = value

    def _set(self, name: str, full: str, value) -> None:
        if full == DEALLOCATION:
            if not isinstance(value, str) or value not in DEALLOCATION_OPTIONS:
                raise FormulaError(f"{DEALLOCATION} must be one of {', '.join(DEALLOCATION_OPTIONS)}.")
        elif not isinstance(value, float):
            raise FormulaError(f"{name} must be a double.")
        if name in ALIASES and full in self.set_by_full_name:
            return
        if name == full:
            self.set_by_full_name.add(full)
        self.settable[full] = value

    def value(self, node):
        handler = getattr(self, "_" + node.data.rstrip("_"))
        return handler(*node.children)

    def _number(self, token: Token) -> float:
        return float(token)

    def _string(self, token: Token) -> str:
        return str(token)[1:-1]

    def _variable(self, token: Token):
        name = str(token)
        if name in self.user:
            return self.user[name]
        full = ALIASES.get(name, name)
        if full in self.settable:
            return self.settable[full]
        if name in self.context.doubles:
            return self.context.doubles[name]
        if name in self.context.metrics:
            return self.context.metrics[name]
        if name in TIME_INTERVALS:
            return TIME_INTERVALS[name]
        if name in DEALLOCATION_OPTIONS:
            return name
        raise FormulaError(f"Undefined variable '{name}'.")

    def _args(self, args) -> list:
        return [self._double_or_other(a) for a in args.children] if args is not None else []

    def _double_or_other(self, node):
        value = self.value(node)
        if isinstance(value, Metric):
            raise FormulaError(f"{value.name} is a metric; read its samples with GetSample().")
        return value

    def _call(self, name: Token, args) -> object:
        return functions.call(str(name), self._args(args), self.context.now, self.context.rng)

    def _method(self, target, name: Token, args) -> object:
        metric = self.value(target)
        if not isinstance(metric, Metric):
            raise FormulaError(f"'{name}' is a method of the service-defined metrics, not of {show(metric)}.")
        return functions.method(metric, str(name), self._args(args), self.context.now)

    def _member(self, target, name: Token) -> float:
        moment = self._double_or_other(target)
        field_name = str(name)
        if not isinstance(moment, datetime) or field_name not in _TIMESTAMP_FIELDS:
            raise FormulaError(f"'{field_name}' is not a member of {show(moment)}.")
        return float(_TIMESTAMP_FIELDS[field_name](moment))

    def _ternary(self, condition, when_true, when_false):
        chosen = when_true if operators.truth(self._double_or_other(condition)) else when_false
        return self._double_or_other(chosen)

    def _binary(self, combine, op: str, left, right):
        return combine(op, self._double_or_other(left), self._double_or_other(right))

    def _or(self, left, right):
        return self._binary(operators.logical, "||", left, right)

    def _and(self, left, right):
        return self._binary(operators.logical, "&&", left, right)

    def _compare(self, left, op: Token, right):
        return self._binary(operators.compare, str(op), left, right)

    def _add(self, left, right):
        return self._binary(operators.arithmetic, "+", left, right)

    def _sub(self, left, right):
        return self._binary(operators.arithmetic, "-", left, right)

    def _mul(self, left, right):
        return self._binary(operators.arithmetic, "*", left, right)

    def _div(self, left, right):
        return self._binary(operators.arithmetic, "/", left, right)

    def _neg(self, operand):
        return operators.negate(self._double_or_other(operand))

    def _not(self, operand):
        return operators.logical_not(self._double_or_other(operand))


# weekday: 0 for Sunday, 1 for Monday (as .NET's DayOfWeek, which Azure's documentation uses)
_TIMESTAMP_FIELDS = {
    "year": lambda t: t.year, "month": lambda t: t.month, "day": lambda t: t.day,
    "weekday": lambda t: t.isoweekday() % 7, "hour": lambda t: t.hour, "minute": lambda t: t.minute,
    "second": lambda t: t.second,
}
