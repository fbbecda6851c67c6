"""Images (managed, and Azure Compute Gallery definitions and versions), snapshots and VMs
of the subscriptions the principal may read (ARM's list requests, checked as ARM checks
them), with what uses what: the pools that name an image,
the images made from a snapshot, the VMs made from an image."""

from __future__ import annotations

from starlette.responses import Response

from ...services.errors import ServiceError
from . import access, galleries
from .web import PortalContext, page


def _subscriptions(ctx: PortalContext, kind: str) -> list[str]:
    """Subscriptions whose `kind` (e.g. images) ARM would list for the caller."""
    found = []
    for sub in ctx.services.groups.subscriptions():
        path = f"/subscriptions/{sub['subscriptionId']}/providers/Microsoft.Compute/{kind}"
        if access.may(ctx.services, ctx.caller, "GET", path):
            found.append(sub["subscriptionId"])
    return found


def _pools_by_image(ctx: PortalContext) -> dict[str, list[tuple[str, str, str | None]]]:
    """image id (lower-cased) -> [(account, pool, the gallery version its nodes got)] over the
    accounts whose pools the caller may read."""
    used: dict[str, list[tuple[str, str, str | None]]] = {}
    for account in ctx.services.accounts.all():
        try:
            access.batch_account(ctx.services, ctx.caller, account.name, "GET", "pools")
        except ServiceError:  # an account the caller may not read is left out
            continue
        for pool in ctx.services.pools.list(account):
            reference = (pool.body.get("virtualMachineConfiguration") or {}).get("imageReference") or {}
            image_id = reference.get("virtualMachineImageId")
            if image_id:
                used.setdefault(image_id.lower(), []).append((account.name, pool.name,
                                                              pool.internal.get("exact_version")))
    return used


def _gallery_rows(found: list[galleries.GalleryImage], used: dict) -> list[dict]:
    """A row per definition (the pools naming it: its latest) and per version (the pools
    naming it, and those naming its definition whose nodes got this version)."""
    rows = []
    for image in found:
        by_definition = used.get(image.definition.id.lower(), [])
        rows.append({"image": image, "version": None, "pools": [(a, p) for a, p, _ in by_definition]})
        for version in reversed(image.versions):
            named = [(a, p) for a, p, _ in used.get(version.id.lower(), [])]
            latest = [(a, p) for a, p, exact in by_definition if exact == version.name]
            rows.append({"image": image, "version": version, "pools": named + latest})
    return rows


def _source_ids(image_body: dict) -> list[str]:
    storage = (image_body.get("properties") or {}).get("storageProfile") or {}
    disks = [storage.get("osDisk") or {}, *(storage.get("dataDisks") or [])]
    return [d[k]["id"] for d in disks for k in ("snapshot", "managedDisk") if isinstance(d.get(k), dict)
            and d[k].get("id")]


@page
async def images(ctx: PortalContext) -> Response:
    def load():
        listed = [i for s in _subscriptions(ctx, "images") for i in ctx.services.images.list(s, None)]
        shared = [g for s in ctx.services.groups.subscriptions()
                  for g in galleries.readable(ctx.services, ctx.caller, s["subscriptionId"])]
        return listed, shared, _pools_by_image(ctx)
    listed, shared, used = await ctx.call(load)
    rows = [{"image": i, "sources": _source_ids(i.body), "pools": [(a, p) for a, p, _ in used.get(i.id.lower(), [])]}
            for i in listed]
    return ctx.render("images.html", rows=rows, gallery_rows=_gallery_rows(shared, used))


@page
async def snapshots(ctx: PortalContext) -> Response:
    def load():
        listed = [s for sub in _subscriptions(ctx, "snapshots") for s in ctx.services.disks.list_snapshots(sub, None)]
        made = [i for sub in _subscriptions(ctx, "images") for i in ctx.services.images.list(sub, None)]
        return listed, made
    listed, made = await ctx.call(load)
    rows = [{"snapshot": s, "images": [i for i in made if s.id.lower() in (x.lower() for x in _source_ids(i.body))]}
            for s in listed]
    return ctx.render("snapshots.html", rows=rows)


@page
async def vms(ctx: PortalContext) -> Response:
    def load():
        return [v for sub in _subscriptions(ctx, "virtualMachines") for v in ctx.services.vms.list(sub, None)]
    listed = await ctx.call(load)
    rows = []
    for vm in listed:
        storage = (vm.get("properties") or {}).get("storageProfile") or {}
        reference = storage.get("imageReference") or {}
        rows.append({"vm": vm, "image": reference.get("id") or " ".join(
            str(reference.get(k, "")) for k in ("publisher", "offer", "sku")).strip()})
    return ctx.render("vms.html", rows=rows)
