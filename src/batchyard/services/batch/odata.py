"""The OData subset Azure Batch list operations take: $filter, $select and maxresults.

$filter grammar (keywords are matched case-insensitively, property names are not):

    expr       := and_expr ("or" and_expr)*
    and_expr   := unary ("and" unary)*
    unary      := "not" unary | primary
    primary    := "(" expr ")" | operand [op operand]
    operand    := literal | property | "startswith(" property "," string ")"
    op         := eq | ne | gt | ge | lt | le
    literal    := 'text' ('' escapes ') | integer | decimal | true | false | null
                | datetime'2025-01-01T00:00:00Z' | 2025-01-01T00:00:00Z
    property   := name (("/" | ".") name)*          e.g. executionInfo/exitCode
"""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from itertools import islice
from typing import Any, Callable, Iterable, Iterator

from ...store.keyset import EVERY_KEY, KeyRange
from ..errors import InvalidInput

Predicate = Callable[[dict], bool]

_BAD_QUERY_MESSAGE = "The value for one of the HTTP query parameters is not in the correct format."
_MAX_DEPTH = 64  # nesting limit, so a hostile filter cannot exhaust the Python stack


def _bad_query(name: str, value: str | None, reason: str) -> InvalidInput:
    return InvalidInput("InvalidQueryParameterValue", _BAD_QUERY_MESSAGE,
                        details=[{"key": "QueryParameterName", "value": name},
                                 {"key": "QueryParameterValue", "value": "" if value is None else value},
                                 {"key": "Reason", "value": reason}])


class _FilterError(Exception):
    """A $filter syntax error; its text becomes the Reason detail."""


# ---------------------------------------------------------------------------------------------
# Tokens

@dataclass(frozen=True)
class _Token:
    kind: str  # "string", "number", "datetime", "name", "(", ")", ","
    text: str
    value: Any
    position: int


_DATETIME_TEXT = r"\d{4}-\d{2}-\d{2}(?:T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2})?)?"
_TOKEN = re.compile(
    r"(?P<space>\s+)"
    r"|(?P<datetime>datetime'(?P<dt_text>[^']*)')"  # checked before names: starts like one
    r"|(?P<bare_datetime>" + _DATETIME_TEXT + r")(?![\w.:-])"
    r"|(?P<string>'(?:[^']|'')*')"
    r"|(?P<number>-?\d+(?:\.\d+)?)(?![\w.])"
    r"|(?P<name>[A-Za-z_$][\w$]*(?:[/.][A-Za-z_$][\w$]*)*)"
    r"|(?P<punct>[(),])",
    re.IGNORECASE)


def _parse_datetime(text: str) -> datetime | None:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return None
    # Batch's datetimes are UTC; a zone-less literal means UTC too, so the two compare.
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _tokenize(text: str) -> list[_Token]:
    tokens, position = [], 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            if text[position] == "'":
                raise _FilterError(f"Unterminated string literal at position {position}.")
            raise _FilterError(f"Unexpected character {text[position]!r} at position {position}.")
        kind = match.lastgroup
        raw = match.group()
        if kind == "string":
            tokens.append(_Token("string", raw, raw[1:-1].replace("''", "'"), position))
        elif kind == "number":
            if len(raw) > 30:  # also keeps int() clear of its digit limit
                raise _FilterError(f"The number at position {position} is too long.")
            tokens.append(_Token("number", raw, float(raw) if "." in raw else int(raw), position))
        elif kind in ("datetime", "bare_datetime"):
            literal = match.group("dt_text") if kind == "datetime" else raw
            value = _parse_datetime(literal)
            if value is None:
                raise _FilterError(f"Invalid datetime literal {raw!r} at position {position}.")
            tokens.append(_Token("datetime", raw, value, position))
        elif kind == "name":
            tokens.append(_Token("name", raw, raw, position))
        elif kind == "punct":
            tokens.append(_Token(raw, raw, raw, position))
        position = match.end()
    return tokens


# ---------------------------------------------------------------------------------------------
# Evaluation helpers

_MISSING = object()
_COMPARATORS = {"eq": operator.eq, "ne": operator.ne, "gt": operator.gt,
                "ge": operator.ge, "lt": operator.lt, "le": operator.le}


def _resolve(obj: Any, path: tuple[str, ...]) -> Any:
    for name in path:
        if not isinstance(obj, dict) or name not in obj:
            return _MISSING
        obj = obj[name]
    return obj


def _coerce(value: Any, literal: Any) -> tuple[Any, Any] | None:
    """Bring a property value and a literal to one comparable type, or None if they differ."""
    if isinstance(literal, bool) or isinstance(value, bool):
        # bool is an int in Python; 'true' must not equal 1.
        return (value, literal) if isinstance(value, bool) and isinstance(literal, bool) else None
    if isinstance(literal, datetime):
        when = value if isinstance(value, datetime) else (
            _parse_datetime(value) if isinstance(value, str) else None)
        if when is None:
            return None
        return (when if when.tzinfo else when.replace(tzinfo=timezone.utc)), literal
    if isinstance(literal, (int, float)):
        return (value, literal) if isinstance(value, (int, float)) else None
    if isinstance(literal, str) and isinstance(value, str):
        # Batch compares enum values (state eq 'Active') without regard to case.
        return value.casefold(), literal.casefold()
    return None


def _comparison(op: str, path: tuple[str, ...], literal: Any, flipped: bool) -> Predicate:
    compare = _COMPARATORS[op]

    def predicate(obj: dict) -> bool:
        value = _resolve(obj, path)
        if literal is None:  # "x eq null" holds for an absent property too
            absent = value is _MISSING or value is None
            return absent if op == "eq" else (not absent if op == "ne" else False)
        if value is _MISSING or value is None:
            return False
        pair = _coerce(value, literal)
        if pair is None:
            return False
        left, right = pair
        try:
            return compare(right, left) if flipped else compare(left, right)
        except TypeError:
            return False
    return predicate


def _startswith(path: tuple[str, ...], prefix: str) -> Predicate:
    def predicate(obj: dict) -> bool:
        value = _resolve(obj, path)
        # Case-sensitive, as OData defines it: file names on Linux nodes differ by case.
        return isinstance(value, str) and value.startswith(prefix)
    return predicate


def _is_true(path: tuple[str, ...]) -> Predicate:
    return lambda obj: _resolve(obj, path) is True


# ---------------------------------------------------------------------------------------------
# Parser: recursive descent over the token list, building closures.

_KEYWORDS = {"and", "or", "not", *_COMPARATORS}
_LITERAL_NAMES = {"true": True, "false": False, "null": None}


class _Parser:
    def __init__(self, tokens: list[_Token]):
        self.tokens = tokens
        self.index = 0
        self.depth = 0

    def peek(self) -> _Token | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def take(self) -> _Token:
        token = self.peek()
        if token is None:
            raise _FilterError("Unexpected end of expression.")
        self.index += 1
        return token

    def expect(self, kind: str) -> _Token:
        token = self.take()
        if token.kind != kind:
            raise _FilterError(f"Expected '{kind}' at position {token.position}, found '{token.text}'.")
        return token

    def at_keyword(self, *words: str) -> str | None:
        token = self.peek()
        if token is not None and token.kind == "name" and token.text.lower() in words:
            return token.text.lower()
        return None

    def parse(self) -> Predicate:
        predicate = self.or_expr()
        token = self.peek()
        if token is not None:
            raise _FilterError(f"Unexpected '{token.text}' at position {token.position}.")
        return predicate

    def or_expr(self) -> Predicate:
        terms = [self.and_expr()]
        while self.at_keyword("or"):
            self.take()
            terms.append(self.and_expr())
        return terms[0] if len(terms) == 1 else (lambda obj: any(t(obj) for t in terms))

    def and_expr(self) -> Predicate:
        terms = [self.unary()]
        while self.at_keyword("and"):
            self.take()
            terms.append(self.unary())
        return terms[0] if len(terms) == 1 else (lambda obj: all(t(obj) for t in terms))

    def unary(self) -> Predicate:
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            raise _FilterError("The expression is nested too deeply.")
        try:
            if not self.at_keyword("not"):
                return self.primary()
            self.take()
            inner = self.unary()
            return lambda obj: not inner(obj)
        finally:
            self.depth -= 1

    def primary(self) -> Predicate:
        token = self.peek()
        if token is not None and token.kind == "(":
            self.take()
            inner = self.or_expr()
            self.expect(")")
            return inner
        left = self.operand()
        op = self.at_keyword(*_COMPARATORS)
        if op is None:
            return self.boolean(left, token)
        self.take()
        right = self.operand()
        return self.comparison(left, op, right, token)

    def operand(self) -> tuple[str, Any]:
        """("property", path) | ("literal", value) | ("predicate", function)."""
        token = self.take()
        if token.kind in ("string", "number", "datetime"):
            return "literal", token.value
        if token.kind != "name" or token.text.lower() in _KEYWORDS:
            raise _FilterError(f"Expected a property or a value at position {token.position}, "
                              f"found '{token.text}'.")
        lowered = token.text.lower()
        if lowered in _LITERAL_NAMES:
            return "literal", _LITERAL_NAMES[lowered]
        if lowered == "startswith" and self.peek() is not None and self.peek().kind == "(":
            return "predicate", self.startswith()
        if self.peek() is not None and self.peek().kind == "(":
            raise _FilterError(f"Unknown function '{token.text}' at position {token.position}.")
        return "property", tuple(re.split(r"[/.]", token.text))

    def startswith(self) -> Predicate:
        self.expect("(")
        kind, path = self.operand()
        if kind != "property":
            raise _FilterError("startswith expects a property as its first argument.")
        self.expect(",")
        prefix = self.expect("string").value
        self.expect(")")
        return _startswith(path, prefix)

    def boolean(self, operand: tuple[str, Any], token: _Token) -> Predicate:
        kind, value = operand
        if kind == "predicate":
            return value
        if kind == "property":
            return _is_true(value)
        if isinstance(value, bool):
            return lambda obj: value
        raise _FilterError(f"Expected a comparison operator after '{token.text}'.")

    def comparison(self, left, op: str, right, token: _Token) -> Predicate:
        if left[0] == "predicate" and right[0] == "literal" and isinstance(right[1], bool):
            inner, wanted = left[1], right[1]  # startswith(name,'x') eq true
            if op not in ("eq", "ne"):
                raise _FilterError(f"Operator '{op}' cannot compare a boolean function.")
            return lambda obj: (inner(obj) == wanted) == (op == "eq")
        if left[0] == "property" and right[0] == "literal":
            return _comparison(op, left[1], right[1], flipped=False)
        if left[0] == "literal" and right[0] == "property":
            return _comparison(op, right[1], left[1], flipped=True)
        raise _FilterError(f"The comparison at position {token.position} must compare a property "
                          f"with a value.")


def compile_filter(text: str | None) -> Predicate:
    """A $filter expression -> predicate over the wire-JSON dict of one item."""
    if text is None or not text.strip():
        return lambda obj: True
    try:
        return _Parser(_tokenize(text)).parse()
    except _FilterError as error:
        raise _bad_query("$filter", text, str(error)) from None


@dataclass(frozen=True)
class Narrowing:
    """What every match of a $filter holds that a store can ask in SQL before the full
    predicate runs on the rows it reads: the state it requires and the range of keys
    (lower-cased ids) its conditions on id allow. Never narrower than the filter: Batch
    compares such values without regard to case, and keys are lower case."""
    state: str | None = None
    ids: KeyRange = EVERY_KEY


def narrowing(text: str | None) -> Narrowing:
    """The Narrowing of a filter that is a conjunction (no or, no not: parentheses then only
    group conditions that must all hold) of, among others, `state eq 'x'`, `id eq 'x'` and
    `startswith(id, 'x')`. Anything else narrows nothing."""
    if text is None or not text.strip():
        return Narrowing()
    try:
        tokens = _tokenize(text)
    except _FilterError:
        return Narrowing()  # compile_filter reports it
    if any(t.kind == "name" and t.text.lower() in ("or", "not") for t in tokens):
        return Narrowing()
    state, ids = None, EVERY_KEY
    for name, value in _equalities(tokens):
        if name == "state" and state is None:
            state = value.casefold()
        elif name == "id" and value.isascii():  # non-ASCII case mappings are not char by char
            ids = ids.within(KeyRange.exactly(value.lower()))
    for name, prefix in _prefixes(tokens):
        if name == "id" and prefix.isascii():
            ids = ids.within(KeyRange.starting_with(prefix.lower()))
    return Narrowing(state, ids)


def _equalities(tokens: list[_Token]) -> Iterator[tuple[str, str]]:
    """(property, text) of each `property eq 'text'` or `'text' eq property`."""
    for left, op, right in zip(tokens, tokens[1:], tokens[2:]):
        if op.kind == "name" and op.text.lower() == "eq":
            if left.kind == "name" and right.kind == "string":
                yield left.text, right.value
            elif left.kind == "string" and right.kind == "name":
                yield right.text, left.value


def _prefixes(tokens: list[_Token]) -> Iterator[tuple[str, str]]:
    """(property, prefix) of each `startswith(property, 'prefix')` that is a condition of
    its own (not compared with false)."""
    for i in range(len(tokens) - 5):
        call, opening, name, comma, prefix, closing = tokens[i:i + 6]
        compared = i + 6 < len(tokens) and tokens[i + 6].text.lower() in _COMPARATORS
        if call.kind == "name" and call.text.lower() == "startswith" and opening.kind == "(" and \
                name.kind == "name" and comma.kind == "," and prefix.kind == "string" and closing.kind == ")" \
                and not compared:
            yield name.text, prefix.value


# ---------------------------------------------------------------------------------------------
# $select and maxresults

_SELECT_NAME = re.compile(r"[A-Za-z_$][\w$]*")


def apply_select(obj: dict, select: str | None) -> dict:
    """Keep only the listed top-level properties ("odata.*" annotations always stay)."""
    if select is None or not select.strip():
        return obj
    names = [name.strip() for name in select.split(",")]
    for name in names:
        if name != "*" and not _SELECT_NAME.fullmatch(name):
            reason = "An empty property name." if not name else f"Invalid property name '{name}'."
            raise _bad_query("$select", select, reason)
    if "*" in names:
        return obj
    wanted = set(names)
    return {key: value for key, value in obj.items() if key in wanted or key.startswith("odata.")}


def parse_max_results(value: str | None, default: int = 1000, maximum: int = 1000) -> int:
    """maxresults -> page size: absent -> default, above maximum -> maximum (Azure caps at 1000)."""
    if value is None or not value.strip():
        return default  # the SDK's parse_qs drops blank values, so blank means absent
    # A strict digit check: int() would also take "1_000", "+5" and non-ASCII digits.
    digits = value.strip().lstrip("0")
    if not re.fullmatch(r"[0-9]+", digits):  # also catches zero, which strips to ""
        raise _bad_query("maxresults", value, f"The value must be an integer between 1 and {maximum}.")
    # Past 12 digits it is above any cap; skip int() on an arbitrarily long string.
    return maximum if len(digits) > 12 else min(int(digits), maximum)


def page(items: Iterable[dict], query: dict, key: Callable[[dict], str]) -> tuple[list[dict], str | None]:
    """$filter, then the order of `key`, continuing after $skiptoken, cut to maxresults:
    the page, and the skiptoken of the next page (None on the last)."""
    after = query.get("$skiptoken")
    ordered = sorted(items, key=key)
    return ordered_page((item for item in ordered if not after or key(item) > after), query, key)


def ordered_page(ordered: Iterable[dict], query: dict,
                 key: Callable[[dict], str]) -> tuple[list[dict], str | None]:
    """As `page`, for items that already come in `key` order from just after the
    $skiptoken: reading stops at the first match past the page, so a lazy source (a store
    read in chunks) costs what the page costs, whatever the size of the whole list."""
    predicate = compile_filter(query.get("$filter"))
    page_size = parse_max_results(query.get("maxresults"))
    chosen = list(islice((item for item in ordered if predicate(item)), page_size + 1))
    found = chosen[:page_size]
    return found, (key(found[-1]) if len(chosen) > page_size else None)
