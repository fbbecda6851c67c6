"""Microsoft.Batch/batchAccounts/{account}/pools: the data plane's pools on the management
plane. Each handler parses, calls the management-pools service, renders.

azure-mgmt-batch expects exactly 200 from create, update, stopResize and disableAutoScale
(none is a long-running operation there) and reads the `ETag` header; delete is a
long-running operation: 200 when the pool is gone within the short wait, else 202 with a
`Location` the SDK polls until the pool's nodes have left.
"""

from __future__ import annotations

import asyncio
import time
from urllib.parse import quote

from starlette.responses import JSONResponse, Response

from ...services.authorization import Caller
from ...services.arm_ids import ResourceId
from ...services.batch import pool_arm_shape as shape
from ...services.errors import NotFound
from .batch import ACCOUNT, NS
from .router import ArmContext, ArmRouter

POOLS = ACCOUNT + "/pools"
POOL = POOLS + "/{pools}"
DELETE_STATUS = ACCOUNT + "/poolOperationResults/{operation}"
DELETE_PREFIX = "delete-"


def _account(ctx: ArmContext) -> ResourceId:
    return ctx.rid(NS, "batchAccounts")


def _pool_response(pool) -> Response:
    view = shape.render(pool)
    return JSONResponse(view, headers={"ETag": view["etag"]})


async def put_pool(ctx: ArmContext) -> Response:
    body, headers = await ctx.json(), ctx.request.headers
    pool = await ctx.call(ctx.services.management_pools.create_or_update, _account(ctx), ctx.params["pools"],
                          body, headers.get("if-match"), headers.get("if-none-match"), Caller.bearer(ctx.claims))
    return _pool_response(pool)


async def patch_pool(ctx: ArmContext) -> Response:
    body = await ctx.json()
    pool = await ctx.call(ctx.services.management_pools.update, _account(ctx), ctx.params["pools"], body,
                          ctx.request.headers.get("if-match"), Caller.bearer(ctx.claims))
    return _pool_response(pool)


async def get_pool(ctx: ArmContext) -> Response:
    pool = await ctx.call(ctx.services.management_pools.get, _account(ctx), ctx.params["pools"])
    return _pool_response(pool)


async def list_pools(ctx: ArmContext) -> Response:
    found, next_token = await ctx.call(ctx.services.management_pools.list, _account(ctx), ctx.query)
    body: dict = {"value": found}
    if next_token is not None:
        # The SDK sends none of the first request's query again: the link carries it all.
        carried = {k: v for k, v in ctx.query.items() if k in ("$filter", "$select", "maxresults")}
        carried["$skiptoken"] = next_token
        query = "&".join(f"{k}={quote(v, safe='')}" for k, v in
                         [("api-version", ctx.query["api-version"]), *sorted(carried.items())])
        body["nextLink"] = f"{ctx.base_url}{ctx.request.url.path}?{query}"
    return JSONResponse(body)


def _action(method_name: str):
    async def handler(ctx: ArmContext) -> Response:
        pool = await ctx.call(getattr(ctx.services.management_pools, method_name), _account(ctx),
                              ctx.params["pools"])
        return _pool_response(pool)
    return handler


async def delete_pool(ctx: ArmContext) -> Response:
    service, account, name = ctx.services.management_pools, _account(ctx), ctx.params["pools"]
    if not await ctx.call(service.delete, account, name):
        return Response(status_code=204)
    deadline = time.monotonic() + ctx.services.settings.sync_wait_seconds
    while time.monotonic() < deadline:
        if not await ctx.call(service.deleting, account, name):
            return Response(status_code=200)
        await asyncio.sleep(0.05)
    location = f"{ctx.base_url}{account}/poolOperationResults/{DELETE_PREFIX}{quote(name, safe='')}"
    return Response(status_code=202, headers={
        "Location": f"{location}?api-version={quote(ctx.query['api-version'], safe='')}", "Retry-After": "1"})


async def delete_status(ctx: ArmContext) -> Response:
    """202 while the pool named by the operation is still being deleted, then 200."""
    operation = ctx.params["operation"]
    if not operation.startswith(DELETE_PREFIX):
        raise NotFound("OperationNotFound", f"The operation '{operation}' does not exist.")
    if await ctx.call(ctx.services.management_pools.deleting, _account(ctx), operation[len(DELETE_PREFIX):]):
        return Response(status_code=202, headers={"Retry-After": "1"})
    return Response(status_code=200)


def register(router: ArmRouter) -> None:
    add = router.add
    add("PUT", POOL, put_pool, NS)
    add("PATCH", POOL, patch_pool, NS)
    add("GET", POOL, get_pool, NS)
    add("DELETE", POOL, delete_pool, NS)
    add("GET", POOLS, list_pools, NS)
    add("POST", POOL + "/stopResize", _action("stop_resize"), NS)
    add("POST", POOL + "/disableAutoScale", _action("disable_autoscale"), NS)
    add("GET", DELETE_STATUS, delete_status, NS)
