"""The store's JSON codec (store/codec.py) reads back what the json module would have
written, for everything a body or record may hold. No server."""

from __future__ import annotations

import json

import pytest

from batchyard.store import codec


@pytest.mark.parametrize("value", [
    {"id": "t1", "state": "active", "n": 3, "f": 2.5, "ok": True, "none": None, "list": [1, "a", {"b": []}]},
    {"unicode": "naïve ✓ 任务", "escapes": "quote \" backslash \\ newline \n tab \t"},
    {1: "int key", 2.5: "float key", True: "bool key"},  # the json module writes keys as strings
    {"huge": 10 ** 30, "negative": -(10 ** 25)},  # past 64 bits: orjson refuses, the codec does not
])
def test_what_is_written_reads_back_as_the_json_module_would(value):
    text = codec.encode(value)
    assert isinstance(text, str)
    assert codec.decode(text) == json.loads(json.dumps(value))
