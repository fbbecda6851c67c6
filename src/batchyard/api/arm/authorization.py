"""`Microsoft.Authorization/roleDefinitions` (list, get) and `roleAssignments` (create, get,
list with `$filter`, delete) at subscription, resource-group and resource scope (resources
and their children), as azure-mgmt-authorization calls them; roleDefinitions also at the
tenant (`/providers/Microsoft.Authorization/roleDefinitions/{id}`, get_by_id)."""

from __future__ import annotations

from starlette.responses import JSONResponse, Response

from ...services.authorization import Caller
from .router import ArmContext, ArmRouter

NS = "Microsoft.Authorization"
SCOPES = (
    "/subscriptions/{subscription}",
    "/subscriptions/{subscription}/resourceGroups/{resourceGroup}",
    "/subscriptions/{subscription}/resourceGroups/{resourceGroup}/providers/{rpNamespace}/{type1}/{name1}",
    "/subscriptions/{subscription}/resourceGroups/{resourceGroup}/providers/{rpNamespace}/{type1}/{name1}"
    "/{type2}/{name2}",
)
_MARK = f"/providers/{NS}/".lower()


def _scope(ctx: ArmContext) -> str:
    """The scope as the path names it: everything before /providers/Microsoft.Authorization/."""
    path = ctx.request.scope["path"]
    return path[:path.lower().rfind(_MARK)] or "/"


async def list_definitions(ctx: ArmContext) -> Response:
    defs = await ctx.call(ctx.services.authorization.definitions, _scope(ctx), ctx.query.get("$filter"))
    return JSONResponse({"value": defs})


async def get_definition(ctx: ArmContext) -> Response:
    return JSONResponse(ctx.services.authorization.definition(_scope(ctx), ctx.params["roleDefinition"]))


async def create_assignment(ctx: ArmContext) -> Response:
    body = await ctx.json()
    assignment, created = await ctx.call(ctx.services.authorization.create_assignment, _scope(ctx),
                                         ctx.params["roleAssignment"], body, Caller.bearer(ctx.claims))
    return JSONResponse(assignment, status_code=201 if created else 200)


async def get_assignment(ctx: ArmContext) -> Response:
    return JSONResponse(await ctx.call(ctx.services.authorization.get_assignment, _scope(ctx),
                                       ctx.params["roleAssignment"]))


async def delete_assignment(ctx: ArmContext) -> Response:
    deleted = await ctx.call(ctx.services.authorization.delete_assignment, _scope(ctx), ctx.params["roleAssignment"])
    return JSONResponse(deleted) if deleted else Response(status_code=204)


async def list_assignments(ctx: ArmContext) -> Response:
    found = await ctx.call(ctx.services.authorization.list_assignments, _scope(ctx), ctx.query.get("$filter"))
    return JSONResponse({"value": found})


def register(router: ArmRouter) -> None:
    for scope in ("",) + SCOPES:
        definitions = f"{scope}/providers/{NS}/roleDefinitions"
        router.add("GET", definitions, list_definitions, NS)
        router.add("GET", definitions + "/{roleDefinition}", get_definition, NS)
    for scope in SCOPES:
        assignments = f"{scope}/providers/{NS}/roleAssignments"
        router.add("GET", assignments, list_assignments, NS)
        router.add("PUT", assignments + "/{roleAssignment}", create_assignment, NS)
        router.add("GET", assignments + "/{roleAssignment}", get_assignment, NS)
        router.add("DELETE", assignments + "/{roleAssignment}", delete_assignment, NS)
