"""Answering long-running ARM operations as fast as the work allows.

The work starts at once. If it ends within a short wait the request is answered
synchronously (200/201 with the final body and no polling headers: the SDK then makes no
further request). Otherwise the answer is 202 with `Azure-AsyncOperation` and `Location`,
status polls carry `Retry-After: 1` (never 0, which the SDK reads as "wait 30 s"), and the
`Location` URL serves the final result.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable

from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response

from ...services.authorization import Caller
from ...services.errors import ServiceError
from ..errors import arm_error, arm_error_body, status_of
from ..permissions import arm_permission
from .router import ArmContext

# A rendered outcome: (status code, JSON body or None)
Outcome = tuple[int, Any]


def _respond(outcome: Outcome) -> Response:
    status, body = outcome
    if body is None:
        return Response(status_code=status)
    return JSONResponse(body, status_code=status)


async def run(ctx: ArmContext, work: Callable[[], Outcome]) -> Response:
    """`work` runs in a thread and returns the synchronous answer it would give."""
    task = asyncio.ensure_future(run_in_threadpool(work))
    done, _ = await asyncio.wait({task}, timeout=ctx.services.settings.sync_wait_seconds)
    if done:
        try:
            return _respond(task.result())
        except ServiceError as exc:
            return arm_error(exc)
    operations = ctx.services.operations
    op = await run_in_threadpool(operations.start, Caller.bearer(ctx.claims).object_id)

    def record(finished: asyncio.Future) -> None:
        try:
            status, body = finished.result()
            operations.finish(op.id, {"status": status, "body": body})
        except ServiceError as exc:
            operations.finish(op.id, {"status": status_of(exc), "body": arm_error_body(exc)},
                              error=arm_error_body(exc)["error"])
        except Exception as exc:  # noqa: BLE001 - reported to the poller, not lost
            operations.finish(op.id, error={"code": "InternalServerError", "message": str(exc)})

    task.add_done_callback(lambda t: asyncio.get_running_loop().run_in_executor(None, record, t))
    sub = ctx.params["subscription"]
    base = f"{ctx.base_url}/subscriptions/{sub}/providers/Microsoft.Compute/locations/local"
    version = ctx.request.query_params.get("api-version")
    return Response(status_code=202, headers={
        "Azure-AsyncOperation": f"{base}/operations/{op.id}?api-version={version}",
        "Location": f"{base}/operationResults/{op.id}?api-version={version}",
        "Retry-After": "1",
    })


async def failed(ctx: ArmContext, status: int, body: dict, error: dict) -> Response:
    """A resource that was written but whose provisioning failed (say an extension whose
    script failed): Azure answers the PUT, then reports the failure through the operation,
    which the SDK turns into an error while the resource stays readable."""
    operations = ctx.services.operations
    op = await run_in_threadpool(operations.start, Caller.bearer(ctx.claims).object_id)
    await run_in_threadpool(operations.finish, op.id, {"status": status, "body": body}, error)
    sub = ctx.params["subscription"]
    url = f"{ctx.base_url}/subscriptions/{sub}/providers/Microsoft.Compute/locations/local/operations/{op.id}"
    return JSONResponse(body, status_code=status, headers={
        "Azure-AsyncOperation": f"{url}?api-version={ctx.request.query_params.get('api-version')}"})


async def _operation(ctx: ArmContext):
    """The operation, for the principal who started it; anyone else needs the permission to
    read operations at the subscription (as the router would check for any other path).
    Polling must work for a caller whose role is on a resource group only."""
    op = await ctx.call(ctx.services.operations.get, ctx.params["operation"])
    caller = Caller.bearer(ctx.claims)
    if op.owner is None or op.owner != caller.object_id:
        await ctx.call(ctx.services.authorization.require, caller, *arm_permission("GET", ctx.request.scope["path"]))
    return op


async def operation_status(ctx: ArmContext) -> Response:
    op = await _operation(ctx)
    body = {"name": op.id, "status": op.status, "startTime": op.start_time}
    if op.end_time:
        body["endTime"] = op.end_time
    if op.error:
        body["error"] = op.error
    headers = {"Retry-After": "1"} if op.status == "InProgress" else {}
    return JSONResponse(body, headers=headers)


async def operation_result(ctx: ArmContext) -> Response:
    op = await _operation(ctx)
    if op.status == "InProgress":
        return Response(status_code=202, headers={"Retry-After": "1"})
    if op.result is None:
        return JSONResponse({"error": op.error}, status_code=500)
    return _respond((op.result["status"], op.result["body"]))
