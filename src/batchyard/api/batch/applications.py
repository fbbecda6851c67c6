"""Applications on the Batch data plane: list and get, with their active package versions.
Each handler calls the applications service and renders."""

from __future__ import annotations

from starlette.responses import Response

from .rendering import listing
from .router import ODATA_JSON, BatchContext, BatchJSON, BatchRouter


async def list_applications(ctx: BatchContext) -> Response:
    found = await ctx.call(ctx.services.applications.data_plane_list, ctx.account.name)
    return listing(ctx, "applications", found)


async def get_application(ctx: BatchContext) -> Response:
    found = await ctx.call(ctx.services.applications.data_plane_get, ctx.account.name, ctx.params["applicationId"])
    return BatchJSON({"odata.metadata": f"{ctx.endpoint}/$metadata#applications/@Element", **found},
                     media_type=ODATA_JSON)


def register(router: BatchRouter) -> None:
    router.add("GET", "/applications", list_applications)
    router.add("GET", "/applications/{applicationId}", get_application)
