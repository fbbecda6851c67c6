"""Microsoft.Compute: disks, snapshots, images, virtual machines, extensions and the
virtual machine image catalog. Each handler parses, calls one service method, renders."""

from __future__ import annotations

import re

from starlette.responses import JSONResponse, Response

from ...services import locations
from ...services.arm_ids import ResourceId
from ...services.capacity import host_room
from ...services.compute import sizes
from ...services.compute.catalog import BaseImage
from ...services.errors import InvalidInput
from . import lro
from .router import ArmContext, ArmRouter

SUB = "/subscriptions/{subscription}"
PROVIDER = "/providers/Microsoft.Compute"
RG = SUB + "/resourceGroups/{resourceGroup}" + PROVIDER
VM = RG + "/virtualMachines/{virtualMachines}"
LOCATION = SUB + PROVIDER + "/locations/{location}"


def _listing(items: list[dict]) -> JSONResponse:
    return JSONResponse({"value": items})


def _ok(body: dict, created: bool) -> lro.Outcome:
    return (201 if created else 200), body


# get, delete and list are the same for disks, snapshots and images: one of each, by kind

def _getter(kind: str, lookup):
    async def handler(ctx: ArmContext) -> Response:
        resource = await ctx.call(lookup(ctx.services), ctx.rid("Microsoft.Compute", kind))
        return JSONResponse(resource.body)
    return handler


def _deleter(kind: str, delete):
    async def handler(ctx: ArmContext) -> Response:
        found = await ctx.call(delete(ctx.services), ctx.rid("Microsoft.Compute", kind))
        return Response(status_code=200 if found else 204)
    return handler


def _lister(listing):
    async def handler(ctx: ArmContext) -> Response:
        found = await ctx.call(listing(ctx.services), ctx.params["subscription"], ctx.params.get("resourceGroup"))
        return _listing([r.body for r in found])
    return handler


# disks and snapshots --------------------------------------------------------------------

async def put_disk(ctx: ArmContext) -> Response:
    body, rid = await ctx.json(), ctx.rid("Microsoft.Compute", "disks")
    # disks and snapshots answer 200 on create: the SDK refuses 201 for them
    return await lro.run(ctx, lambda: (200, ctx.services.disks.create_or_update(rid, body)[0].body))


async def patch_disk(ctx: ArmContext) -> Response:
    body, rid = await ctx.json(), ctx.rid("Microsoft.Compute", "disks")
    disk = await ctx.call(ctx.services.disks.update, rid, body)
    return JSONResponse(disk.body)


async def grant_access(ctx: ArmContext) -> Response:
    body, rid = await ctx.json(), ctx.rid("Microsoft.Compute", "disks")
    access = await ctx.call(ctx.services.disks.grant_access, rid, body, ctx.base_url)
    return JSONResponse(access)


async def revoke_access(ctx: ArmContext) -> Response:
    rid = ctx.rid("Microsoft.Compute", "disks")

    def work():
        ctx.services.disks.revoke_access(rid)
        return 200, None

    return await lro.run(ctx, work)


async def put_snapshot(ctx: ArmContext) -> Response:
    body, rid = await ctx.json(), ctx.rid("Microsoft.Compute", "snapshots")
    return await lro.run(ctx, lambda: (200, ctx.services.disks.create_snapshot(rid, body)[0].body))


# images ---------------------------------------------------------------------------------

async def put_image(ctx: ArmContext) -> Response:
    body, rid = await ctx.json(), ctx.rid("Microsoft.Compute", "images")

    def work():
        image, created = ctx.services.images.create_or_update(rid, body)
        return _ok(image.body, created)

    return await lro.run(ctx, work)


# virtual machines -----------------------------------------------------------------------

def _vm_rid(ctx: ArmContext) -> ResourceId:
    return ctx.rid("Microsoft.Compute", "virtualMachines")


async def put_vm(ctx: ArmContext) -> Response:
    body, rid = await ctx.json(), _vm_rid(ctx)
    return await lro.run(ctx, lambda: _ok(*ctx.services.vms.create_or_update(rid, body)))


async def patch_vm(ctx: ArmContext) -> Response:
    body, rid = await ctx.json(), _vm_rid(ctx)
    return JSONResponse(await ctx.call(ctx.services.vms.update, rid, body))


async def get_vm(ctx: ArmContext) -> Response:
    return JSONResponse(await ctx.call(ctx.services.vms.get, _vm_rid(ctx), ctx.query.get("$expand")))


async def vm_instance_view(ctx: ArmContext) -> Response:
    return JSONResponse(await ctx.call(ctx.services.vms.instance_view, _vm_rid(ctx)))


async def delete_vm(ctx: ArmContext) -> Response:
    rid = _vm_rid(ctx)

    def work():
        return (200 if ctx.services.vms.delete(rid) else 204), None

    return await lro.run(ctx, work)


async def list_vms(ctx: ArmContext) -> Response:
    return _listing(await ctx.call(ctx.services.vms.list, ctx.params["subscription"], ctx.params.get("resourceGroup")))


def _power_action(action):
    async def handler(ctx: ArmContext) -> Response:
        rid = _vm_rid(ctx)

        def work():
            action(ctx.services.vms, rid)
            return 200, None

        return await lro.run(ctx, work)

    return handler


async def generalize_vm(ctx: ArmContext) -> Response:
    await ctx.call(ctx.services.vms.generalize, _vm_rid(ctx))
    return JSONResponse({})


async def run_command(ctx: ArmContext) -> Response:
    body, rid = await ctx.json(), _vm_rid(ctx)
    return await lro.run(ctx, lambda: (200, ctx.services.vms.run_command(rid, body)))


# extensions -----------------------------------------------------------------------------

def _ext_rid(ctx: ArmContext) -> ResourceId:
    return ctx.rid("Microsoft.Compute", "virtualMachines", "extensions")


async def put_extension(ctx: ArmContext) -> Response:
    body, rid = await ctx.json(), _ext_rid(ctx)
    extension, created = await ctx.call(ctx.services.vms.create_extension, rid, body)
    status = 201 if created else 200
    if extension["properties"]["provisioningState"] == "Failed":
        error = await ctx.call(ctx.services.vms.extension_failure, rid)
        return await lro.failed(ctx, status, extension, error)
    return JSONResponse(extension, status_code=status)


async def get_extension(ctx: ArmContext) -> Response:
    body = await ctx.call(ctx.services.vms.get_extension, _ext_rid(ctx))
    return JSONResponse(body)


async def delete_extension(ctx: ArmContext) -> Response:
    found = await ctx.call(ctx.services.vms.delete_extension, _ext_rid(ctx))
    return Response(status_code=200 if found else 204)


async def list_extensions(ctx: ArmContext) -> Response:
    return _listing(await ctx.call(ctx.services.vms.list_extensions, _vm_rid(ctx)))


# the virtual machine image catalog ------------------------------------------------------

def _catalog_item(ctx: ArmContext, name: str, path: str) -> dict:
    location = ctx.params["location"]
    return {"location": location, "name": name,
            "id": f"/Subscriptions/{ctx.params['subscription']}/Providers/Microsoft.Compute/Locations/{location}{path}"}


async def list_publishers(ctx: ArmContext) -> Response:
    return JSONResponse([_catalog_item(ctx, p, f"/Publishers/{p}") for p in ctx.services.catalog.publishers()])


async def list_offers(ctx: ArmContext) -> Response:
    p = ctx.params["publisher"]
    return JSONResponse([_catalog_item(ctx, o, f"/Publishers/{p}/ArtifactTypes/VMImage/Offers/{o}")
                         for o in ctx.services.catalog.offers(p)])


async def list_skus(ctx: ArmContext) -> Response:
    p, o = ctx.params["publisher"], ctx.params["offer"]
    return JSONResponse([_catalog_item(ctx, s, f"/Publishers/{p}/ArtifactTypes/VMImage/Offers/{o}/Skus/{s}")
                         for s in ctx.services.catalog.skus(p, o)])


def _version_path(image: BaseImage) -> str:
    return (f"/Publishers/{image.publisher}/ArtifactTypes/VMImage/Offers/{image.offer}/Skus/{image.sku}"
            f"/Versions/{image.version}")


async def list_versions(ctx: ArmContext) -> Response:
    images = ctx.services.catalog.versions(ctx.params["publisher"], ctx.params["offer"], ctx.params["sku"])
    if ctx.query.get("$orderby", "").lower().endswith("desc"):
        images = list(reversed(images))
    top = ctx.query.get("$top")
    if top and top.isascii() and top.isdigit() and len(top) <= 18:  # ("²".isdigit(), and int() refuses 4,300 digits)
        images = images[: int(top)]
    return JSONResponse([_catalog_item(ctx, i.version, _version_path(i)) for i in images])


async def get_version(ctx: ArmContext) -> Response:
    image = await ctx.call(ctx.services.catalog.find, ctx.params["publisher"], ctx.params["offer"],
                           ctx.params["sku"], ctx.params["version"])
    body = _catalog_item(ctx, image.version, _version_path(image))
    body["properties"] = {"osDiskImage": {"operatingSystem": image.os_type, "sizeInGb": 30},
                          "dataDiskImages": [], "hyperVGeneration": image.hyper_v_generation, "architecture": "x64",
                          "automaticOSUpgradeProperties": {"automaticOSUpgradeSupported": False},
                          "disallowed": {"vmDiskType": "Unmanaged"}}
    return JSONResponse(body)


# sizes, SKUs and usages ---------------------------------------------------------------

async def list_vm_sizes(ctx: ArmContext) -> Response:
    return _listing(sizes.vm_sizes())


async def list_resource_skus(ctx: ArmContext) -> Response:
    """`$filter=location eq 'westus'` narrows to one region, the only filter Compute takes."""
    return _listing(sizes.resource_skus(_sku_locations(ctx.query.get("$filter"))))


def _sku_locations(odata_filter: str | None) -> list[str]:
    if not odata_filter:
        return locations.names()
    match = re.fullmatch(r"\s*location\s+eq\s+'([^']*)'\s*", odata_filter, re.IGNORECASE)
    if match is None:
        raise InvalidInput("InvalidParameter", f"The filter '{odata_filter}' is not supported. Only "
                           "\"location eq '<location>'\" is supported.", target="$filter")
    return [match[1].replace(" ", "").lower()]


async def list_usages(ctx: ArmContext) -> Response:
    vms = await ctx.call(ctx.services.vms.list, ctx.params["subscription"], None)
    room = host_room(ctx.services.settings, ctx.services.provider)
    return _listing(sizes.usages(vms, ctx.params["location"], room.cores))


def register(router: ArmRouter) -> None:
    add = router.add
    kinds = (
        ("disks", put_disk, lambda s: s.disks.get, lambda s: s.disks.delete, lambda s: s.disks.list),
        ("snapshots", put_snapshot, lambda s: s.disks.get, lambda s: s.disks.delete_snapshot,
         lambda s: s.disks.list_snapshots),
        ("images", put_image, lambda s: s.images.get, lambda s: s.images.delete, lambda s: s.images.list),
    )
    for kind, put, get, delete, listing in kinds:
        add("PUT", RG + f"/{kind}/{{{kind}}}", put)
        add("GET", RG + f"/{kind}/{{{kind}}}", _getter(kind, get))
        add("DELETE", RG + f"/{kind}/{{{kind}}}", _deleter(kind, delete))
        add("GET", RG + f"/{kind}", _lister(listing))
        add("GET", SUB + PROVIDER + f"/{kind}", _lister(listing))
    add("PATCH", RG + "/disks/{disks}", patch_disk)
    add("PATCH", RG + "/snapshots/{snapshots}", put_snapshot)
    add("PATCH", RG + "/images/{images}", put_image)
    add("POST", RG + "/disks/{disks}/beginGetAccess", grant_access)
    add("POST", RG + "/disks/{disks}/endGetAccess", revoke_access)

    add("PUT", VM, put_vm)
    add("PATCH", VM, patch_vm)
    add("GET", VM, get_vm)
    add("DELETE", VM, delete_vm)
    add("GET", RG + "/virtualMachines", list_vms)
    add("GET", SUB + PROVIDER + "/virtualMachines", list_vms)
    add("GET", VM + "/instanceView", vm_instance_view, view=True)
    add("POST", VM + "/start", _power_action(lambda vms, rid: vms.start(rid)))
    add("POST", VM + "/deallocate", _power_action(lambda vms, rid: vms.stop(rid, deallocate=True)))
    add("POST", VM + "/powerOff", _power_action(lambda vms, rid: vms.stop(rid, deallocate=False)))
    add("POST", VM + "/restart", _power_action(lambda vms, rid: vms.restart(rid)))
    add("POST", VM + "/generalize", generalize_vm)
    add("POST", VM + "/runCommand", run_command)
    add("PUT", VM + "/extensions/{extensions}", put_extension)
    add("PATCH", VM + "/extensions/{extensions}", put_extension)
    add("GET", VM + "/extensions/{extensions}", get_extension)
    add("DELETE", VM + "/extensions/{extensions}", delete_extension)
    add("GET", VM + "/extensions", list_extensions)

    add("GET", LOCATION + "/publishers", list_publishers)
    add("GET", LOCATION + "/publishers/{publisher}/artifacttypes/vmimage/offers", list_offers)
    add("GET", LOCATION + "/publishers/{publisher}/artifacttypes/vmimage/offers/{offer}/skus", list_skus)
    add("GET", LOCATION + "/publishers/{publisher}/artifacttypes/vmimage/offers/{offer}/skus/{sku}/versions",
        list_versions)
    add("GET", LOCATION + "/publishers/{publisher}/artifacttypes/vmimage/offers/{offer}/skus/{sku}/versions/{version}",
        get_version)

    add("GET", LOCATION + "/vmSizes", list_vm_sizes)
    add("GET", LOCATION + "/usages", list_usages)
    add("GET", SUB + PROVIDER + "/skus", list_resource_skus)
