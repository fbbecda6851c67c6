"""Microsoft.Resources: tenants, subscriptions, locations and resource groups."""

from __future__ import annotations

from starlette.responses import JSONResponse, Response

from ...services.authorization import Caller
from ...services import locations
from ...services.resource_groups import GROUP_TYPE
from . import lro
from .router import ArmContext, ArmRouter

NS = "Microsoft.Resources"
SUB = "/subscriptions/{subscription}"
RG = SUB + "/resourceGroups/{resourceGroup}"


def _listing(items: list[dict]) -> JSONResponse:
    return JSONResponse({"value": items})


def _subscription_body(sub: dict) -> dict:
    return {"id": f"/subscriptions/{sub['subscriptionId']}", "subscriptionId": sub["subscriptionId"],
            "tenantId": sub["tenantId"], "displayName": sub["displayName"], "state": "Enabled",
            "subscriptionPolicies": {"locationPlacementId": "Public_2014-09-01", "quotaId": "Batchyard",
                                     "spendingLimit": "Off"}, "authorizationSource": "RoleBased", "managedByTenants": []}


async def get_subscription(ctx: ArmContext) -> Response:
    sub = await ctx.call(ctx.services.groups.check_subscription, ctx.params["subscription"])
    return JSONResponse(_subscription_body(sub))


async def list_subscriptions(ctx: ArmContext) -> Response:
    """The subscriptions of the caller's tenant in which it has a role (what `az login` lists)."""
    subs = await ctx.call(ctx.services.groups.subscriptions, ctx.claims.get("tid", ""))
    oid = Caller.bearer(ctx.claims).object_id
    return _listing([_subscription_body(s) for s in subs
                     if ctx.services.authorization.has_role_within(oid, f"/subscriptions/{s['subscriptionId']}")])


async def list_tenants(ctx: ArmContext) -> Response:
    """The caller's own tenant: a service principal belongs to one."""
    tenant = ctx.claims.get("tid", "")
    return _listing([{"id": f"/tenants/{tenant}", "tenantId": tenant, "tenantCategory": "Home",
                      "displayName": "Batchyard", "defaultDomain": "batchyard.local", "domains": ["batchyard.local"],
                      "tenantType": "AAD"}])


async def list_locations(ctx: ArmContext) -> Response:
    return _listing([locations.view(r, ctx.params["subscription"]) for r in locations.REGIONS])


async def list_subscription_resources(ctx: ArmContext) -> Response:
    found = await ctx.call(ctx.services.groups.resources_in_subscription, ctx.params["subscription"],
                           ctx.query.get("$filter"))
    return _listing([_generic(r.body) for r in found])


def _generic(body: dict) -> dict:
    """A GenericResource as the resources lists show one: no properties."""
    keep = ("id", "name", "type", "location", "tags", "sku", "kind", "managedBy", "identity")
    return {k: body[k] for k in keep if k in body}


async def list_groups(ctx: ArmContext) -> Response:
    groups = await ctx.call(ctx.services.groups.list, ctx.params["subscription"])
    return _listing([g.body for g in groups])


async def put_group(ctx: ArmContext) -> Response:
    body = await ctx.json()
    group, created = await ctx.call(ctx.services.groups.create_or_update, ctx.params["subscription"],
                                    ctx.params["resourceGroup"], body)
    return JSONResponse(group.body, status_code=201 if created else 200)


async def get_group(ctx: ArmContext) -> Response:
    group = await ctx.call(ctx.services.groups.get, ctx.params["subscription"], ctx.params["resourceGroup"])
    return JSONResponse(group.body)


async def head_group(ctx: ArmContext) -> Response:
    exists = await ctx.call(ctx.services.groups.exists, ctx.params["subscription"], ctx.params["resourceGroup"])
    return Response(status_code=204 if exists else 404)


async def patch_group(ctx: ArmContext) -> Response:
    body = await ctx.json()
    group = await ctx.call(ctx.services.groups.get, ctx.params["subscription"], ctx.params["resourceGroup"])
    merged = {"location": group.body["location"], "tags": body.get("tags", group.body.get("tags"))} \
        if isinstance(body, dict) else body
    group, _ = await ctx.call(ctx.services.groups.create_or_update, ctx.params["subscription"],
                              ctx.params["resourceGroup"], merged)
    return JSONResponse(group.body)


async def delete_group(ctx: ArmContext) -> Response:
    groups = ctx.services.groups
    await ctx.call(groups.mark_deleting, ctx.params["subscription"], ctx.params["resourceGroup"])

    def work():
        groups.delete(ctx.params["subscription"], ctx.params["resourceGroup"])
        return 200, None

    return await lro.run(ctx, work)


async def list_group_resources(ctx: ArmContext) -> Response:
    resources = await ctx.call(ctx.services.groups.resources_in, ctx.params["subscription"],
                               ctx.params["resourceGroup"])
    return _listing([_generic(r.body) for r in resources if r.type.lower() != GROUP_TYPE.lower()])


def register(router: ArmRouter) -> None:
    router.add("GET", "/subscriptions", list_subscriptions, NS)
    router.add("GET", "/tenants", list_tenants, NS)
    router.add("GET", SUB, get_subscription, NS)
    router.add("GET", SUB + "/locations", list_locations, NS)
    router.add("GET", SUB + "/resources", list_subscription_resources, NS)
    router.add("GET", SUB + "/resourceGroups", list_groups, NS)
    router.add("PUT", RG, put_group, NS)
    router.add("GET", RG, get_group, NS)
    router.add("HEAD", RG, head_group, NS)
    router.add("PATCH", RG, patch_group, NS)
    router.add("DELETE", RG, delete_group, NS)
    router.add("GET", RG + "/resources", list_group_resources, NS)
    for kind in ("Microsoft.Compute", "Microsoft.Resources"):
        base = SUB + f"/providers/{kind}/locations/{{location}}"
        router.add("GET", base + "/operations/{operation}", lro.operation_status, kind, own_check=True)
        router.add("GET", base + "/operationResults/{operation}", lro.operation_result, kind, own_check=True)
