"""How bodies and private records are written in the database: JSON text, made and read by
orjson (a tenth of the json module's cost: every task is written when it starts and when it
ends, and read by every page that shows it). Keys that are not strings are written as
strings, as the json module did."""

from __future__ import annotations

from typing import Any

import orjson

_OPTIONS = orjson.OPT_NON_STR_KEYS


def encode(value: Any) -> str:
    return orjson.dumps(value, option=_OPTIONS).decode()


def decode(text: str | bytes) -> Any:
    return orjson.loads(text)
