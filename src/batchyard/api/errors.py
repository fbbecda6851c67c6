"""The status each kind of service error means (both planes), and ARM's error body."""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import JSONResponse

from ..services import errors

STATUS = {
    errors.InvalidInput: 400,
    errors.Unsupported: 400,
    errors.Unauthenticated: 401,
    errors.Forbidden: 403,
    errors.NotFound: 404,
    errors.Conflict: 409,
    errors.ConditionFailed: 412,
    errors.PayloadTooLarge: 413,
    errors.RangeNotSatisfiable: 416,
    errors.Unavailable: 503,
    errors.TooManyRequests: 429,
}


log = logging.getLogger("batchyard.api")


def unexpected(request: Request, exc: Exception) -> errors.ServiceError | None:
    """What to tell the client about an exception that is not a ServiceError: a full disk is
    the client's to retry (and the reserve is let go, so deletes can free space); anything
    else is a bug of ours (None: the plane answers 500 in its own shape, and it is logged)."""
    if errors.is_disk_full(exc):
        request.app.state.services.reserve.release()
        return errors.disk_full()
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return None


def status_of(error: errors.ServiceError) -> int:
    for kind in type(error).__mro__:
        if kind in STATUS:
            return STATUS[kind]
    return 500


def arm_error_body(error: errors.ServiceError) -> dict:
    body = {"code": error.code, "message": error.message}
    if error.target:
        body["target"] = error.target
    body["details"] = error.details
    return {"error": body}


def arm_error(error: errors.ServiceError, status: int | None = None) -> JSONResponse:
    status = status or status_of(error)
    headers = {"x-ms-failure-cause": "gateway" if status in (401, 403) else "service"}
    if status == 401:
        # error is never "insufficient_claims": the SDK must not retry with a new token.
        description = error.message.replace('"', "'")
        headers["WWW-Authenticate"] = f'Bearer error="invalid_token", error_description="{description}"'
    return JSONResponse(arm_error_body(error), status_code=status, headers=headers)
