"""The write address that `beginGetAccess` hands out for a disk created with
createOption Upload: a blob-style PUT of the whole archive, or Put Page writes at offsets."""

from __future__ import annotations

import re

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..services.compute.disks import MAX_PAGE_WRITE
from ..services.errors import NotFound, PayloadTooLarge, RangeNotSatisfiable, ServiceError
from .bodies import read_body, stream
from .errors import arm_error

_RANGE = re.compile(r"^bytes=(\d+)-(\d+)$")
_FLUSH_BYTES = 4 << 20


async def put_upload(request: Request) -> Response:
    disks = request.app.state.services.disks
    disk_key, token = request.path_params["disk"], request.query_params.get("sig", "")
    try:
        if request.query_params.get("comp") == "page":
            await _put_page(request, disks, disk_key, token)
        else:
            await _put_blob(request, disks, disk_key, token)
    except ServiceError as exc:
        return arm_error(exc, 403 if isinstance(exc, NotFound) else None)  # a bad or revoked address: 403
    return Response(status_code=201)


async def _put_page(request: Request, disks, disk_key: str, token: str) -> None:
    match = _RANGE.match(request.headers.get("x-ms-range") or request.headers.get("range") or "")
    if not match:
        raise RangeNotSatisfiable("InvalidRange", "A page write names its range: x-ms-range: bytes=FIRST-LAST.")
    data = await read_body(request, MAX_PAGE_WRITE, PayloadTooLarge("RequestBodyTooLarge",
                                                                    "A page write holds at most 4 MiB."))
    await run_in_threadpool(disks.receive_pages, disk_key, token, int(match[1]), int(match[2]), data,
                            request.headers.get("x-ms-page-write", "update").lower())


async def _put_blob(request: Request, disks, disk_key: str, token: str) -> None:
    """The whole archive in one PUT, written as it streams."""
    position = 0
    pending = bytearray()

    async def flush() -> None:
        nonlocal position
        await run_in_threadpool(disks.receive_upload, disk_key, token, bytes(pending), position, position == 0)
        position += len(pending)
        pending.clear()

    async for chunk in stream(request):
        pending.extend(chunk)
        if len(pending) >= _FLUSH_BYTES:
            await flush()
    await flush()


routes = [Route("/_upload/{disk}", put_upload, methods=["PUT"])]
