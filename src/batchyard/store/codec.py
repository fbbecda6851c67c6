"""How bodies and private records are written in the database: JSON text, made and read by
orjson (a tenth of the json module's cost: every task is written when it starts and when it
ends, and read by every page that shows it). Keys that are not strings are written as
strings, as the json module did."""

from __future__ import annotations

import json
from typing import Any

import orjson

_OPTIONS = orjson.OPT_NON_STR_KEYS
# orjson cannot write an integer past 64 bits (it reads one as a float) nor a lone surrogate
# (it refuses one). A value holding either (rare: a client's huge number in a property kept
# as given) is written by the json module with this mark in front, which JSON allows as
# whitespace and orjson never writes: the reader then knows, from the first character,
# which of the two reads it exactly. (Looking for long runs of digits instead cost several
# times orjson's whole read, on every row read.)
JSON_MODULE_MARK = " "


def encode(value: Any) -> str:
    try:
        return orjson.dumps(value, option=_OPTIONS).decode()
    except TypeError:
        # what orjson refuses and the json module writes (see JSON_MODULE_MARK)
        return JSON_MODULE_MARK + json.dumps(value)


def decode(text: str) -> Any:
    return json.loads(text) if text.startswith(JSON_MODULE_MARK) else orjson.loads(text)
