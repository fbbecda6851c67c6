"""Request bodies read with a limit that holds while they stream: a declared
Content-Length over the limit is refused before a byte is read, and a chunked body stops
being read as soon as it passes the limit. Nothing beyond the limit is ever buffered."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import ClientDisconnect, Request

from ..services.errors import InvalidInput, PayloadTooLarge


async def read_body(request: Request, limit: int, too_large: PayloadTooLarge) -> bytes:
    """The whole body, or `too_large` raised once it is known to exceed `limit` bytes (or
    InvalidInput, from `stream`). Read once per request; later calls return the same bytes."""
    cached = getattr(request.state, "body", None)
    if cached is not None:
        return cached
    declared = request.headers.get("content-length")
    if declared is not None and declared.strip().isdigit() and int(declared) > limit:
        raise too_large
    received = bytearray()
    async for chunk in stream(request):
        received.extend(chunk)
        if len(received) > limit:
            raise too_large
    request.state.body = bytes(received)
    return request.state.body


async def stream(request: Request) -> AsyncIterator[bytes]:
    """The body's chunks as they come; InvalidInput when the connection closed before the
    body ended (a client gone, or one cut off by the body timeout, http_protocol.py): no one
    reads that answer, but each plane gives it as a client's mistake, not a server fault."""
    try:
        async for chunk in request.stream():
            yield chunk
    except ClientDisconnect:
        raise InvalidInput("InvalidRequestBody", "The connection closed before the request body ended.") from None


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


# Json.NET's default MaxDepth, which Azure's services read their bodies with. A value stored
# deeper than this could later fail to be written back out (a listing wraps it in two more).
MAX_DEPTH = 64


def parse_json(raw: bytes) -> Any:
    """A request body's JSON, or ValueError (RecursionError when nested too deeply). Refused
    besides what the json module refuses: NaN and Infinity (not JSON), values nested deeper
    than MAX_DEPTH, and a lone surrogate escape such as \\udcff, which JSON's grammar allows
    but no UTF-8 text can hold: every response, file or command line that later carried it
    would fail."""
    value = json.loads(raw, parse_constant=_refuse_constant)
    if raw.count(b"[") + raw.count(b"{") > MAX_DEPTH and not _nested_within(value, MAX_DEPTH):
        raise ValueError(f"the JSON is nested more than {MAX_DEPTH} levels deep")
    if _SURROGATE_ESCAPE.search(raw) and _holds_lone_surrogate(value):
        raise ValueError("a string holds a lone surrogate escape (\\ud800-\\udfff unpaired), which is not Unicode")
    return value


def _nested_within(value: Any, limit: int) -> bool:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return False
        for child in item.values() if isinstance(item, dict) else item if isinstance(item, list) else ():
            if isinstance(child, (dict, list)):
                stack.append((child, depth + 1))
    return True


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def _holds_lone_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(value, dict):
        return any(_holds_lone_surrogate(k) or _holds_lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_holds_lone_surrogate(v) for v in value)
    return False
