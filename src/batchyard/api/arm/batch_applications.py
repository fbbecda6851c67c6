"""Microsoft.Batch/batchAccounts/{account}/applications and their packages (versions), and
the account's syncAutoStorageKeys. Each handler parses, calls the applications (or
auto-storage) service, renders. azure-mgmt-batch expects 200 from create, update, get and
activate, 200 or 204 from delete, 204 from syncAutoStorageKeys."""

from __future__ import annotations

from starlette.responses import JSONResponse, Response

from ...services.arm_ids import ResourceId
from .batch import ACCOUNT, NS
from .router import ArmContext, ArmRouter

APPLICATIONS = ACCOUNT + "/applications"
APPLICATION = APPLICATIONS + "/{applications}"
VERSIONS = APPLICATION + "/versions"
VERSION = VERSIONS + "/{versions}"


def _app(ctx: ArmContext) -> ResourceId:
    return ctx.rid(NS, "batchAccounts").child("applications", ctx.params["applications"])


def _version(ctx: ArmContext) -> ResourceId:
    return _app(ctx).child("versions", ctx.params["versions"])


def _app_response(app) -> Response:
    return JSONResponse(app.body, headers={"ETag": app.body["etag"]})


def _package_response(ctx: ArmContext, package) -> Response:
    view = ctx.services.applications.package_view(package)
    return JSONResponse(view, headers={"ETag": view["etag"]})


async def put_application(ctx: ArmContext) -> Response:
    body, rid = await ctx.json(optional=True), _app(ctx)
    return _app_response(await ctx.call(ctx.services.applications.create, rid, body))


async def patch_application(ctx: ArmContext) -> Response:
    body, rid = await ctx.json(), _app(ctx)
    return _app_response(await ctx.call(ctx.services.applications.update, rid, body))


async def get_application(ctx: ArmContext) -> Response:
    return _app_response(await ctx.call(ctx.services.applications.get, _app(ctx)))


async def delete_application(ctx: ArmContext) -> Response:
    deleted = await ctx.call(ctx.services.applications.delete, _app(ctx))
    return Response(status_code=200 if deleted else 204)


async def list_applications(ctx: ArmContext) -> Response:
    found = await ctx.call(ctx.services.applications.list, ctx.rid(NS, "batchAccounts"))
    return JSONResponse({"value": [a.body for a in found]})


async def put_version(ctx: ArmContext) -> Response:
    await ctx.json(optional=True)
    return _package_response(ctx, await ctx.call(ctx.services.applications.create_package, _version(ctx), {}))


async def get_version(ctx: ArmContext) -> Response:
    return _package_response(ctx, await ctx.call(ctx.services.applications.get_package, _version(ctx)))


async def delete_version(ctx: ArmContext) -> Response:
    deleted = await ctx.call(ctx.services.applications.delete_package, _version(ctx))
    return Response(status_code=200 if deleted else 204)


async def list_versions(ctx: ArmContext) -> Response:
    found = await ctx.call(ctx.services.applications.packages, _app(ctx))
    return JSONResponse({"value": [ctx.services.applications.package_view(p) for p in found]})


async def activate_version(ctx: ArmContext) -> Response:
    body, rid = await ctx.json(), _version(ctx)
    return _package_response(ctx, await ctx.call(ctx.services.applications.activate, rid, body))


async def sync_auto_storage_keys(ctx: ArmContext) -> Response:
    account = await ctx.call(ctx.services.accounts.get, ctx.rid(NS, "batchAccounts"))
    await ctx.call(ctx.services.auto_storage.synchronize_keys, account)
    return Response(status_code=204)


def register(router: ArmRouter) -> None:
    add = router.add
    add("PUT", APPLICATION, put_application, NS)
    add("PATCH", APPLICATION, patch_application, NS)
    add("GET", APPLICATION, get_application, NS)
    add("DELETE", APPLICATION, delete_application, NS)
    add("GET", APPLICATIONS, list_applications, NS)
    add("PUT", VERSION, put_version, NS)
    add("GET", VERSION, get_version, NS)
    add("DELETE", VERSION, delete_version, NS)
    add("GET", VERSIONS, list_versions, NS)
    add("POST", VERSION + "/activate", activate_version, NS)
    add("POST", ACCOUNT + "/syncAutoStorageKeys", sync_auto_storage_keys, NS)
