"""Rendering service errors as ARM's error body, with the status each kind means."""

from __future__ import annotations

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
}


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
