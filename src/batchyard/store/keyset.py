"""Keyset paging: a list's rows read in key order from just after the last key of the page
before, within the key range its $filter allows. No OFFSET and no count: a page costs the
rows it holds, whatever the size of the list, and each store's primary key (or index)
answers it with one range scan."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Sequence, TypeVar

Row = TypeVar("Row")

# Above the last character of any key: Batch ids are letters, digits, '-' and '_'.
KEY_CEILING = "\U0010ffff"
# Rows read at a time when a whole list is wanted.
LIST_CHUNK = 500
# A body's state, compared without regard to case (nodes' states are camelCase), for `equal`.
STATE_IN_BODY = "lower(json_extract(body, '$.state'))"


@dataclass(frozen=True)
class KeyRange:
    """Keys from `low` (included) up to `high` (excluded); None leaves that side open."""
    low: str | None = None
    high: str | None = None

    @classmethod
    def exactly(cls, key: str) -> KeyRange:
        return cls(key, key + "\0")  # no key holds NUL: only `key` itself is in range

    @classmethod
    def starting_with(cls, prefix: str) -> KeyRange:
        return cls(prefix, prefix + KEY_CEILING)

    def within(self, other: KeyRange) -> KeyRange:
        """The keys in both ranges."""
        lows = [k for k in (self.low, other.low) if k is not None]
        highs = [k for k in (self.high, other.high) if k is not None]
        return KeyRange(max(lows) if lows else None, min(highs) if highs else None)


EVERY_KEY = KeyRange()


def page_query(table: str, key: str, after: str | None, limit: int, keys: KeyRange = EVERY_KEY,
               prefix: str = "", equal: dict[str, object] | None = None) -> tuple[str, tuple]:
    """The SELECT (and its parameters) of up to `limit` rows of `table` in the order of
    column `key`, after `after`, within `keys`. `prefix`: what every key of the list begins
    with (its keys are prefix + id), which also bounds the range from above. `equal`: SQL
    expressions, written in the code (never taken from a request), and the values they
    must equal (passed as parameters; a None value asks nothing)."""
    clauses, params = [f"{key} > ?"], [prefix + (after or "")]
    if keys.low is not None:
        clauses.append(f"{key} >= ?")
        params.append(prefix + keys.low)
    high = keys.high if keys.high is not None else (KEY_CEILING if prefix else None)
    if high is not None:
        clauses.append(f"{key} < ?")
        params.append(prefix + high)
    for expression, value in (equal or {}).items():
        if value is not None:
            clauses.append(f"{expression} = ?")
            params.append(value)
    return f"SELECT * FROM {table} WHERE {' AND '.join(clauses)} ORDER BY {key} LIMIT ?", (*params, limit)


def in_key_order(read_page: Callable[[str | None, int], Sequence[Row]], key_of: Callable[[Row], str],
                 after: str | None, chunk: int) -> Iterator[Row]:
    """Rows in key order from just after `after`, read `chunk` at a time by
    read_page(after, limit): a caller that stops early reads no more than it used."""
    while True:
        rows = read_page(after, chunk)
        yield from rows
        if len(rows) < chunk:
            return
        after = key_of(rows[-1])
