"""Managed images: an OS disk and data disks by LUN, each a list of layers, taken from
snapshots, managed disks or a generalized VM."""

from __future__ import annotations

from ...store.resources import Resource, ResourceStore
from ..arm_ids import ResourceId, check_compute_name, parse, parse_typed
from ..arm_resources import (check_tags, get_or_404, new_resource, normalize_location, optional_object,
                             require_object, retag)
from ..errors import Conflict, InvalidInput, NotFound
from ..storage import Storage
from .disks import DISK_TYPE, SNAPSHOT_TYPE, Disks, _os_type

IMAGE_TYPE = "Microsoft.Compute/images"
VM_TYPE = "Microsoft.Compute/virtualMachines"


class Images:
    def __init__(self, store: ResourceStore, disks: Disks, storage: Storage):
        self.store = store
        self.disks = disks
        self.storage = storage
        self.vms = None  # set by the VM service: images from a VM need its disks

    def get(self, rid: ResourceId) -> Resource:
        return get_or_404(self.store, rid)

    def list(self, subscription: str, resource_group: str | None) -> list[Resource]:
        return self.store.list(type=IMAGE_TYPE, subscription=subscription, resource_group=resource_group)

    def create_or_update(self, rid: ResourceId, body: dict) -> tuple[Resource, bool]:
        check_compute_name(rid.name, "image")
        body = require_object(body, "body")
        existing = self.store.get(str(rid))
        if existing is not None:
            return retag(self.store, existing, body), False
        location = normalize_location(body.get("location"))
        props = optional_object(body.get("properties"), "properties")
        with self.storage.lock:
            if props.get("sourceVirtualMachine"):
                storage_profile, internal = self._from_vm(rid, location, props)
            else:
                storage_profile, internal = self._from_disks(rid, location, props)
            properties = {
                "storageProfile": storage_profile,
                "provisioningState": "Succeeded",
                "hyperVGeneration": props.get("hyperVGeneration") or "V2",
            }
            if props.get("sourceVirtualMachine"):
                properties["sourceVirtualMachine"] = {"id": props["sourceVirtualMachine"]["id"]}
            image = new_resource(rid, location, properties, check_tags(body.get("tags")), internal=internal)
            return self.store.put(image), True

    def _from_disks(self, rid: ResourceId, location: str, props: dict) -> tuple[dict, dict]:
        profile = require_object(props.get("storageProfile"), "properties.storageProfile")
        os_disk = require_object(profile.get("osDisk"), "properties.storageProfile.osDisk")
        os_type = _os_type(os_disk.get("osType"), "storageProfile.osDisk.osType")
        if os_type is None:
            raise InvalidInput("InvalidParameter", "Required parameter 'osType' is missing (null).",
                               target="properties.storageProfile.osDisk.osType")
        os_state = os_disk.get("osState")
        if os_state not in ("Generalized", "Specialized"):
            raise InvalidInput("InvalidParameter", f"The value '{os_state}' of parameter 'osState' is not allowed. "
                               "Allowed values are Generalized, Specialized.",
                               target="properties.storageProfile.osDisk.osState")
        os_source = self._disk_source(os_disk, rid, location, "storageProfile.osDisk")
        out_os = {**os_disk, "osType": os_type, "osState": os_state,
                  "diskSizeGB": os_disk.get("diskSizeGB") or os_source.properties.get("diskSizeGB"),
                  "caching": os_disk.get("caching") or "ReadWrite",
                  "storageAccountType": os_disk.get("storageAccountType") or "Standard_LRS"}
        os_layers = self.disks.content_of(os_source)
        data_out, data_layers = [], {}
        extensions = os_source.internal.get("extensions_installed", False)
        lineage = list(self.disks.lineage(os_source))
        for i, data in enumerate(profile.get("dataDisks") or []):
            data = require_object(data, f"storageProfile.dataDisks[{i}]")
            lun = data.get("lun")
            if not isinstance(lun, int) or isinstance(lun, bool) or not 0 <= lun <= 63 or str(lun) in data_layers:
                raise InvalidInput("InvalidParameter", f"The value '{lun}' of parameter 'lun' is not valid or is "
                                   "used twice.", target=f"storageProfile.dataDisks[{i}].lun")
            source = self._disk_source(data, rid, location, f"storageProfile.dataDisks[{i}]")
            data_layers[str(lun)] = self.disks.content_of(source)
            lineage += self.disks.lineage(source)
            data_out.append({**data, "diskSizeGB": data.get("diskSizeGB") or source.properties.get("diskSizeGB"),
                             "caching": data.get("caching") or "None",
                             "storageAccountType": data.get("storageAccountType") or "Standard_LRS"})
        profile_out = {"osDisk": out_os, "dataDisks": data_out, "zoneResilient": bool(profile.get("zoneResilient"))}
        return profile_out, self.content_record(os_layers, data_layers, extensions, lineage)

    def _disk_source(self, disk: dict, rid: ResourceId, location: str, field: str) -> Resource:
        for key, type_ in (("snapshot", SNAPSHOT_TYPE), ("managedDisk", DISK_TYPE)):
            ref = disk.get(key)
            if ref:
                ref = require_object(ref, f"{field}.{key}")
                source_rid = parse_typed(ref.get("id"), type_, f"{field}.{key}.id")
                source = self.store.get(str(source_rid))
                if source is None:
                    raise NotFound("NotFound", f"Resource {ref.get('id')} not found.", target=f"{field}.{key}.id")
                if source_rid.subscription.lower() != rid.subscription.lower() or source.body["location"] != location:
                    raise InvalidInput("InvalidParameter", f"The source {ref.get('id')} must be in the image's "
                                       "subscription and location.", target=f"{field}.{key}.id")
                return source
        if disk.get("blobUri"):
            raise InvalidInput("InvalidParameter", "Images from unmanaged blobs (blobUri) are not supported; use a "
                               "snapshot or a managed disk.", target=f"{field}.blobUri")
        raise InvalidInput("InvalidParameter", f"The {field} must name a snapshot or a managed disk.", target=field)

    def _from_vm(self, rid: ResourceId, location: str, props: dict) -> tuple[dict, dict]:
        ref = require_object(props.get("sourceVirtualMachine"), "properties.sourceVirtualMachine")
        vm_rid = parse_typed(ref.get("id"), VM_TYPE, "properties.sourceVirtualMachine.id")
        vm = self.store.get(str(vm_rid))
        if vm is None:
            raise NotFound("NotFound", f"The Resource '{ref.get('id')}' was not found.",
                           target="properties.sourceVirtualMachine.id")
        if vm.body["location"] != location:
            raise InvalidInput("InvalidParameter", "The source virtual machine must be in the image's location.")
        if not vm.internal.get("generalized"):
            raise Conflict("OperationNotAllowed", f"The operation 'Create Image' requires the Virtual Machine "
                           f"'{vm.name}' to be Generalized.")
        storage = vm.properties["storageProfile"]
        os_disk = self.disks.get(parse(storage["osDisk"]["managedDisk"]["id"]))
        os_layers = self.disks.content_of(os_disk)
        out_os = {"osType": os_disk.properties.get("osType", "Linux"), "osState": "Generalized",
                  "managedDisk": {"id": os_disk.id}, "caching": "ReadWrite",
                  "storageAccountType": os_disk.body["sku"]["name"], "diskSizeGB": os_disk.properties["diskSizeGB"]}
        data_out, data_layers = [], {}
        lineage = list(self.disks.lineage(os_disk))
        for data in storage.get("dataDisks", []):
            disk = self.disks.get(parse(data["managedDisk"]["id"]))
            data_layers[str(data["lun"])] = self.disks.content_of(disk)
            lineage += self.disks.lineage(disk)
            data_out.append({"lun": data["lun"], "managedDisk": {"id": disk.id}, "caching": "None",
                             "storageAccountType": disk.body["sku"]["name"], "diskSizeGB": disk.properties["diskSizeGB"]})
        profile = {"osDisk": out_os, "dataDisks": data_out, "zoneResilient": False}
        extensions = bool(vm.internal.get("extensions_installed"))
        return profile, self.content_record(os_layers, data_layers, extensions, lineage)

    @staticmethod
    def content_record(os_layers: list[str], data_layers: dict[str, list[str]], extensions: bool,
                       lineage: list[str]) -> dict:
        """What an image (or gallery version) keeps of its content: layers by disk, all its
        layers (kept from collection), whether extensions were installed, its lineage."""
        everything = list(dict.fromkeys(os_layers + [l for ls in data_layers.values() for l in ls]))
        return {"os_layers": os_layers, "data_layers": data_layers, "layers": everything,
                "extensions_installed": extensions, "source_snapshots": list(dict.fromkeys(lineage))}

    def delete(self, rid: ResourceId) -> bool:
        """Machines made from an image keep its layers: deleting it never affects them."""
        image = self.store.get(str(rid))
        if image is None:
            return False
        self.store.delete(image.id)
        self.storage.reclaim()
        return True
