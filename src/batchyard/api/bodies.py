"""Request bodies read with a limit that holds while they stream: a declared
Content-Length over the limit is refused before a byte is read, and a chunked body stops
being read as soon as it passes the limit. Nothing beyond the limit is ever buffered."""

from __future__ import annotations

from starlette.requests import Request

from ..services.errors import PayloadTooLarge


async def read_body(request: Request, limit: int, too_large: PayloadTooLarge) -> bytes:
    """The whole body, or `too_large` raised once it is known to exceed `limit` bytes.
    Read once per request; later calls return the same bytes."""
    cached = getattr(request.state, "body", None)
    if cached is not None:
        return cached
    declared = request.headers.get("content-length")
    if declared is not None and declared.strip().isdigit() and int(declared) > limit:
        raise too_large
    received = bytearray()
    async for chunk in request.stream():
        received.extend(chunk)
        if len(received) > limit:
            raise too_large
    request.state.body = bytes(received)
    return request.state.body
