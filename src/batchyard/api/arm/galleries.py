"""Microsoft.Compute/galleries, their image definitions (`images`) and image versions
(`images/{def}/versions`). Each handler parses, calls one service method, renders."""

from __future__ import annotations

from starlette.responses import JSONResponse, Response

from ...services.arm_ids import ResourceId
from . import lro
from .router import ArmContext, ArmRouter

SUB = "/subscriptions/{subscription}"
RG = SUB + "/resourceGroups/{resourceGroup}/providers/Microsoft.Compute"
GALLERY = RG + "/galleries/{galleries}"
DEFINITION = GALLERY + "/images/{images}"
VERSION = DEFINITION + "/versions/{versions}"
KINDS = {"gallery": ("galleries",), "definition": ("galleries", "images"),
         "version": ("galleries", "images", "versions")}


def _rid(ctx: ArmContext, kind: str) -> ResourceId:
    return ctx.rid("Microsoft.Compute", *KINDS[kind])


def _created(resource_and_created) -> lro.Outcome:
    resource, created = resource_and_created
    return (201 if created else 200), resource.body


def _put(kind: str, create):
    async def handler(ctx: ArmContext) -> Response:
        body, rid = await ctx.json(), _rid(ctx, kind)
        return await lro.run(ctx, lambda: _created(create(ctx.services.galleries)(rid, body)))
    return handler


def _delete(kind: str, delete):
    async def handler(ctx: ArmContext) -> Response:
        rid = _rid(ctx, kind)
        return await lro.run(ctx, lambda: ((200 if delete(ctx.services.galleries)(rid) else 204), None))
    return handler


async def get_gallery(ctx: ArmContext) -> Response:
    return JSONResponse((await ctx.call(ctx.services.galleries.get, _rid(ctx, "gallery"))).body)


async def get_definition(ctx: ArmContext) -> Response:
    return JSONResponse((await ctx.call(ctx.services.galleries.get, _rid(ctx, "definition"))).body)


async def get_version(ctx: ArmContext) -> Response:
    version = await ctx.call(ctx.services.galleries.get, _rid(ctx, "version"))
    return JSONResponse(ctx.services.galleries.version_body(version, ctx.query.get("$expand")))


async def patch_version(ctx: ArmContext) -> Response:
    body, rid = await ctx.json(), _rid(ctx, "version")
    return await lro.run(ctx, lambda: (200, ctx.services.galleries.update_version(rid, body).body))


async def list_galleries(ctx: ArmContext) -> Response:
    found = await ctx.call(ctx.services.galleries.list, ctx.params["subscription"], ctx.params.get("resourceGroup"))
    return JSONResponse({"value": [g.body for g in found]})


async def list_definitions(ctx: ArmContext) -> Response:
    found = await ctx.call(ctx.services.galleries.list_definitions, _rid(ctx, "gallery"))
    return JSONResponse({"value": [d.body for d in found]})


async def list_versions(ctx: ArmContext) -> Response:
    found = await ctx.call(ctx.services.galleries.list_versions, _rid(ctx, "definition"))
    galleries = ctx.services.galleries
    return JSONResponse({"value": [galleries.version_body(v, ctx.query.get("$expand")) for v in found]})


def register(router: ArmRouter) -> None:
    add = router.add
    add("PUT", GALLERY, _put("gallery", lambda g: g.create_or_update_gallery))
    add("PATCH", GALLERY, _put("gallery", lambda g: g.update_gallery))
    add("GET", GALLERY, get_gallery)
    add("DELETE", GALLERY, _delete("gallery", lambda g: g.delete_gallery))
    add("GET", RG + "/galleries", list_galleries)
    add("GET", SUB + "/providers/Microsoft.Compute/galleries", list_galleries)

    add("PUT", DEFINITION, _put("definition", lambda g: g.create_or_update_definition))
    add("GET", DEFINITION, get_definition)
    add("DELETE", DEFINITION, _delete("definition", lambda g: g.delete_definition))
    add("GET", GALLERY + "/images", list_definitions)

    add("PUT", VERSION, _put("version", lambda g: g.create_or_update_version))
    add("PATCH", VERSION, patch_version)
    add("GET", VERSION, get_version)
    add("DELETE", VERSION, _delete("version", lambda g: g.delete_version))
    add("GET", DEFINITION + "/versions", list_versions)
