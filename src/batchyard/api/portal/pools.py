"""Batch account, pools, the Add form, the pool page (with its live state for the heatmap
and the chart), Resize and Stop resize, and nodes: each a Batch request made on the
principal's behalf (access.py), answered by the pool service."""

from __future__ import annotations

from starlette.responses import Response

from ...services.arm_ids import parse
from ...services.batch.vm_sizes import all_sizes
from ...services.errors import ServiceError
from . import access, galleries
from .pool_form import IMAGE_TYPES, field_errors, pool_body, resize_body
from .viewers import file_page, files_and_output
from .web import PortalContext, json_response, page, redirect


def image_of(body: dict, exact_version: str | None = None) -> dict:
    """What the pool page says of the pool's image: the Operating System line and the
    custom image it names (ARM id and name). A gallery definition stands for its latest
    version; the pool records which one its nodes got (Azure's read-only exactVersion).
    Operating System reads "Custom VM Image" for any image named by id: Azure's guides count
    a Shared Image as a custom image ("Create a pool from a Shared Image or Custom Image using
    the Azure portal"), and a custom-image pool's Operating System is "Custom VM Image"."""
    reference = (body.get("virtualMachineConfiguration") or {}).get("imageReference") or {}
    image_id = reference.get("virtualMachineImageId")
    if image_id:
        names = [name for _, name in parse(image_id).segments]  # a pool's id is one the service took
        if len(names) == 1:
            return {"os": "Custom VM Image", "images": [{"id": image_id, "name": names[0], "kind": "Managed image"}]}
        version = names[2] if len(names) > 2 else f"latest ({exact_version or 'none yet'})"
        return {"os": "Custom VM Image", "images": [{"id": image_id, "name": "/".join(names[:2]),
                                                      "kind": "Shared Image", "version": version}]}
    label = " ".join(str(reference.get(k, "")) for k in ("publisher", "offer", "sku")).strip()
    return {"os": label or "(none)", "images": []}


def pool_summary(pool) -> dict:
    body = pool.body
    return {"id": pool.name, "state": body.get("state"), "allocationState": body.get("allocationState"),
            "vmSize": body.get("vmSize"),
            "currentDedicatedNodes": body.get("currentDedicatedNodes", 0),
            "targetDedicatedNodes": body.get("targetDedicatedNodes", 0),
            "currentLowPriorityNodes": body.get("currentLowPriorityNodes", 0),
            "targetLowPriorityNodes": body.get("targetLowPriorityNodes", 0),
            "taskSlotsPerNode": body.get("taskSlotsPerNode", 1),
            "resizeErrors": [{"code": e.get("code"), "message": e.get("message")}
                             for e in body.get("resizeErrors") or []],
            "os": image_of(body)["os"]}


# account and pools -----------------------------------------------------------------------------

@page
async def accounts(ctx: PortalContext) -> Response:
    def visible():
        return [a for a in ctx.services.accounts.all() if access.may(ctx.services, ctx.caller, "GET", a.id)]
    return ctx.render("accounts.html", accounts=await ctx.call(visible))


@page
async def account(ctx: PortalContext) -> Response:
    def load():
        found = access.arm_account(ctx.services, ctx.caller, ctx.params["account"], "GET")
        return found, ctx.services.accounts.quotas(found)
    found, quotas = await ctx.call(load)
    return ctx.render("account.html", account=found, quotas=quotas,
                      endpoint=ctx.services.settings.account_endpoint(found.name, found.body.get("location", "")))


@page
async def pools(ctx: PortalContext) -> Response:
    def load():
        found = access.page_account(ctx, "GET", "pools")
        return found, [pool_summary(p) for p in ctx.services.pools.list(found)]
    found, listed = await ctx.call(load)
    return ctx.render("pools.html", account=found, pools=listed)


def _form_choices(ctx: PortalContext, account) -> dict:
    """Managed images by name in the account's subscription and region (as the Azure
    portal offers them), the gallery image definitions and versions there, the supported
    images' Publisher/Offer/Sku, and the VM sizes."""
    location = account.body.get("location", "").lower()
    images_path = f"/subscriptions/{account.subscription}/providers/Microsoft.Compute/images"
    images = []
    if access.may(ctx.services, ctx.caller, "GET", images_path):
        images = sorted((i for i in ctx.services.images.list(account.subscription, None)
                         if i.body.get("location", "").lower() == location), key=lambda i: i.name.lower())
    return {"images": images, "gallery_images": galleries.readable(ctx.services, ctx.caller, account.subscription),
            "skus": ctx.services.pools.supported_images(), "sizes": [s.name for s in all_sizes()],
            "image_types": IMAGE_TYPES}


@page
async def add_form(ctx: PortalContext) -> Response:
    def load():
        found = access.page_account(ctx, "POST", "pools")
        return found, _form_choices(ctx, found)
    found, choices = await ctx.call(load)
    values = {"image_type": "marketplace", "vm_size": "standard_d2s_v3", "target_dedicated": "1",
              "target_low_priority": "0", "start_task_wait": "on"}
    return ctx.render("pool_add.html", account=found, values=values, errors={}, **choices)


@page
async def add(ctx: PortalContext) -> Response:
    def create():
        found = access.page_account(ctx, "POST", "pools")
        choices = _form_choices(ctx, found)
        try:
            pool = ctx.services.pools.create(found, pool_body(ctx.form, choices["skus"]), ctx.caller)
        except ServiceError as exc:
            return found, choices, None, exc
        return found, choices, pool, None
    found, choices, pool, error = await ctx.call(create)
    if error is not None:
        return ctx.render("pool_add.html", 400, account=found, values=ctx.form, errors=field_errors(error),
                          **choices)
    return redirect(f"/accounts/{found.name}/pools/{pool.name}")


@page
async def pool(ctx: PortalContext) -> Response:
    def load():
        found = access.page_account(ctx, "GET", "pools", ctx.params["pool"])
        return found, ctx.services.pools.get(found, ctx.params["pool"])
    found, got = await ctx.call(load)
    image = image_of(got.body, got.internal.get("exact_version"))
    return ctx.render("pool.html", account=found, pool=pool_summary(got), image=image, body=got.body)


@page
async def pool_live(ctx: PortalContext) -> Response:
    def load():
        found = access.page_account(ctx, "GET", "pools", ctx.params["pool"], "nodes")
        got = ctx.services.pools.get(found, ctx.params["pool"])
        return {"pool": pool_summary(got),
                # [id, state, busy task slots, dedicated 1/0]: compact, for 2,500 nodes a poll
                "nodes": [[i, state, busy, int(dedicated)]
                          for i, state, busy, dedicated in ctx.services.pools.node_states(found, got.name)]}
    return json_response(await ctx.call(load))


@page
async def resize(ctx: PortalContext) -> Response:
    body = resize_body(ctx.form)

    def act():
        found = access.page_account(ctx, "POST", "pools", ctx.params["pool"], "resize")
        ctx.services.pools.resize(found, ctx.params["pool"], body, ctx.caller)
        return found
    found = await ctx.call(act)
    return redirect(f"/accounts/{found.name}/pools/{ctx.params['pool']}")


@page
async def stop_resize(ctx: PortalContext) -> Response:
    def act():
        found = access.page_account(ctx, "POST", "pools", ctx.params["pool"], "stopresize")
        ctx.services.pools.stop_resize(found, ctx.params["pool"])
        return found
    found = await ctx.call(act)
    return redirect(f"/accounts/{found.name}/pools/{ctx.params['pool']}")


# nodes -------------------------------------------------------------------------------------------

@page
async def node(ctx: PortalContext) -> Response:
    pool_id, node_id = ctx.params["pool"], ctx.params["node"]

    def load():
        found = access.page_account(ctx, "GET", "pools", pool_id, "nodes", node_id)
        got = ctx.services.pools.get_node(found, pool_id, node_id)
        listed, output = files_and_output(lambda: ctx.services.pools.node_directory(found, pool_id, node_id),
                                          "startup/")
        return found, got, listed, output
    found, got, listed, output = await ctx.call(load)
    return ctx.render("node.html", account=found, pool_id=pool_id, node=got.body, files=listed, output=output)


@page
async def node_file(ctx: PortalContext) -> Response:
    pool_id, node_id = ctx.params["pool"], ctx.params["node"]
    return await file_page(ctx, ("pools", pool_id, "nodes", node_id),
                           lambda account: ctx.services.pools.node_directory(account, pool_id, node_id))
