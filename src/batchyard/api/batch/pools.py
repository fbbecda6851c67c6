"""Pools, their nodes, supported images, node counts and usage metrics on the Batch data
plane. Each handler parses, calls one service method, renders."""

from __future__ import annotations

from datetime import UTC, datetime

from starlette.responses import Response

from ...services.batch.odata import apply_select
from ...services.batch.pools import check_conditions
from ...services.errors import InvalidInput
from .rendering import listing, read_listing, single
from .router import ODATA_JSON, BatchContext, BatchJSON, BatchRouter, empty_response, entity_response
from .views import node_view, pool_view

POOL = "/pools/{poolId}"
NODE = POOL + "/nodes/{nodeId}"


# pools ----------------------------------------------------------------------------------------

async def create_pool(ctx: BatchContext) -> Response:
    body = await ctx.json()
    pool = await ctx.call(ctx.services.pools.create, ctx.account, body, ctx.auth)
    return empty_response(201, pool.body["eTag"], pool.body["lastModified"], ctx.url("pools", pool.name))


async def list_pools(ctx: BatchContext) -> Response:
    return await read_listing(ctx, "pools", ctx.services.pools.key_prefix(ctx.account))


async def get_pool(ctx: BatchContext) -> Response:
    pool = await ctx.call(ctx.services.pools.get, ctx.account, ctx.params["poolId"])
    return single(ctx, "pools", pool_view(ctx, pool), pool.body)


async def pool_exists(ctx: BatchContext) -> Response:
    pool = await ctx.call(ctx.services.pools.get, ctx.account, ctx.params["poolId"])
    check_conditions(pool.body, ctx.conditions())
    return empty_response(200, pool.body["eTag"], pool.body["lastModified"])


async def delete_pool(ctx: BatchContext) -> Response:
    await ctx.call(ctx.services.pools.delete, ctx.account, ctx.params["poolId"], ctx.conditions())
    return empty_response(202)


def _changed(status: int):
    """A handler that calls one pool-changing service method and answers with the pool's headers."""
    def wrap(method_name: str, with_body: bool = True, with_auth: bool = False, with_conditions: bool = True):
        async def handler(ctx: BatchContext) -> Response:
            args = [ctx.account, ctx.params["poolId"]]
            if with_body:
                args.append(await ctx.json())
            if with_auth:
                args.append(ctx.auth)
            if with_conditions:
                args.append(ctx.conditions())
            pool = await ctx.call(getattr(ctx.services.pools, method_name), *args)
            return empty_response(status, pool.body["eTag"], pool.body["lastModified"],
                                  ctx.url("pools", pool.name))
        return handler
    return wrap


update_pool = _changed(200)("update", with_auth=True)
replace_pool_properties = _changed(204)("replace_properties", with_auth=True, with_conditions=False)
resize_pool = _changed(202)("resize", with_auth=True)
stop_resize = _changed(202)("stop_resize", with_body=False)
remove_nodes = _changed(202)("remove_nodes")


async def enable_autoscale(ctx: BatchContext) -> Response:
    pool = await ctx.call(ctx.services.autoscaler.enable, ctx.account, ctx.params["poolId"], await ctx.json(),
                          ctx.conditions())
    return empty_response(200, pool.body["eTag"], pool.body["lastModified"], ctx.url("pools", pool.name))


async def disable_autoscale(ctx: BatchContext) -> Response:
    pool = await ctx.call(ctx.services.autoscaler.disable, ctx.account, ctx.params["poolId"], ctx.conditions())
    return empty_response(200, pool.body["eTag"], pool.body["lastModified"], ctx.url("pools", pool.name))


async def evaluate_autoscale(ctx: BatchContext) -> Response:
    run = await ctx.call(ctx.services.autoscaler.evaluate_formula, ctx.account, ctx.params["poolId"],
                         await ctx.json())
    return BatchJSON({"odata.metadata": f"{ctx.endpoint}/$metadata#Microsoft.Azure.Batch.Protocol.Entities."
                                        "AutoScaleRun", **run}, media_type=ODATA_JSON,
                     headers={"DataServiceId": ctx.url("pools", ctx.params["poolId"], "evaluateautoscale")})


# nodes ----------------------------------------------------------------------------------------

async def list_nodes(ctx: BatchContext) -> Response:
    pool_id = ctx.params["poolId"]
    return await read_listing(ctx, "nodes", ctx.services.pools.key(ctx.account, pool_id), pool_id,
                              lambda: ctx.services.pools.get(ctx.account, pool_id))


async def get_node(ctx: BatchContext) -> Response:
    node = await ctx.call(ctx.services.pools.get_node, ctx.account, ctx.params["poolId"], ctx.params["nodeId"])
    body = apply_select(node_view(ctx, ctx.params["poolId"], node), ctx.query.get("$select"))
    return entity_response({"odata.metadata": f"{ctx.endpoint}/$metadata#nodes/@Element", **body})


def _node_action(action: str, status: int, with_body: bool):
    async def handler(ctx: BatchContext) -> Response:
        body = await ctx.json(required=False) if with_body else None
        await ctx.call(ctx.services.pools.node_action, ctx.account, ctx.params["poolId"], ctx.params["nodeId"],
                       action, body)
        return empty_response(status, data_service_id=ctx.url("pools", ctx.params["poolId"], "nodes",
                                                              ctx.params["nodeId"]))
    return handler


async def preempt_node(ctx: BatchContext) -> Response:
    await ctx.call(ctx.services.pools.preempt, ctx.account, ctx.params["poolId"], ctx.params["nodeId"])
    return empty_response(202)


# account-wide -------------------------------------------------------------------------------------

async def supported_images(ctx: BatchContext) -> Response:
    images = await ctx.call(ctx.services.pools.supported_images)
    return listing(ctx, "supportedimages", images,
                   key=lambda i: "/".join(i["imageReference"][k] for k in ("publisher", "offer", "sku", "version")))


async def node_agent_skus(ctx: BatchContext) -> Response:
    return listing(ctx, "nodeagentskus", await ctx.call(ctx.services.pools.node_agent_skus))


async def node_counts(ctx: BatchContext) -> Response:
    counts = await ctx.call(ctx.services.pools.node_counts, ctx.account)
    return listing(ctx, "poolnodecounts", counts)


async def usage_metrics(ctx: BatchContext) -> Response:
    start = _query_time(ctx, "startTime")
    end = _query_time(ctx, "endtime") or _query_time(ctx, "endTime")
    rows = await ctx.call(ctx.services.pools.usage_metrics, ctx.account, start, end)
    return listing(ctx, "poolusagemetrics", rows)


def _query_time(ctx: BatchContext, name: str) -> datetime | None:
    value = ctx.query.get(name)
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput("InvalidQueryParameterValue", "Value for one of the query parameters specified in the "
                           "request URI is invalid.", details=[{"key": "QueryParameterName", "value": name},
                                                               {"key": "QueryParameterValue", "value": value}])
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def register(router: BatchRouter) -> None:
    router.add("GET", "/supportedimages", supported_images)
    router.add("GET", "/nodeagentskus", node_agent_skus)
    router.add("GET", "/nodecounts", node_counts)
    router.add("GET", "/poolusagemetrics", usage_metrics)
    router.add("POST", "/pools", create_pool)
    router.add("GET", "/pools", list_pools)
    router.add("GET", POOL, get_pool)
    router.add("HEAD", POOL, pool_exists)
    router.add("PATCH", POOL, update_pool)
    router.add("DELETE", POOL, delete_pool)
    router.add("POST", POOL + "/updateproperties", replace_pool_properties)
    router.add("POST", POOL + "/resize", resize_pool)
    router.add("POST", POOL + "/stopresize", stop_resize)
    router.add("POST", POOL + "/removenodes", remove_nodes)
    router.add("POST", POOL + "/enableautoscale", enable_autoscale)
    router.add("POST", POOL + "/disableautoscale", disable_autoscale)
    router.add("POST", POOL + "/evaluateautoscale", evaluate_autoscale)
    router.add("GET", POOL + "/nodes", list_nodes)
    router.add("GET", NODE, get_node)
    router.add("POST", NODE + "/reboot", _node_action("reboot", 202, True))
    router.add("POST", NODE + "/reimage", _node_action("reimage", 202, True))
    router.add("POST", NODE + "/disablescheduling", _node_action("disablescheduling", 200, True))
    router.add("POST", NODE + "/enablescheduling", _node_action("enablescheduling", 200, False))
    # Not Azure's: how a test (or a curious user) makes a low-priority node preempted.
    router.add("POST", NODE + "/batchyard.preempt", preempt_node)
