"""Managed disks and snapshots.

A disk is layers (bottom first) plus its own writable layer in the runtime; a snapshot is
only layers: the disk's, plus its writable layer frozen at that instant. Nothing is
copied when a disk is made from a snapshot.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import tarfile
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from ...private_files import private_dir, private_opener
from ...runtime.layers import LayerStore
from ...runtime.provider import DiskSpec, MachineProvider
from ...store.resources import Resource, ResourceStore
from ..arm_ids import ResourceId, check_compute_name, parse
from ..arm_resources import (check_tags, get_or_404, int_field, new_resource, normalize_location, now_iso,
                             optional_object, require_object, retag)
from ..errors import Conflict, InvalidInput, NotFound, RangeNotSatisfiable, Unsupported
from ..storage import Storage
from .catalog import Catalog

if TYPE_CHECKING:  # image_sources.py imports this module (through images.py)
    from .image_sources import ImageSources

log = logging.getLogger("batchyard.compute")

DISK_TYPE = "Microsoft.Compute/disks"
SNAPSHOT_TYPE = "Microsoft.Compute/snapshots"
DISK_SKUS = {"Standard_LRS": "Standard", "Premium_LRS": "Premium", "StandardSSD_LRS": "Standard",
             "UltraSSD_LRS": "Ultra", "Premium_ZRS": "Premium", "StandardSSD_ZRS": "Standard", "PremiumV2_LRS": "Premium"}
SNAPSHOT_SKUS = {"Standard_LRS": "Standard", "Premium_LRS": "Premium", "Standard_ZRS": "Standard"}
MAX_DISK_GB = 32767
PAGE_BYTES = 512  # a page blob's page, and an upload's
MAX_PAGE_WRITE = 4 << 20  # Azure's largest Put Page


def _sku(body: dict, allowed: dict[str, str], default: str) -> dict:
    name = (optional_object(body.get("sku"), "sku").get("name") or default)
    match = next((k for k in allowed if k.lower() == str(name).lower()), None)
    if match is None:
        raise InvalidInput("InvalidParameter", f"The value '{name}' of parameter 'sku.name' is not allowed. Allowed "
                           f"values are {', '.join(allowed)}.", target="sku.name")
    return {"name": match, "tier": allowed[match]}


def _os_type(value, field: str) -> str | None:
    if value is None:
        return None
    for known in ("Linux", "Windows"):
        if isinstance(value, str) and value.lower() == known.lower():
            return known
    raise InvalidInput("InvalidParameter", f"The value '{value}' of parameter '{field}' is not allowed. Allowed values "
                       "are Windows, Linux.", target=field)


class Disks:
    def __init__(self, store: ResourceStore, provider: MachineProvider, layers: LayerStore, storage: Storage,
                 catalog: Catalog, upload_dir: Path, image_sources: ImageSources):
        self.store = store
        self.provider = provider
        self.layers = layers
        self.storage = storage
        self.catalog = catalog
        self.image_sources = image_sources  # the one reader of custom image ids
        self.upload_dir = upload_dir
        private_dir(upload_dir)

    # reading ----------------------------------------------------------------------------

    def get(self, rid: ResourceId) -> Resource:
        return get_or_404(self.store, rid)

    def list(self, subscription: str, resource_group: str | None) -> list[Resource]:
        return self.store.list(type=DISK_TYPE, subscription=subscription, resource_group=resource_group)

    def list_snapshots(self, subscription: str, resource_group: str | None) -> list[Resource]:
        return self.store.list(type=SNAPSHOT_TYPE, subscription=subscription, resource_group=resource_group)

    def spec(self, disk: Resource) -> DiskSpec:
        return DiskSpec(disk.internal["disk_key"], list(disk.internal.get("layers", [])))

    # disks ------------------------------------------------------------------------------

    def create_or_update(self, rid: ResourceId, body: dict) -> tuple[Resource, bool]:
        disk, created = self._validated(rid, body)
        return (self._provision(disk) if created else disk), created

    def _validated(self, rid: ResourceId, body: dict) -> tuple[Resource, bool]:
        """A new disk not yet provisioned, or the updated existing one."""
        check_compute_name(rid.name, "disk")
        body = require_object(body, "body")
        props = optional_object(body.get("properties"), "properties")
        existing = self.store.get(str(rid))
        if existing is not None:
            return self._update(existing, body, props), False
        location = normalize_location(body.get("location"))
        creation = require_object(props.get("creationData"), "properties.creationData")
        option = str(creation.get("createOption") or "")
        size_gb = props.get("diskSizeGB")
        layers, os_type, extra_internal = self._initial_content(option, creation, rid, location)
        if size_gb is None and option == "Empty":
            raise InvalidInput("InvalidParameter", "Required parameter 'diskSizeGB' is missing (null).",
                               target="diskSizeGB")
        if size_gb is not None:
            size_gb = int_field(size_gb, "diskSizeGB", 1, MAX_DISK_GB)
        size_gb = size_gb or extra_internal.pop("size_gb", None) or 30
        properties = {
            "osType": _os_type(props.get("osType"), "osType") or os_type,
            "hyperVGeneration": props.get("hyperVGeneration") or "V2",
            "creationData": creation,
            "diskSizeGB": size_gb,
            "diskSizeBytes": size_gb * (1 << 30),
            "uniqueId": str(uuid.uuid4()),
            "encryption": {"type": "EncryptionAtRestWithPlatformKey"},
            "networkAccessPolicy": "AllowAll",
            "publicNetworkAccess": "Enabled",
            "timeCreated": now_iso(),
            "provisioningState": "Succeeded",
            "diskState": "ReadyToUpload" if option == "Upload" else "Unattached",
        }
        if properties["osType"] is None:
            del properties["osType"]
        disk = new_resource(rid, location, properties, check_tags(body.get("tags")),
                            extra={"sku": _sku(body, DISK_SKUS, "Standard_LRS")},
                            internal={"disk_key": uuid.uuid4().hex, "layers": layers, **extra_internal})
        if body.get("zones"):
            disk.body["zones"] = body["zones"]
        return disk, True

    def _provision(self, disk: Resource) -> Resource:
        with self.storage.lock:
            self.provider.create_disk(self.spec(disk))
            return self.store.put(disk)

    def _initial_content(self, option: str, creation: dict, rid: ResourceId, location: str):
        """(layers, osType, extra internal) for a new disk."""
        if option == "Empty":
            return [], None, {}
        if option == "Copy":
            source = self._source(creation.get("sourceResourceId"), rid, location, "creationData.sourceResourceId")
            layers = self.content_of(source)
            return layers, source.properties.get("osType"), {
                "size_gb": source.properties.get("diskSizeGB"),
                "extensions_installed": source.internal.get("extensions_installed", False),
                "source_snapshots": self.lineage(source),
            }
        if option == "FromImage":
            ref = optional_object(creation.get("imageReference"), "creationData.imageReference")
            gallery = optional_object(creation.get("galleryImageReference"), "creationData.galleryImageReference")
            if gallery.get("id"):  # a gallery image version (or definition: its latest) in the disk's region
                return self._custom_image_disk(gallery["id"], location, "creationData.galleryImageReference.id")
            image = self._platform_image(ref.get("id"))
            if image.image_id:  # a marketplace alias of a managed image: that image's OS disk
                return self._custom_image_disk(image.image_id, location, "creationData.imageReference.id",
                                               f" that {image.urn} stands for")
            return list(image.layers), image.os_type, {}
        if option == "Upload":
            size = creation.get("uploadSizeBytes")
            # int64 on the wire; Azure's largest upload is its largest disk plus a 512-byte VHD footer
            int_field(size, "creationData.uploadSizeBytes", 1, MAX_DISK_GB * 2**30 + 512)
            return [], None, {"size_gb": max(1, -(-size // (1 << 30)))}
        if option in ("Attach", "Import", "Restore", "CopyStart", "ImportSecure", "UploadPreparedSecure",
                      "CopyFromSanSnapshot"):
            raise Unsupported(
                "OperationNotAllowed",
                f"createOption '{option}' is not supported by this service. Use Empty, Copy, FromImage, or Upload "
                "(then grant write access and upload a root filesystem archive).",
                target="creationData.createOption",
            )
        raise InvalidInput("InvalidParameter", f"The value '{option}' of parameter 'creationData.createOption' is "
                           "not valid.", target="creationData.createOption")

    def _custom_image_disk(self, image_id: str, location: str, field: str, alias: str = "") -> tuple:
        image = self.image_sources.find(image_id, field, location)
        if image is None or location not in image.regions:
            raise NotFound("NotFound", f"The image '{image_id}'{alias} does not exist in '{location}'.", target=field)
        return list(image.os_layers), image.os_type, {"source_snapshots": image.internal.get("source_snapshots", [])}

    def _platform_image(self, image_id) -> "object":
        # /Subscriptions/{s}/Providers/Microsoft.Compute/Locations/{l}/Publishers/{p}/ArtifactTypes/VMImage/Offers/{o}/Skus/{k}/Versions/{v}
        parts = str(image_id or "").strip("/").split("/")
        lowered = [p.lower() for p in parts]
        try:
            p = parts[lowered.index("publishers") + 1]
            o = parts[lowered.index("offers") + 1]
            k = parts[lowered.index("skus") + 1]
            v = parts[lowered.index("versions") + 1]
        except (ValueError, IndexError):
            raise InvalidInput("InvalidParameter", f"The image id '{image_id}' is not a platform image id.",
                               target="creationData.imageReference.id")
        return self.catalog.find(p, o, k, v)

    def _source(self, source_id, rid: ResourceId, location: str, field: str) -> Resource:
        if not isinstance(source_id, str):
            raise InvalidInput("InvalidParameter", f"Required parameter '{field}' is missing (null).", target=field)
        source_rid = parse(source_id, field)
        if source_rid.type.lower() not in (DISK_TYPE.lower(), SNAPSHOT_TYPE.lower()):
            raise InvalidInput("InvalidParameter", f"'{source_id}' is not a disk or snapshot id.", target=field)
        if source_rid.subscription.lower() != rid.subscription.lower():
            raise InvalidInput("InvalidParameter", "The source must be in the same subscription.", target=field)
        source = self.store.get(str(source_rid))
        if source is None:
            kind = "Disk" if source_rid.type.lower() == DISK_TYPE.lower() else "Snapshot"
            raise NotFound("NotFound", f"Resource {source_id} not found. {kind} '{source_rid.name}' does not exist.",
                           target=field)
        if source.body["location"] != location:
            raise InvalidInput("InvalidParameter", f"The source '{source_id}' is in location "
                               f"'{source.body['location']}', not '{location}'.", target=field)
        return source

    def content_of(self, source: Resource) -> list[str]:
        """The layers of a disk (frozen now) or a snapshot. A disk in use is captured as it
        is at this instant, as Azure's crash-consistent copy does."""
        if source.type.lower() == SNAPSHOT_TYPE.lower():
            return list(source.internal["layers"])
        if source.properties.get("diskState") in ("ReadyToUpload", "ActiveUpload"):
            raise Conflict("OperationNotAllowed", f"Disk '{source.name}' is waiting for its upload to finish.")
        return self.provider.snapshot_disk(self.spec(source))

    @staticmethod
    def lineage(source: Resource) -> list[str]:
        """Snapshots this content came from (for limits shared by images of one snapshot)."""
        lineage = list(source.internal.get("source_snapshots", []))
        if source.type.lower() == SNAPSHOT_TYPE.lower():
            lineage.append(source.properties["uniqueId"])
        return lineage

    def _update(self, existing: Resource, body: dict, props: dict) -> Resource:
        if "location" in body and normalize_location(body["location"]) != existing.body["location"]:
            raise InvalidInput("InvalidParameter", "Changing property 'location' is not allowed.", target="location")
        creation = props.get("creationData")
        if creation is not None and require_object(creation, "properties.creationData").get("createOption") != \
                existing.properties["creationData"].get("createOption"):
            raise Conflict("PropertyChangeNotAllowed", "Changing property 'creationData.createOption' is not allowed.",
                           target="creationData.createOption")
        if "tags" in body:
            existing.body["tags"] = check_tags(body["tags"])
        if props.get("diskSizeGB") is not None:
            size = int_field(props["diskSizeGB"], "diskSizeGB", 1, MAX_DISK_GB)
            if size < existing.properties["diskSizeGB"]:
                raise InvalidInput("BadRequest", f"Disk size reduction is not supported. Current size is "
                                   f"{existing.properties['diskSizeGB']} GB, requested size is {size} GB.")
            existing.properties["diskSizeGB"] = size
            existing.properties["diskSizeBytes"] = size * (1 << 30)
        return self.store.put(existing)

    def update(self, rid: ResourceId, body: dict) -> Resource:
        existing = self.get(rid)
        body = require_object(body, "body")
        return self._update(existing, body, optional_object(body.get("properties"), "properties"))

    def delete(self, rid: ResourceId) -> bool:
        disk = self.store.get(str(rid))
        if disk is None:
            return False
        if disk.body.get("managedBy"):
            raise Conflict("OperationNotAllowed", f"Disk {rid.name} is attached to VM {disk.body['managedBy']}.")
        with self.storage.lock:
            self.store.delete(disk.id)
            self.provider.delete_disk(disk.internal["disk_key"])
        self.storage.reclaim()
        return True

    # attachment (called by the VM service) ---------------------------------------------

    def attach(self, disk: Resource, vm_id: str) -> None:
        disk.body["managedBy"] = vm_id
        disk.properties["diskState"] = "Attached"
        self.store.put(disk)

    def detach(self, disk: Resource) -> None:
        disk.body.pop("managedBy", None)
        disk.properties["diskState"] = "Unattached"
        self.store.put(disk)

    def release_orphans(self, vm_ids: set[str]) -> int:
        """After a crash between attaching a new VM's disks and recording the VM: disks that
        name a VM which does not exist are detached, so they can be used or deleted."""
        orphans = [d for d in self.store.list(type=DISK_TYPE)
                   if d.body.get("managedBy") and d.body["managedBy"].lower() not in vm_ids]
        for disk in orphans:
            log.warning("disk %s was attached to %s, which does not exist: detached", disk.id, disk.body["managedBy"])
            self.detach(disk)
        return len(orphans)

    def new_for_vm(self, rid: ResourceId, location: str, layers: list[str], size_gb: int, os_type: str | None,
                   creation: dict, sku: str | None, lineage: list[str]) -> Resource:
        body = {"location": location, "sku": {"name": sku or "Premium_LRS"},
                "properties": {"creationData": {"createOption": "Empty"}, "diskSizeGB": size_gb}}
        disk, _ = self._validated(rid, body)
        disk.properties["creationData"] = creation
        if os_type:
            disk.properties["osType"] = os_type
        disk.internal["layers"] = layers
        disk.internal["source_snapshots"] = lineage
        return self._provision(disk)

    # upload: the stand-in for "a generalized on-premises VHD uploaded to the cloud" -----

    def grant_access(self, rid: ResourceId, body: dict, base_url: str) -> dict:
        disk = self.get(rid)
        body = require_object(body, "body")
        access = str(body.get("access") or "")
        int_field(body.get("durationInSeconds"), "durationInSeconds", 1)
        if access.lower() != "write":
            raise Unsupported("OperationNotAllowed", "Only write access (to upload a root filesystem archive) is "
                              "supported; reading a disk's content back is not.", target="access")
        if disk.properties.get("diskState") not in ("ReadyToUpload", "ActiveUpload"):
            raise Conflict("OperationNotAllowed", f"Disk '{rid.name}' is not in ReadyToUpload state; create it with "
                           "createOption Upload to upload content.")
        token = secrets.token_urlsafe(32)
        disk.internal["upload_token_sha256"] = hashlib.sha256(token.encode()).hexdigest()
        disk.properties["diskState"] = "ActiveUpload"
        self.store.put(disk)
        return {"accessSAS": f"{base_url}/_upload/{disk.internal['disk_key']}?sig={token}"}

    def _upload_path(self, disk_key: str) -> Path:
        """An upload's bytes wait here until access is revoked."""
        return self.upload_dir / f"{disk_key}.upload"

    def remove_unrecorded_uploads(self, disk_keys: set[str]) -> None:
        """Deletes the uploads of disks a crash left unrecorded."""
        for upload in self.upload_dir.glob("*.upload"):
            if upload.stem not in disk_keys:
                upload.unlink(missing_ok=True)

    def _upload_target(self, disk_key: str, token: str) -> tuple[Resource, Path]:
        for disk in self.store.list(type=DISK_TYPE):
            if disk.internal.get("disk_key") == disk_key:
                expected = disk.internal.get("upload_token_sha256") or ""
                if hmac.compare_digest(expected, hashlib.sha256(token.encode()).hexdigest()) and expected:
                    return disk, self._upload_path(disk_key)
                break
        raise NotFound("AuthenticationFailed", "The upload address is not valid or its access was revoked.")

    def receive_upload(self, disk_key: str, token: str, data: bytes, offset: int, truncate: bool) -> None:
        """Writes uploaded bytes at `offset`, within the upload's declared size (a blob of
        uploadSizeBytes, as Azure's); `truncate` starts the file afresh (a whole-blob PUT)."""
        disk, path = self._upload_target(disk_key, token)
        size = disk.properties["creationData"]["uploadSizeBytes"]
        if offset + len(data) > size:
            raise RangeNotSatisfiable("InvalidPageRange", f"The upload holds {size} bytes, its uploadSizeBytes: "
                                      f"bytes up to {offset + len(data)} are beyond it.")
        with open(path, "wb" if truncate or not path.exists() else "r+b", opener=private_opener) as f:
            f.seek(offset)
            f.write(data)

    def receive_pages(self, disk_key: str, token: str, first: int, last: int, data: bytes, write: str) -> None:
        """Azure's Put Page: bytes first-last, on 512-byte pages, at most 4 MiB; `update` writes
        the body, which is as long as the range, and `clear` writes zeros (with no body)."""
        length = last - first + 1
        if write not in ("update", "clear"):
            raise InvalidInput("InvalidHeaderValue", "x-ms-page-write must be update or clear.")
        if first % PAGE_BYTES or length % PAGE_BYTES or length <= 0:
            raise InvalidInput("InvalidPageRange", "A page range starts and ends on 512-byte pages: bytes=FIRST-LAST "
                               "with FIRST and LAST + 1 multiples of 512, FIRST before LAST.")
        if length > MAX_PAGE_WRITE:
            raise InvalidInput("InvalidPageRange", "A page write holds at most 4 MiB.")
        if len(data) != (length if write == "update" else 0):
            raise InvalidInput("InvalidHeaderValue", f"The body of a page {write} must be "
                               f"{length if write == 'update' else 0} bytes, the range's; it is {len(data)}.")
        self.receive_upload(disk_key, token, data if write == "update" else bytes(length), first, False)

    def revoke_access(self, rid: ResourceId) -> None:
        disk = self.get(rid)
        if disk.properties.get("diskState") != "ActiveUpload":
            return
        path = self._upload_path(disk.internal["disk_key"])
        disk.internal.pop("upload_token_sha256", None)
        if not path.exists():
            disk.properties["diskState"] = "ReadyToUpload"
            self.store.put(disk)
            return
        try:
            with self.storage.lock, open(path, "rb") as archive:
                layer = self.layers.import_archive(archive)
                disk.internal["layers"] = [layer]
                disk.properties["diskState"] = "Unattached"
                self.store.put(disk)
        except (tarfile.TarError, ValueError, EOFError, OSError) as exc:
            # A bad archive leaves the disk ready for another upload; the reason names the
            # archive member, never a path on this host.
            disk.properties["diskState"] = "ReadyToUpload"
            self.store.put(disk)
            member = getattr(exc, "tarinfo", None)
            reason = f"member '{member.name}' would land outside the root filesystem" if member else type(exc).__name__
            raise InvalidInput("InvalidUploadContent", "The uploaded content is not a usable root filesystem archive "
                               f"(tar, optionally gzip, bzip2 or xz compressed): {reason}.")
        finally:
            path.unlink(missing_ok=True)

    # snapshots --------------------------------------------------------------------------

    def create_snapshot(self, rid: ResourceId, body: dict) -> tuple[Resource, bool]:
        check_compute_name(rid.name, "snapshot")
        body = require_object(body, "body")
        props = optional_object(body.get("properties"), "properties")
        existing = self.store.get(str(rid))
        if existing is not None:
            return retag(self.store, existing, body), False
        location = normalize_location(body.get("location"))
        creation = require_object(props.get("creationData"), "properties.creationData")
        if creation.get("createOption") != "Copy":
            raise Unsupported("OperationNotAllowed", f"createOption '{creation.get('createOption')}' is not "
                              "supported for snapshots; use Copy with a disk or snapshot sourceResourceId.",
                              target="creationData.createOption")
        source = self._source(creation.get("sourceResourceId"), rid, location, "creationData.sourceResourceId")
        with self.storage.lock:
            layers = self.content_of(source)
            size_gb = source.properties.get("diskSizeGB") or 30
            properties = {
                "osType": source.properties.get("osType"),
                "hyperVGeneration": source.properties.get("hyperVGeneration", "V2"),
                "creationData": {**creation, "sourceUniqueId": source.properties.get("uniqueId")},
                "diskSizeGB": size_gb,
                "diskSizeBytes": size_gb * (1 << 30),
                "uniqueId": str(uuid.uuid4()),
                "incremental": bool(props.get("incremental", False)),
                "encryption": {"type": "EncryptionAtRestWithPlatformKey"},
                "networkAccessPolicy": "AllowAll",
                "publicNetworkAccess": "Enabled",
                "timeCreated": now_iso(),
                "provisioningState": "Succeeded",
                "diskState": "Unattached",
            }
            if properties["osType"] is None:
                del properties["osType"]
            snapshot = new_resource(rid, location, properties, check_tags(body.get("tags")),
                                    extra={"sku": _sku(body, SNAPSHOT_SKUS, "Standard_LRS")},
                                    internal={"layers": layers,
                                              "extensions_installed": source.internal.get("extensions_installed", False),
                                              "source_snapshots": self.lineage(source)})
            return self.store.put(snapshot), True

    def delete_snapshot(self, rid: ResourceId) -> bool:
        snapshot = self.store.get(str(rid))
        if snapshot is None:
            return False
        self.store.delete(snapshot.id)
        self.storage.reclaim()
        return True
