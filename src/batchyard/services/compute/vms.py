"""Virtual machines: each a real machine from the runtime, with a managed OS disk and data
disks by LUN; runCommand and the CustomScript extension run inside it."""

from __future__ import annotations

import base64
import logging
import binascii
import uuid

from ...runtime.provider import MachineError, MachineProvider, MachineSpec
from ...store.resources import Resource, ResourceStore
from ..arm_ids import SUBNET_TYPE, ResourceId, check_compute_name, parse, parse_typed, virtual_network_of
from ..arm_resources import (check_tags, get_or_404, int_field, new_resource, normalize_location, now_iso,
                             optional_list, optional_object, require_object)
from ..errors import Conflict, InvalidInput, NotFound, Unsupported
from ..batch import vm_sizes
from ..storage import Storage
from .catalog import Catalog
from .disks import DISK_TYPE, Disks
from .image_sources import ImageContent
from .images import VM_TYPE, Images

log = logging.getLogger("batchyard.compute")
EXTENSION_TYPE = "Microsoft.Compute/virtualMachines/extensions"
RUN_COMMAND_OUTPUT_LIMIT = 4096  # Azure returns the last 4 KiB of each stream
POWER_DISPLAY = {"running": "VM running", "stopped": "VM stopped", "deallocated": "VM deallocated"}
CUSTOM_SCRIPT = ("microsoft.azure.extensions", "customscript")
# RunShellScript runs under bash, with the parameters as $1, $2...; a machine without bash
# (an imported minimal root filesystem) gets sh.
_PREFER_BASH = ('script="$0"; [ -x /bin/bash ] && exec /bin/bash -c "$script" runcommand "$@"; '
                'exec /bin/sh -c "$script" runcommand "$@"')


def _refuse_changes_not_honoured(vm: Resource, props: dict, storage: dict) -> None:
    """A PUT or PATCH of an existing VM changes its tags and its disks' deleteOption here.
    A client that sends the VM back as it read it (an SDK's get, change, put) sends its
    size and data disks unchanged; one that changes them (a resize, `az vm disk attach`)
    is refused, rather than answered as if it had happened."""
    size = optional_object(props.get("hardwareProfile"), "properties.hardwareProfile").get("vmSize")
    if size is not None and str(size).lower() != vm.properties["hardwareProfile"]["vmSize"].lower():
        raise Conflict("PropertyChangeNotAllowed", "Changing property 'hardwareProfile.vmSize' of an existing VM is "
                       "not supported here: create the VM again with the new size.",
                       target="properties.hardwareProfile.vmSize")
    if "dataDisks" not in storage:
        return
    current = {d["lun"]: d["managedDisk"]["id"].lower() for d in vm.properties["storageProfile"].get("dataDisks", [])}
    given = {}
    for data in optional_list(storage.get("dataDisks"), "storageProfile.dataDisks"):
        disk_id = (data.get("managedDisk") or {}).get("id") if isinstance(data, dict) else None
        given[data.get("lun") if isinstance(data, dict) else None] = disk_id.lower() if isinstance(disk_id, str) else None
    changed = sorted(str(lun) for lun in set(current) | set(given)
                     if lun not in current or lun not in given or given[lun] not in (None, current[lun]))
    if changed:
        raise Conflict("PropertyChangeNotAllowed", "Attaching or detaching data disks of an existing VM is not "
                       f"supported here (lun {', '.join(changed)}): create the VM with its data disks.",
                       target="properties.storageProfile.dataDisks")


def _tail(data: bytes) -> str:
    return data[-RUN_COMMAND_OUTPUT_LIMIT:].decode("utf-8", errors="replace")


def script_status(exit_code: int, stdout: bytes, stderr: bytes, timed_out: bool = False) -> dict:
    """One InstanceViewStatus the way the Linux agent reports a script's outcome."""
    streams = f"\n[stdout]\n{_tail(stdout)}\n[stderr]\n{_tail(stderr)}"
    if exit_code == 0:
        return {"code": "ProvisioningState/succeeded", "level": "Info", "displayStatus": "Provisioning succeeded",
                "message": "Enable succeeded: " + streams}
    reason = "command timed out" if timed_out else f"command terminated with exit status={exit_code}"
    return {"code": f"ProvisioningState/failed/{exit_code}", "level": "Error", "displayStatus": "Provisioning failed",
            "message": f"Enable failed: failed to execute command: {reason}{streams}"}


class VirtualMachines:
    def __init__(self, store: ResourceStore, provider: MachineProvider, disks: Disks, images: Images,
                 catalog: Catalog, storage: Storage, run_command_timeout: float = 5400):
        self.store = store
        self.provider = provider
        provider.on_machines_lost(self.machines_lost)
        self.disks = disks
        self.images = images
        self.catalog = catalog
        self.storage = storage
        self.run_command_timeout = run_command_timeout
        self.image_sources = disks.image_sources
        images.vms = self

    # reading ----------------------------------------------------------------------------

    def get(self, rid: ResourceId, expand: str | None = None) -> dict:
        vm = get_or_404(self.store, rid)
        body = _public(vm)
        if expand and expand.lower() == "instanceview":
            body["properties"]["instanceView"] = self.instance_view(rid)
        return body

    def list(self, subscription: str, resource_group: str | None) -> list[dict]:
        return [_public(vm) for vm in self.store.list(type=VM_TYPE, subscription=subscription,
                                                       resource_group=resource_group)]

    def instance_view(self, rid: ResourceId) -> dict:
        vm = get_or_404(self.store, rid)
        power = vm.internal["power_state"]
        statuses = [{"code": "ProvisioningState/succeeded", "level": "Info", "displayStatus": "Provisioning succeeded",
                     "time": vm.internal.get("state_time")}]
        if vm.internal.get("generalized"):
            statuses.append({"code": "OSState/generalized", "level": "Info", "displayStatus": "VM generalized"})
        statuses.append({"code": f"PowerState/{power}", "level": "Info", "displayStatus": POWER_DISPLAY[power]})
        storage = vm.properties["storageProfile"]
        disk_names = [storage["osDisk"]["name"]] + [d["name"] for d in storage.get("dataDisks", [])]
        view = {
            "computerName": vm.properties.get("osProfile", {}).get("computerName", vm.name),
            "hyperVGeneration": "V2",
            "disks": [{"name": n, "statuses": [{"code": "ProvisioningState/succeeded", "level": "Info",
                                                "displayStatus": "Provisioning succeeded"}]} for n in disk_names],
            "extensions": [ext.properties.get("instanceView") for ext in self._extensions(vm)
                           if ext.properties.get("instanceView")],
            "statuses": statuses,
        }
        if power == "running":
            view["vmAgent"] = {"vmAgentVersion": "batchyard", "statuses": [
                {"code": "ProvisioningState/succeeded", "level": "Info", "displayStatus": "Ready",
                 "message": "Guest Agent is running"}], "extensionHandlers": []}
        return view

    # create -----------------------------------------------------------------------------

    def create_or_update(self, rid: ResourceId, body: dict) -> tuple[dict, bool]:
        check_compute_name(rid.name, "virtual machine")
        body = require_object(body, "body")
        props = optional_object(body.get("properties"), "properties")
        existing = self.store.get(str(rid))
        if existing is not None:
            return _public(self._update(existing, body, props)), False
        location = normalize_location(body.get("location"))
        hardware = optional_object(props.get("hardwareProfile"), "properties.hardwareProfile")
        if not isinstance(hardware.get("vmSize"), str) or not hardware["vmSize"]:
            raise InvalidInput("InvalidParameter", "Required parameter 'hardwareProfile.vmSize' is missing (null).",
                               target="hardwareProfile.vmSize")
        storage = require_object(props.get("storageProfile"), "properties.storageProfile")
        vm_id = str(uuid.uuid4())
        with self.storage.lock:
            os_disk, image_ref, source = self._os_disk(rid, location, storage)
            created = [] if os_disk.get("createOption") == "Attach" else [os_disk["managedDisk"]["id"]]
            try:
                data_disks = self._data_disks(rid, location, storage, source, created)
                self._check_free([os_disk] + data_disks, rid)
                properties = {
                    "vmId": vm_id,
                    "hardwareProfile": hardware,
                    "storageProfile": {"osDisk": os_disk, "dataDisks": data_disks, "diskControllerType": "SCSI"},
                    "osProfile": _public_os_profile(props.get("osProfile"), rid.name),
                    "networkProfile": _network_profile(props.get("networkProfile")),
                    "provisioningState": "Succeeded",
                    "timeCreated": now_iso(),
                }
                if image_ref is not None:
                    properties["storageProfile"]["imageReference"] = image_ref
                vm = new_resource(rid, location, properties, check_tags(body.get("tags")),
                                  internal={"machine_key": uuid.UUID(vm_id).hex, "power_state": "running",
                                            "state_time": now_iso(), "generalized": False,
                                            "extensions_installed": False})
                if body.get("zones"):
                    vm.body["zones"] = body["zones"]
                for disk_ref in [os_disk] + data_disks:
                    self.disks.attach(self.disks.get(parse(disk_ref["managedDisk"]["id"])), vm.id)
                self.store.put(vm)
            except Exception:
                for disk_id in created:
                    self._force_delete_disk(disk_id)
                raise
        try:
            self._start(vm)
        except Conflict:
            vm.properties["provisioningState"] = "Failed"
            self._set_power(vm, "deallocated")
            raise
        return _public(vm), True

    def _os_disk(self, rid: ResourceId, location: str, storage: dict):
        """(osDisk as stored, imageReference as echoed, image resource or None)."""
        os_disk = dict(optional_object(storage.get("osDisk"), "storageProfile.osDisk"))
        option = os_disk.get("createOption") or "FromImage"
        managed = dict(optional_object(os_disk.get("managedDisk"), "storageProfile.osDisk.managedDisk"))
        if option == "Attach":
            disk = self._existing_disk(managed.get("id"), rid, location, "storageProfile.osDisk.managedDisk.id")
            self._refuse_windows(disk.properties.get("osType"))
            os_disk.update({"name": disk.name, "osType": disk.properties.get("osType", "Linux"),
                            "managedDisk": {"id": disk.id, "storageAccountType": disk.body["sku"]["name"]},
                            "diskSizeGB": disk.properties["diskSizeGB"]})
            os_disk.setdefault("caching", "ReadWrite")
            os_disk.setdefault("deleteOption", "Detach")
            return os_disk, None, None
        if option != "FromImage":
            raise InvalidInput("InvalidParameter", f"The value '{option}' of parameter 'osDisk.createOption' is not "
                               "allowed. Allowed values are FromImage, Attach.", target="storageProfile.osDisk.createOption")
        ref = require_object(storage.get("imageReference"), "storageProfile.imageReference")
        # A marketplace alias of a managed image (image_aliases.py) makes the VM from that image.
        base = None if ref.get("id") else self.catalog.resolve(ref)
        if ref.get("id") or base.image_id:
            image = self._custom_image(ref.get("id") or base.image_id, rid, location)
            layers, os_type, size = image.os_layers, image.os_type, image.os_disk_gb
            echoed, lineage, creation = {"id": image.named}, image.internal.get("source_snapshots", []), {
                "createOption": "FromImage", "imageReference": {"id": image.source.id}}
            if image.exact_version:
                echoed["exactVersion"] = image.exact_version
            if base is not None:
                echoed = {**{k: ref[k] for k in ("publisher", "offer", "sku", "version") if k in ref},
                          "exactVersion": base.version}
            source = image
        else:
            layers, os_type, size = base.layers, base.os_type, 30
            echoed = {k: ref[k] for k in ("publisher", "offer", "sku", "version") if k in ref}
            echoed["exactVersion"] = base.version
            lineage, source = [], None
            creation = {"createOption": "FromImage", "imageReference": {"id": _platform_image_id(
                rid.subscription, location, base)}}
        self._refuse_windows(os_type)
        size = int_field(os_disk.get("diskSizeGB") or size, "storageProfile.osDisk.diskSizeGB", 1, 4095)
        name = os_disk.get("name") or f"{rid.name}_OsDisk_1_{uuid.uuid4().hex}"
        disk_rid = ResourceId(rid.subscription, rid.resource_group, "Microsoft.Compute", (("disks", name),))
        if self.store.get(str(disk_rid)) is not None:
            raise Conflict("ResourceExists", f"A disk named '{name}' already exists in resource group "
                           f"'{rid.resource_group}'.", target="storageProfile.osDisk.name")
        disk = self.disks.new_for_vm(disk_rid, location, list(layers), size, os_type, creation,
                                     managed.get("storageAccountType"), lineage)
        if source is not None and source.extensions_installed:
            disk.internal["extensions_installed"] = True
            self.store.put(disk)
        os_disk.update({"name": name, "osType": os_type, "createOption": "FromImage", "diskSizeGB": size,
                        "managedDisk": {"id": disk.id, "storageAccountType": disk.body["sku"]["name"]}})
        os_disk.setdefault("caching", "ReadWrite")
        os_disk.setdefault("deleteOption", "Detach")
        return os_disk, echoed, source

    def _data_disks(self, rid: ResourceId, location: str, storage: dict, image: ImageContent | None,
                    created: list[str]) -> list[dict]:
        requested = optional_list(storage.get("dataDisks"), "storageProfile.dataDisks")
        image_luns = dict(image.data_layers) if image is not None else {}
        by_lun: dict[int, dict] = {}
        for i, data in enumerate(requested):
            data = dict(require_object(data, f"storageProfile.dataDisks[{i}]"))
            lun = int_field(data.get("lun"), f"storageProfile.dataDisks[{i}].lun", 0, 63)
            if lun in by_lun:
                raise InvalidInput("InvalidParameter", f"Two data disks use LUN {lun}.",
                                   target=f"storageProfile.dataDisks[{i}].lun")
            by_lun[lun] = data
        for lun in image_luns:  # an image's data disks come with it, as in Azure
            by_lun.setdefault(int(lun), {"lun": int(lun), "createOption": "FromImage"})
        out = []
        for lun, data in sorted(by_lun.items()):
            option = data.get("createOption")
            managed = dict(optional_object(data.get("managedDisk"), f"dataDisks[lun {lun}].managedDisk"))
            field = f"storageProfile.dataDisks[lun {lun}]"
            if option == "Attach":
                disk = self._existing_disk(managed.get("id"), rid, location, field + ".managedDisk.id")
            elif option in ("Empty", "FromImage"):
                if option == "FromImage":
                    if str(lun) not in image_luns:
                        raise InvalidInput("InvalidParameter", f"The image has no data disk at LUN {lun}.",
                                           target=field + ".createOption")
                    layers = image_luns[str(lun)]
                    default_size = image.data_disk_gb.get(str(lun)) or 32
                    creation = {"createOption": "FromImage", "imageReference": {"id": image.source.id}}
                    lineage = image.internal.get("source_snapshots", [])
                else:
                    if data.get("diskSizeGB") is None:
                        raise InvalidInput("InvalidParameter", "Required parameter 'diskSizeGB' is missing (null).",
                                           target=field + ".diskSizeGB")
                    layers, default_size, creation, lineage = [], None, {"createOption": "Empty"}, []
                size = int_field(data.get("diskSizeGB") or default_size, field + ".diskSizeGB", 1, 32767)
                name = data.get("name") or f"{rid.name}_disk{lun + 2}_{uuid.uuid4().hex}"
                disk_rid = ResourceId(rid.subscription, rid.resource_group, "Microsoft.Compute", (("disks", name),))
                if self.store.get(str(disk_rid)) is not None:
                    raise Conflict("ResourceExists", f"A disk named '{name}' already exists.", target=field + ".name")
                disk = self.disks.new_for_vm(disk_rid, location, list(layers), size, None, creation,
                                             managed.get("storageAccountType"), lineage)
                created.append(disk.id)
            else:
                raise InvalidInput("InvalidParameter", f"The value '{option}' of parameter 'dataDisks.createOption' is "
                                   "not allowed. Allowed values are Empty, FromImage, Attach.", target=field + ".createOption")
            data.update({"lun": lun, "name": disk.name, "createOption": option or "Empty",
                         "diskSizeGB": disk.properties["diskSizeGB"],
                         "managedDisk": {"id": disk.id, "storageAccountType": disk.body["sku"]["name"]}})
            data.setdefault("caching", "None")
            data.setdefault("deleteOption", "Detach")
            data.setdefault("toBeDetached", False)
            out.append(data)
        return out

    def _existing_disk(self, disk_id, rid: ResourceId, location: str, field: str) -> Resource:
        disk_rid = parse_typed(disk_id, DISK_TYPE, field)
        disk = self.store.get(str(disk_rid))
        if disk is None:
            raise NotFound("NotFound", f"Disk '{disk_rid.name}' was not found.", target=field)
        if disk.body["location"] != location:
            raise InvalidInput("InvalidParameter", f"Disk '{disk.name}' is in location '{disk.body['location']}', "
                               f"not '{location}'.", target=field)
        return disk

    def _check_free(self, disk_refs: list[dict], rid: ResourceId) -> None:
        for ref in disk_refs:
            disk = self.disks.get(parse(ref["managedDisk"]["id"]))
            owner = disk.body.get("managedBy")
            if owner and owner.lower() != str(rid).lower():
                raise Conflict("OperationNotAllowed", f"Disk {disk.name} is already attached to VM {owner}.")
            if disk.properties.get("diskState") in ("ReadyToUpload", "ActiveUpload"):
                raise Conflict("OperationNotAllowed", f"Disk {disk.name} is waiting for its upload to finish.")

    def _custom_image(self, image_id: str, rid: ResourceId, location: str) -> ImageContent:
        """A managed image, or a gallery image version or definition (its latest version)
        with a replica in the VM's location."""
        field = "storageProfile.imageReference.id"
        image = self.image_sources.find(image_id, field, location)
        if image is None:
            raise NotFound("NotFound", f"The Image '{image_id}' cannot be found in '{location}' region.", target=field)
        if parse(image_id, field).subscription.lower() != rid.subscription.lower() or location not in image.regions:
            raise InvalidInput("InvalidParameter", f"The image '{image_id}' must be in the virtual machine's "
                               f"subscription and location ('{location}').", target=field)
        return image

    @staticmethod
    def _refuse_windows(os_type: str | None) -> None:
        if os_type == "Windows":
            raise InvalidInput("OperationNotAllowed", "Windows images can be stored here but machines run Linux only; "
                               "a Windows image cannot be started.", target="storageProfile")

    def _update(self, vm: Resource, body: dict, props: dict) -> Resource:
        if "location" in body and normalize_location(body["location"]) != vm.body["location"]:
            raise InvalidInput("InvalidParameter", "Changing property 'location' is not allowed.", target="location")
        storage = optional_object(props.get("storageProfile"), "properties.storageProfile")
        _refuse_changes_not_honoured(vm, props, storage)
        if "tags" in body:
            vm.body["tags"] = check_tags(body["tags"])
        os_disk = optional_object(storage.get("osDisk"), "storageProfile.osDisk")
        if os_disk.get("deleteOption") in ("Delete", "Detach"):
            vm.properties["storageProfile"]["osDisk"]["deleteOption"] = os_disk["deleteOption"]
        for data in optional_list(storage.get("dataDisks"), "storageProfile.dataDisks"):
            for mine in vm.properties["storageProfile"]["dataDisks"]:
                if isinstance(data, dict) and data.get("lun") == mine["lun"] and data.get("deleteOption") in ("Delete", "Detach"):
                    mine["deleteOption"] = data["deleteOption"]
        return self.store.put(vm)

    def update(self, rid: ResourceId, body: dict) -> dict:
        vm = get_or_404(self.store, rid)
        body = require_object(body, "body")
        return _public(self._update(vm, body, optional_object(body.get("properties"), "properties")))

    # power ------------------------------------------------------------------------------

    def _spec(self, vm: Resource) -> MachineSpec:
        storage = vm.properties["storageProfile"]
        os_disk = self.disks.spec(self.disks.get(parse(storage["osDisk"]["managedDisk"]["id"])))
        data = {d["lun"]: self.disks.spec(self.disks.get(parse(d["managedDisk"]["id"])))
                for d in storage.get("dataDisks", [])}
        return MachineSpec(vm.internal["machine_key"], os_disk, data,
                           limits=vm_sizes.limits(vm.properties["hardwareProfile"]["vmSize"]),
                           network=_network(vm))

    def _start(self, vm: Resource) -> None:
        try:
            self.provider.start(self._spec(vm))
        except MachineError as exc:
            raise Conflict("AllocationFailed", f"The virtual machine '{vm.name}' could not be started: {exc}")

    def _set_power(self, vm: Resource, state: str) -> None:
        vm.internal["power_state"] = state
        vm.internal["state_time"] = now_iso()
        for ref in self._disk_refs(vm):
            disk = self.disks.get(parse(ref["managedDisk"]["id"]))
            disk.properties["diskState"] = "Reserved" if state == "deallocated" else "Attached"
            self.store.put(disk)
        self.store.put(vm)

    @staticmethod
    def _disk_refs(vm: Resource) -> list[dict]:
        storage = vm.properties["storageProfile"]
        return [storage["osDisk"]] + list(storage.get("dataDisks", []))

    def start(self, rid: ResourceId) -> None:
        vm = get_or_404(self.store, rid)
        if vm.internal.get("generalized"):
            raise Conflict("OperationNotAllowed", f"Operation 'start' is not allowed on VM '{vm.name}' since the VM "
                           "is generalized.")
        self._start(vm)
        self._set_power(vm, "running")

    def stop(self, rid: ResourceId, deallocate: bool) -> None:
        vm = get_or_404(self.store, rid)
        self.provider.stop(vm.internal["machine_key"])
        self._set_power(vm, "deallocated" if deallocate else "stopped")

    def restart(self, rid: ResourceId) -> None:
        vm = self._running(rid, "restart")
        self.provider.stop(vm.internal["machine_key"])
        self._start(vm)
        self._set_power(vm, "running")

    def generalize(self, rid: ResourceId) -> None:
        vm = get_or_404(self.store, rid)
        if vm.internal["power_state"] == "running":
            raise Conflict("OperationNotAllowed", f"Operation 'generalize' is not allowed on VM '{vm.name}' since the "
                           "VM is running. Please stop or deallocate the VM first.")
        vm.internal["generalized"] = True
        self.store.put(vm)

    def _running(self, rid: ResourceId, operation: str) -> Resource:
        vm = get_or_404(self.store, rid)
        if vm.internal["power_state"] != "running":
            raise Conflict("OperationNotAllowed", f"Operation '{operation}' is not allowed on VM '{vm.name}': the "
                           "operation requires the VM to be running (or set to run).")
        return vm

    def machines_lost(self, keys: list[str]) -> None:
        """Their host left the cluster: the VMs are stopped (their disks went with it)."""
        keys = set(keys)
        for vm in self.store.list(type=VM_TYPE):
            if vm.internal.get("machine_key") in keys and vm.internal.get("power_state") == "running":
                self._set_power(vm, "stopped")

    def restore(self) -> int:
        """After a server restart: disks left attached to a VM whose creation never completed
        are released; every VM that was running runs again, disks as they were. One that
        cannot (its disks are gone) shows as stopped, with its provisioning failed."""
        self.disks.release_orphans({vm.id.lower() for vm in self.store.list(type=VM_TYPE)})
        count = 0
        for vm in self.store.list(type=VM_TYPE):
            if vm.internal.get("power_state") == "running":
                try:
                    self._start(vm)
                    count += 1
                except Conflict as exc:
                    log.warning("%s", exc.message)
                    vm.properties["provisioningState"] = "Failed"
                    self._set_power(vm, "stopped")
        return count

    # commands ---------------------------------------------------------------------------

    def run_command(self, rid: ResourceId, body: dict) -> dict:
        body = require_object(body, "body")
        command = body.get("commandId")
        if command != "RunShellScript":
            if command in ("RunPowerShellScript", "EnableRemotePS", "IPConfig", "EnableAdminAccount"):
                raise Unsupported("OperationNotAllowed", f"Command '{command}' is for Windows; machines here run "
                                  "Linux. Use RunShellScript.", target="commandId")
            raise InvalidInput("InvalidParameter", f"The value '{command}' of parameter 'commandId' is not valid. "
                               "Supported: RunShellScript.", target="commandId")
        script = body.get("script") or []
        if not isinstance(script, list) or not all(isinstance(line, str) for line in script):
            raise InvalidInput("InvalidParameter", "script must be a list of lines.", target="script")
        params = body.get("parameters") or []
        if not isinstance(params, list) or not all(isinstance(p, dict) for p in params):
            raise InvalidInput("InvalidParameter", "parameters must be a list of {name, value}.", target="parameters")
        vm = self._running(rid, "runCommand")
        values = [str(p.get("value", "")) for p in params]
        env = {str(p["name"]): str(p.get("value", "")) for p in params
               if isinstance(p.get("name"), str) and p["name"].isidentifier()}
        result = self.provider.run_argv(
            vm.internal["machine_key"], ["/bin/sh", "-c", _PREFER_BASH, "\n".join(script)] + values,
            timeout=self.run_command_timeout, env=env, tail_bytes=RUN_COMMAND_OUTPUT_LIMIT)
        status = script_status(result.exit_code, result.stdout, result.stderr, result.timed_out)
        # Azure reports a script that ran (whatever its exit code) as a succeeded operation.
        status["code"], status["level"], status["displayStatus"] = (
            "ProvisioningState/succeeded", "Info", "Provisioning succeeded")
        return {"value": [status]}

    # extensions ---------------------------------------------------------------------------

    def _extensions(self, vm: Resource) -> list[Resource]:
        prefix = vm.id.lower() + "/extensions/"
        return [e for e in self.store.list(type=EXTENSION_TYPE, subscription=vm.subscription,
                                           resource_group=vm.resource_group) if e.id.lower().startswith(prefix)]

    def list_extensions(self, vm_rid: ResourceId) -> list[dict]:
        vm = get_or_404(self.store, vm_rid)
        return [_public_extension(e) for e in self._extensions(vm)]

    def get_extension(self, rid: ResourceId) -> dict:
        get_or_404(self.store, rid.parent)
        return _public_extension(get_or_404(self.store, rid))

    def create_extension(self, rid: ResourceId, body: dict) -> tuple[dict, bool]:
        check_compute_name(rid.name, "virtual machine extension")
        vm = self._running(rid.parent, "extension")
        body = require_object(body, "body")
        props = require_object(body.get("properties"), "properties")
        kind = (str(props.get("publisher", "")).lower(), str(props.get("type", "")).lower())
        if kind != CUSTOM_SCRIPT:
            raise Unsupported("OperationNotAllowed", f"Extension '{props.get('publisher')}.{props.get('type')}' is not "
                              "available here. Supported: Microsoft.Azure.Extensions CustomScript.",
                              target="properties.type")
        command = self._custom_script_command(props)
        existing = self.store.get(str(rid))
        result = self.provider.run(vm.internal["machine_key"], command, timeout=self.run_command_timeout,
                                   tail_bytes=RUN_COMMAND_OUTPUT_LIMIT)
        status = script_status(result.exit_code, result.stdout, result.stderr, result.timed_out)
        public_props = {k: v for k, v in props.items() if k != "protectedSettings"}
        public_props.update({
            "provisioningState": "Succeeded" if result.exit_code == 0 else "Failed",
            "instanceView": {"name": rid.name, "type": "Microsoft.Azure.Extensions.CustomScript",
                             "typeHandlerVersion": props.get("typeHandlerVersion", "2.1"), "statuses": [status]},
        })
        ext = new_resource(rid, vm.body["location"], public_props, check_tags(body.get("tags")))
        ext.body["type"] = EXTENSION_TYPE
        self.store.put(ext)
        self._mark_extensions_installed(vm)
        return _public_extension(ext), existing is None

    def extension_failure(self, rid: ResourceId) -> dict:
        """The error Azure reports when an extension's script failed."""
        ext = get_or_404(self.store, rid)
        message = ext.properties["instanceView"]["statuses"][0]["message"]
        return {"code": "VMExtensionProvisioningError",
                "message": f"VM has reported a failure when processing extension '{rid.name}' (publisher "
                           f"'{ext.properties.get('publisher')}' and type '{ext.properties.get('type')}'). "
                           f"Error message: '{message}'."}

    def _mark_extensions_installed(self, vm: Resource) -> None:
        """The custom-image guide warns against images made from machines that had an
        extension: record it on the VM and its OS disk, so images made later carry it."""
        vm.internal["extensions_installed"] = True
        self.store.put(vm)
        disk = self.disks.get(parse(vm.properties["storageProfile"]["osDisk"]["managedDisk"]["id"]))
        disk.internal["extensions_installed"] = True
        self.store.put(disk)

    @staticmethod
    def _custom_script_command(props: dict) -> str:
        settings = optional_object(props.get("settings"), "properties.settings")
        protected = optional_object(props.get("protectedSettings"), "properties.protectedSettings")
        merged = {**settings, **protected}
        if merged.get("script"):
            try:
                return base64.b64decode(merged["script"], validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                raise InvalidInput("InvalidParameter", "settings.script must be base64-encoded text.",
                                   target="properties.settings.script")
        if merged.get("fileUris"):
            raise Unsupported("OperationNotAllowed", "fileUris are not downloaded here; use commandToExecute or "
                              "script (which may fetch them itself through outbound NAT).",
                              target="properties.settings.fileUris")
        command = merged.get("commandToExecute")
        if not isinstance(command, str) or not command.strip():
            raise InvalidInput("InvalidParameter", "CustomScript needs settings.commandToExecute or settings.script.",
                               target="properties.settings.commandToExecute")
        return command

    def delete_extension(self, rid: ResourceId) -> bool:
        get_or_404(self.store, rid.parent)
        return self.store.delete(str(rid))

    # delete -----------------------------------------------------------------------------

    def delete(self, rid: ResourceId) -> bool:
        vm = self.store.get(str(rid))
        if vm is None:
            return False
        self.provider.delete_machine(vm.internal["machine_key"])
        for ext in self._extensions(vm):
            self.store.delete(ext.id)
        with self.storage.lock:
            for ref in self._disk_refs(vm):
                disk = self.store.get(ref["managedDisk"]["id"])
                if disk is None:
                    continue
                self.disks.detach(disk)
                if ref.get("deleteOption") == "Delete":
                    self.disks.delete(parse(disk.id))
            self.store.delete(vm.id)
        self.storage.reclaim()
        return True

    def _force_delete_disk(self, disk_id: str) -> None:
        disk = self.store.get(disk_id)
        if disk is not None:
            self.disks.detach(disk)
            self.disks.delete(parse(disk_id))

    def delete_in_group(self, subscription: str, resource_group: str) -> None:
        for vm in self.store.list(type=VM_TYPE, subscription=subscription, resource_group=resource_group):
            self.delete(parse(vm.id))


def _public(vm: Resource) -> dict:
    return {**vm.body, "properties": dict(vm.properties)}


def _public_extension(ext: Resource) -> dict:
    body = {**ext.body, "properties": dict(ext.properties)}
    body["properties"].pop("instanceView", None)
    return body


def _public_os_profile(profile, vm_name: str) -> dict:
    """Secrets (adminPassword, customData) are accepted but never echoed, as in Azure."""
    profile = dict(optional_object(profile, "properties.osProfile"))
    profile.pop("adminPassword", None)
    profile.pop("customData", None)
    profile.setdefault("computerName", vm_name)
    profile.setdefault("secrets", [])
    profile.setdefault("allowExtensionOperations", True)
    return profile


def _platform_image_id(subscription: str, location: str, base) -> str:
    return (f"/Subscriptions/{subscription}/Providers/Microsoft.Compute/Locations/{location}/Publishers/"
            f"{base.publisher}/ArtifactTypes/VMImage/Offers/{base.offer}/Skus/{base.sku}/Versions/{base.version}")


def _subnets(profile: dict) -> list[tuple[str, str]]:
    """(subnet id, its field) of each IP configuration of the NIC configurations a VM
    declares inline (networkInterfaceConfigurations); NICs given by id
    (networkInterfaces) are recorded only, there being no Microsoft.Network here."""
    found = []
    base = "properties.networkProfile.networkInterfaceConfigurations"
    for i, nic in enumerate(_member(profile, "networkInterfaceConfigurations") or []):
        for j, ip in enumerate(_member(nic, "properties", "ipConfigurations") or []):
            subnet = _member(ip, "properties", "subnet", "id")
            if subnet is not None:
                found.append((subnet, f"{base}[{i}].properties.ipConfigurations[{j}].properties.subnet.id"))
    return found


def _member(value, *path: str):
    """value[path[0]][path[1]]...; None where an object on the way is missing."""
    for name in path:
        value = value.get(name) if isinstance(value, dict) else None
    return value


def _network_profile(value) -> dict:
    profile = optional_object(value, "properties.networkProfile")
    for subnet, field in _subnets(profile):
        parse_typed(subnet, SUBNET_TYPE, field)
    return profile


def _network(vm: Resource) -> str:
    """The network a VM's machine joins: the virtual network of its first NIC
    configuration's subnet (shared with Batch pools on that virtual network), else its
    resource group's."""
    subnets = _subnets(vm.properties.get("networkProfile") or {})
    if subnets:
        return virtual_network_of(subnets[0][0])
    return "group:" + vm.id.lower().split("/providers/", 1)[0]
