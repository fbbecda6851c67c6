"""The write address that `beginGetAccess` hands out for a disk created with
createOption Upload: a blob-style PUT of the whole archive, or Put Page writes at offsets."""

from __future__ import annotations

import re

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..services.errors import ServiceError
from .bodies import stream
from .errors import arm_error

_RANGE = re.compile(r"^bytes=(\d+)-(\d+)$")
_FLUSH_BYTES = 4 << 20


async def put_upload(request: Request) -> Response:
    disks = request.app.state.services.disks
    disk_key, token = request.path_params["disk"], request.query_params.get("sig", "")
    whole_blob = request.query_params.get("comp") != "page"
    position = 0
    if not whole_blob:
        match = _RANGE.match(request.headers.get("x-ms-range") or request.headers.get("range") or "")
        if not match:
            return Response("InvalidRange", status_code=416)
        position = int(match[1])
    pending = bytearray()
    first = True

    async def flush() -> None:
        nonlocal position, first
        await run_in_threadpool(disks.receive_upload, disk_key, token, bytes(pending), position, whole_blob and first)
        position += len(pending)
        first = False
        pending.clear()

    try:
        async for chunk in stream(request):
            pending.extend(chunk)
            if len(pending) >= _FLUSH_BYTES:
                await flush()
        await flush()
    except ServiceError as exc:
        return arm_error(exc, 403)
    return Response(status_code=201)


routes = [Route("/_upload/{disk}", put_upload, methods=["PUT"])]
