"""How bodies and private records are written in the database: JSON text, made and read by
orjson (a tenth of the json module's cost: every task is written when it starts and when it
ends, and read by every page that shows it). Keys that are not strings are written as
strings, as the json module did."""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

_OPTIONS = orjson.OPT_NON_STR_KEYS
# orjson reads an integer past 64 bits as a float: text that may hold one (19 digits in a
# row, rare: a long id or a client's huge number) is read by the json module, exactly.
_LONG_DIGITS = re.compile(r"\d{19}")


def encode(value: Any) -> str:
    try:
        return orjson.dumps(value, option=_OPTIONS).decode()
    except TypeError:
        # what orjson refuses and the json module writes: an integer past 64 bits that a
        # client put in a property the service keeps as given
        return json.dumps(value)


def decode(text: str) -> Any:
    return json.loads(text) if _LONG_DIGITS.search(text) else orjson.loads(text)
