"""Microsoft.Batch: Batch accounts and their keys. Each handler parses, calls one service
method, renders; the account endpoint is rendered from the settings (path-style, host-style or Azure's)."""

from __future__ import annotations

from starlette.responses import JSONResponse, Response

from ...services.arm_ids import ResourceId
from ...services.batch.accounts import QUOTAS_ACTION
from . import lro
from .router import ArmContext, ArmRouter

NS = "Microsoft.Batch"
SUB = "/subscriptions/{subscription}"
PROVIDER = "/providers/Microsoft.Batch"
RG = SUB + "/resourceGroups/{resourceGroup}" + PROVIDER
ACCOUNT = RG + "/batchAccounts/{batchAccounts}"


def _rid(ctx: ArmContext) -> ResourceId:
    return ctx.rid(NS, "batchAccounts")


def _view(ctx: ArmContext, account) -> dict:
    endpoint = ctx.services.settings.account_endpoint(account.name, account.body.get("location", ""))
    return ctx.services.accounts.view(account, endpoint)


async def put_account(ctx: ArmContext) -> Response:
    body, rid = await ctx.json(), _rid(ctx)
    # 200 on create too: the SDK accepts only 200 and 202 for this PUT
    return await lro.run(ctx, lambda: (200, _view(ctx, ctx.services.accounts.create_or_update(rid, body)[0])))


async def patch_account(ctx: ArmContext) -> Response:
    body, rid = await ctx.json(), _rid(ctx)
    account = await ctx.call(ctx.services.accounts.update, rid, body)
    return JSONResponse(_view(ctx, account))


async def get_account(ctx: ArmContext) -> Response:
    account = await ctx.call(ctx.services.accounts.get, _rid(ctx))
    return JSONResponse(_view(ctx, account))


async def delete_account(ctx: ArmContext) -> Response:
    rid = _rid(ctx)
    return await lro.run(ctx, lambda: ((200 if ctx.services.accounts.delete(rid) else 204), None))


async def list_accounts(ctx: ArmContext) -> Response:
    found = await ctx.call(ctx.services.accounts.list, ctx.params["subscription"], ctx.params.get("resourceGroup"))
    return JSONResponse({"value": [_view(ctx, a) for a in found]})


async def list_keys(ctx: ArmContext) -> Response:
    return JSONResponse(await ctx.call(ctx.services.accounts.list_keys, _rid(ctx)))


async def regenerate_key(ctx: ArmContext) -> Response:
    body, rid = await ctx.json(), _rid(ctx)
    return JSONResponse(await ctx.call(ctx.services.accounts.regenerate_key, rid, body))


async def set_quotas(ctx: ArmContext) -> Response:
    """Batchyard's own action: the operator sets the account's quotas (`batchyard quota set`)."""
    body, rid = await ctx.json(), _rid(ctx)
    account = await ctx.call(ctx.services.accounts.set_quotas, rid, body)
    return JSONResponse(_view(ctx, account))


def register(router: ArmRouter) -> None:
    add = router.add
    add("PUT", ACCOUNT, put_account, NS)
    add("PATCH", ACCOUNT, patch_account, NS)
    add("GET", ACCOUNT, get_account, NS)
    add("DELETE", ACCOUNT, delete_account, NS)
    add("GET", RG + "/batchAccounts", list_accounts, NS)
    add("GET", SUB + PROVIDER + "/batchAccounts", list_accounts, NS)
    add("POST", ACCOUNT + "/listKeys", list_keys, NS)
    add("POST", ACCOUNT + "/regenerateKeys", regenerate_key, NS)
    add("POST", ACCOUNT + "/" + QUOTAS_ACTION, set_quotas, NS)
