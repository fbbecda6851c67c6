"""Azure Compute Gallery: galleries, image definitions and image versions.

A definition names an image by publisher/offer/sku with its OS type and state; a version
is that image's content at one point (from a managed image, or from OS and data disk
snapshots or disks), published to target regions with a replica count each. Its content
is held as a managed image's is (layers by disk, lineage for the custom-image limits), so
the one image resolver (image_sources.py) serves both to VMs, disks and pools.

Replicas: every target region is recorded with its state. The regions of this service are
one place, so a region's replica is complete once the content is stored; on a cluster the
provider also places the layers on `regionalReplicaCount` hosts ahead of any pool
(`MachineProvider.replicate`), and the hosts it chose are recorded with the replica.
Azure's wording is kept for its refusals (learn.microsoft.com, "Troubleshoot shared image
galleries").
"""

from __future__ import annotations

import datetime as dt
import re

from ...runtime.provider import MachineError, MachineProvider
from ...store.resources import Resource, ResourceStore
from ..arm_ids import ResourceId, parse
from ..arm_resources import (check_tags, get_or_404, int_field, new_resource, normalize_location, now_iso,
                             optional_list, optional_object, require_object)
from ..errors import Conflict, InvalidInput, NotFound
from ..storage import Storage
from .disks import DISK_TYPE, SNAPSHOT_TYPE, _os_type
from .images import IMAGE_TYPE, Images

GALLERY_TYPE = "Microsoft.Compute/galleries"
DEFINITION_TYPE = "Microsoft.Compute/galleries/images"
VERSION_TYPE = "Microsoft.Compute/galleries/images/versions"
# Azure: "^[^_\W][\w-._]{0,79}(?<![-.])$"; galleries take no dashes
_GALLERY_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9_.]{0,78}[A-Za-z0-9_])?$")
_DEFINITION_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,78}[A-Za-z0-9_])?$")
_IDENTIFIER = re.compile(r"^[A-Za-z0-9_.-]*[A-Za-z0-9_-]$")
_VERSION_NAME = re.compile(r"^(\d+)\.(\d+)\.(\d+)$")
MAX_REPLICAS = 100  # regionalReplicaCount and replicaCount: 1 to 100
NESTED = "Can not delete resource before nested resources are deleted."


def version_key(name: str) -> tuple[int, int, int]:
    """Versions order by their three numbers, not as text (1.10.0 after 1.9.0)."""
    match = _VERSION_NAME.fullmatch(name)
    return tuple(int(n) for n in match.groups()) if match else (-1, -1, -1)


def _choice(value, allowed: tuple[str, ...], field: str) -> str:
    for known in allowed:
        if isinstance(value, str) and value.lower() == known.lower():
            return known
    raise InvalidInput("InvalidParameter", f"The value '{value}' of parameter '{field}' is not allowed. Allowed values "
                       f"are {', '.join(allowed)}.", target=field)


def _date(value, field: str, future: bool = False) -> str | None:
    if value is None:
        return None
    try:
        moment = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput("InvalidParameter", f"Could not convert string to DateTimeOffset: {value}. Path "
                           f"'{field}'.", target=field) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    if future and moment <= dt.datetime.now(dt.timezone.utc):
        raise InvalidInput("InvalidParameter", "EndOfLifeDate must be set to a future date.", target=field)
    return moment.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z")


def _boolean(value, field: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise InvalidInput("InvalidParameter", f"The value '{value}' of parameter '{field}' must be true or false.",
                           target=field)
    return value


def _parent_missing(rid: ResourceId) -> NotFound:
    parent = "/".join(name for _, name in rid.segments[:-1])
    return NotFound("ParentResourceNotFound", f"Can not perform requested operation on nested resource. Parent "
                    f"resource '{parent}' not found.")


class Galleries:
    def __init__(self, store: ResourceStore, images: Images, storage: Storage, provider: MachineProvider):
        self.store = store
        self.images = images
        self.storage = storage
        self.provider = provider

    # reading --------------------------------------------------------------------------------

    def get(self, rid: ResourceId) -> Resource:
        return get_or_404(self.store, rid)

    def children(self, parent: ResourceId | str, type_: str) -> list[Resource]:
        parent = str(parent)
        rid = parse(parent)
        prefix = parent.lower() + "/"
        return [r for r in self.store.list(type=type_, subscription=rid.subscription, resource_group=rid.resource_group)
                if r.id.lower().startswith(prefix)]

    def list(self, subscription: str, resource_group: str | None) -> list[Resource]:
        return self.store.list(type=GALLERY_TYPE, subscription=subscription, resource_group=resource_group)

    def list_definitions(self, gallery: ResourceId) -> list[Resource]:
        self.get(gallery)
        return self.children(gallery, DEFINITION_TYPE)

    def list_versions(self, definition: ResourceId) -> list[Resource]:
        self.get(definition)
        return sorted(self.children(definition, VERSION_TYPE), key=lambda v: version_key(v.name))

    def version_body(self, version: Resource, expand: str | None) -> dict:
        """replicationStatus is shown only when asked for (`$expand=ReplicationStatus`), as Azure does."""
        body = dict(version.body)
        if (expand or "").lower() != "replicationstatus":
            body["properties"] = {k: v for k, v in version.properties.items() if k != "replicationStatus"}
        return body

    # galleries ------------------------------------------------------------------------------

    def create_or_update_gallery(self, rid: ResourceId, body: dict) -> tuple[Resource, bool]:
        if not _GALLERY_NAME.fullmatch(rid.name):
            raise InvalidInput("InvalidParameter", "Gallery name is invalid. Allowed characters are English "
                               "alphanumeric characters, with underscores, and periods allowed in the middle, up to "
                               "80 characters total. All other special characters, including dashes, are "
                               "disallowed.", target="galleryName")
        body = require_object(body, "body")
        props = optional_object(body.get("properties"), "properties")
        existing = self.store.get(str(rid))
        if existing is not None:
            self._same_location(existing, body, rid)
            if "description" in props:
                existing.properties["description"] = props["description"]
            if "tags" in body:
                existing.body["tags"] = check_tags(body["tags"])
            return self.store.put(existing), False
        location = normalize_location(body.get("location"))
        properties = {"identifier": {"uniqueName": f"{rid.subscription}-{rid.name.upper()}"},
                      "provisioningState": "Succeeded"}
        if props.get("description") is not None:
            properties["description"] = str(props["description"])
        return self.store.put(new_resource(rid, location, properties, check_tags(body.get("tags")))), True

    def update_gallery(self, rid: ResourceId, body: dict) -> tuple[Resource, bool]:
        """PATCH: the gallery must exist (a PUT may create it)."""
        get_or_404(self.store, rid)
        return self.create_or_update_gallery(rid, body)

    def delete_gallery(self, rid: ResourceId) -> bool:
        return self._delete_empty(rid, DEFINITION_TYPE)

    # definitions ----------------------------------------------------------------------------

    def create_or_update_definition(self, rid: ResourceId, body: dict) -> tuple[Resource, bool]:
        if not _DEFINITION_NAME.fullmatch(rid.name):
            raise InvalidInput("InvalidParameter", f"The entity name '{rid.name}' is invalid according to its "
                               "validation rule: ^[^_\\W][\\w-._]{0,79}(?<![-.])$.", target="galleryImageName")
        if self.store.get(str(rid.parent)) is None:
            raise _parent_missing(rid)
        body = require_object(body, "body")
        props = require_object(body.get("properties"), "properties")
        identifier = require_object(props.get("identifier"), "properties.identifier")
        ident = {}
        for part, limit in (("publisher", 128), ("offer", 64), ("sku", 64)):
            value = identifier.get(part)
            if not isinstance(value, str) or not value or len(value) > limit or not _IDENTIFIER.fullmatch(value):
                raise InvalidInput("InvalidParameter", f"Asset name galleryImage.properties.identifier.{part} is not "
                                   "valid. It cannot be empty. Allowed characters are uppercase or lowercase letters, "
                                   "digits, hyphen(-), period (.), underscore (_). Names are not allowed to end with "
                                   f"period(.). The length of the name cannot exceed {limit} characters.",
                                   target=f"properties.identifier.{part}")
            ident[part] = value
        fixed = {
            "osType": _os_type(props.get("osType"), "properties.osType"),
            "osState": _choice(props.get("osState"), ("Generalized", "Specialized"), "properties.osState"),
            "hyperVGeneration": _choice(props.get("hyperVGeneration") or "V1", ("V1", "V2"),
                                        "properties.hyperVGeneration"),
            "identifier": ident,
        }
        if fixed["osType"] is None:
            raise InvalidInput("InvalidParameter", "Required parameter 'osType' is missing (null).",
                               target="properties.osType")
        existing = self.store.get(str(rid))
        if existing is not None:
            self._same_location(existing, body, rid)
            for name, value in fixed.items():
                if existing.properties[name] != value:
                    raise Conflict("PropertyChangeNotAllowed", f"Changing property 'galleryImage.properties.{name}' "
                                   "is not allowed.", target=f"properties.{name}")
        for other in self.children(rid.parent, DEFINITION_TYPE):
            if other.id.lower() != str(rid).lower() and \
                    {k: v.lower() for k, v in other.properties["identifier"].items()} == \
                    {k: v.lower() for k, v in ident.items()}:
                raise Conflict("Conflict", f"Gallery image: {rid.name} identified by (publisher:{ident['publisher']}, "
                               f"offer:{ident['offer']}, sku:{ident['sku']}) already exists. Choose a different "
                               "publisher, offer, sku combination.")
        properties = {**fixed, "architecture": _choice(props.get("architecture") or "x64", ("x64", "Arm64"),
                                                       "properties.architecture"),
                      "provisioningState": "Succeeded"}
        for name in ("description", "eula", "privacyStatementUri", "releaseNoteUri", "recommended", "features"):
            if props.get(name) is not None:
                properties[name] = props[name]
        if props.get("endOfLifeDate") is not None:
            properties["endOfLifeDate"] = _date(props["endOfLifeDate"], "properties.endOfLifeDate")
        if existing is not None:
            existing.body["properties"] = properties
            if "tags" in body:
                existing.body["tags"] = check_tags(body["tags"])
            return self.store.put(existing), False
        location = normalize_location(body.get("location"))
        return self.store.put(new_resource(rid, location, properties, check_tags(body.get("tags")))), True

    def delete_definition(self, rid: ResourceId) -> bool:
        return self._delete_empty(rid, VERSION_TYPE)

    def _delete_empty(self, rid: ResourceId, child_type: str) -> bool:
        """Azure refuses to delete a gallery or definition that still has children."""
        resource = self.store.get(str(rid))
        if resource is None:
            return False
        if self.children(rid, child_type):
            raise Conflict("CannotDeleteResource", NESTED)
        return self.store.delete(resource.id)

    # versions -------------------------------------------------------------------------------

    def create_or_update_version(self, rid: ResourceId, body: dict) -> tuple[Resource, bool]:
        if not _VERSION_NAME.fullmatch(rid.name) or max(version_key(rid.name)) > 2**31 - 1:
            raise InvalidInput("InvalidParameter", f"The gallery image version name '{rid.name}' is invalid: it must "
                               "be Major(int32).Minor(int32).Patch(int32), e.g. 1.0.0.",
                               target="galleryImageVersionName")
        definition = self.store.get(str(rid.parent))
        if definition is None:
            raise _parent_missing(rid)
        body = require_object(body, "body")
        props = require_object(body.get("properties"), "properties")
        existing = self.store.get(str(rid))
        if existing is not None:
            return self._update_version(existing, body, props), False
        location = normalize_location(body.get("location"))
        publishing = self._publishing(optional_object(props.get("publishingProfile"), "properties.publishingProfile"),
                                      location, None)
        with self.storage.lock:
            storage_profile, internal = self._content(rid, location, definition,
                                                      require_object(props.get("storageProfile"),
                                                                     "properties.storageProfile"))
            safety = {"allowDeletionOfReplicatedLocations": True, "reportedForPolicyViolation": False}
            properties = {"publishingProfile": publishing, "storageProfile": storage_profile,
                          "provisioningState": "Creating", "safetyProfile": safety}
            version = new_resource(rid, location, properties, check_tags(body.get("tags")), internal=internal)
            self.store.put(version)
        return self._replicate(version), True

    def update_version(self, rid: ResourceId, body: dict) -> Resource:
        """PATCH: the publishing profile (regions, replica counts, excludeFromLatest,
        endOfLifeDate) and tags change; the content never does."""
        version = get_or_404(self.store, rid)
        body = require_object(body, "body")
        return self._update_version(version, body, optional_object(body.get("properties"), "properties"))

    def _update_version(self, version: Resource, body: dict, props: dict) -> Resource:
        self._same_location(version, body, parse(version.id))
        profile = props.get("storageProfile")
        if profile is not None and self._sources(profile) != self._sources(version.properties["storageProfile"]):
            raise Conflict("PropertyChangeNotAllowed", "Changing property 'galleryImageVersion.properties."
                           "storageProfile.osDiskImage.source.id' is not allowed.",
                           target="properties.storageProfile")
        if props.get("publishingProfile") is not None:
            version.properties["publishingProfile"] = self._publishing(
                require_object(props["publishingProfile"], "properties.publishingProfile"),
                version.body["location"], version.properties["publishingProfile"])
        if "tags" in body:
            version.body["tags"] = check_tags(body["tags"])
        self.store.put(version)
        return self._replicate(version)

    @staticmethod
    def _sources(profile: dict) -> set[str]:
        """The ids a storage profile takes its content from (the image, or each disk's)."""
        profile = profile if isinstance(profile, dict) else {}
        data = profile.get("dataDiskImages")
        entries = [profile, profile.get("osDiskImage"), *(data if isinstance(data, list) else [])]
        refs = [entry.get("source") for entry in entries if isinstance(entry, dict)]
        return {str(ref.get("id")).lower() for ref in refs if isinstance(ref, dict) and ref.get("id")}

    def _publishing(self, given: dict, location: str, before: dict | None) -> dict:
        field = "properties.publishingProfile"
        before = before or {}
        count = given.get("replicaCount", before.get("replicaCount", 1))
        count = int_field(count, f"{field}.replicaCount", 1, MAX_REPLICAS)
        regions_given = given.get("targetRegions")
        if regions_given is None:
            regions = before.get("targetRegions") or [{"name": location, "regionalReplicaCount": count,
                                                       "storageAccountType": "Standard_LRS",
                                                       "excludeFromLatest": False}]
        else:
            if not isinstance(regions_given, list) or not regions_given:
                raise InvalidInput("InvalidParameter", "targetRegions must be a non-empty list.",
                                   target=f"{field}.targetRegions")
            regions = []
            for i, region in enumerate(regions_given):
                region = require_object(region, f"{field}.targetRegions[{i}]")
                name = normalize_location(region.get("name"), f"{field}.targetRegions[{i}].name")
                if any(r["name"] == name for r in regions):
                    raise InvalidInput("InvalidParameter", f"The region '{name}' is given twice in targetRegions.",
                                       target=f"{field}.targetRegions[{i}].name")
                replicas = int_field(region.get("regionalReplicaCount", count),
                                     f"{field}.targetRegions[{i}].regionalReplicaCount", 1, MAX_REPLICAS)
                regions.append({"name": name, "regionalReplicaCount": replicas,
                                "storageAccountType": region.get("storageAccountType") or "Standard_LRS",
                                "excludeFromLatest": _boolean(region.get("excludeFromLatest"),
                                                              f"{field}.targetRegions[{i}].excludeFromLatest")})
            if all(r["name"] != location for r in regions):
                raise InvalidInput("InvalidParameter", f"Gallery image version publishing profile regions "
                                   f"'{', '.join(r['name'] for r in regions)}' must contain the location of image "
                                   f"version '{location}'.", target=f"{field}.targetRegions")
        out = {"targetRegions": regions, "replicaCount": count,
               "excludeFromLatest": _boolean(given.get("excludeFromLatest", before.get("excludeFromLatest")),
                                             f"{field}.excludeFromLatest"),
               "publishedDate": before.get("publishedDate") or now_iso(),
               "storageAccountType": given.get("storageAccountType") or before.get("storageAccountType")
               or "Standard_LRS",
               "replicationMode": given.get("replicationMode") or before.get("replicationMode") or "Full"}
        end = given.get("endOfLifeDate", before.get("endOfLifeDate"))
        if end is not None:
            out["endOfLifeDate"] = _date(end, f"{field}.endOfLifeDate", future="endOfLifeDate" in given)
        return out

    def _content(self, rid: ResourceId, location: str, definition: Resource, profile: dict) -> tuple[dict, dict]:
        """(storageProfile as shown, internal: layers by disk, lineage) from a managed image or
        from disks and snapshots."""
        field = "properties.storageProfile"
        os_type, os_state = definition.properties["osType"], definition.properties["osState"]
        source = optional_object(profile.get("source"), f"{field}.source")
        if source.get("virtualMachineId"):
            raise InvalidInput("OperationNotAllowed", "Versions from a virtual machine are not supported here; "
                               "capture the machine as a managed image or snapshot its disks.",
                               target=f"{field}.source.virtualMachineId")
        if source.get("id"):
            image = self._source(source["id"], (IMAGE_TYPE,), location, f"{field}.source.id",
                                 "must either be a managed image, virtual machine or another gallery image version")
            image_os = image.properties["storageProfile"]["osDisk"]
            if image_os.get("osState", "Generalized") != os_state:
                raise Conflict("OperationNotAllowed", f"Cannot create Gallery Image Version from: {image.id} since "
                               f"the OS State in the parent gallery image ({os_state}) is not "
                               f"{image_os.get('osState')}.")
            internal = {k: image.internal[k] for k in ("os_layers", "data_layers", "layers", "extensions_installed")}
            internal["source_snapshots"] = [image.id.lower(), *image.internal.get("source_snapshots", [])]
            os_size = image_os.get("diskSizeGB") or 30
            data = [{"lun": d["lun"], "sizeInGB": d.get("diskSizeGB") or 32, "hostCaching": "None"}
                    for d in image.properties["storageProfile"].get("dataDisks", [])]
            shown = {"source": {"id": image.id}, "osDiskImage": {"sizeInGB": os_size, "hostCaching": "ReadWrite"},
                     "dataDiskImages": data}
        else:
            shown, internal = self._from_disks(profile, location, field)
        internal.update({"os_type": os_type, "os_state": os_state})
        return shown, internal

    def _from_disks(self, profile: dict, location: str, field: str) -> tuple[dict, dict]:
        os_image = require_object(profile.get("osDiskImage"), f"{field}.osDiskImage")
        seen = set()

        def disk_source(entry: dict, where: str) -> Resource:
            ref = require_object(entry.get("source"), f"{where}.source")
            found = self._source(ref.get("id"), (SNAPSHOT_TYPE, DISK_TYPE), location, f"{where}.source.id",
                                 "must be a managed disk or snapshot")
            if found.id.lower() in seen:
                raise InvalidInput("InvalidParameter", "Duplicated source ids are found in the input disks. Source "
                                   "id should be unique for each disk.", target=f"{where}.source.id")
            seen.add(found.id.lower())
            return found

        os_source = disk_source(os_image, f"{field}.osDiskImage")
        os_layers = self.images.disks.content_of(os_source)
        lineage = list(self.images.disks.lineage(os_source))
        data_layers, data_shown = {}, []
        for i, entry in enumerate(optional_list(profile.get("dataDiskImages"), f"{field}.dataDiskImages")):
            where = f"{field}.dataDiskImages[{i}]"
            entry = require_object(entry, where)
            lun = int_field(entry.get("lun"), f"{where}.lun", 0, 63)
            if str(lun) in data_layers:
                raise InvalidInput("InvalidParameter", "Duplicated lun numbers have been detected in the input data "
                                   "disks. Lun number must be unique for each data disk.", target=f"{where}.lun")
            source = disk_source(entry, where)
            data_layers[str(lun)] = self.images.disks.content_of(source)
            lineage += self.images.disks.lineage(source)
            data_shown.append({"lun": lun, "sizeInGB": source.properties.get("diskSizeGB") or 32,
                               "hostCaching": entry.get("hostCaching") or "None", "source": {"id": source.id}})
        shown = {"osDiskImage": {"sizeInGB": os_source.properties.get("diskSizeGB") or 30,
                                 "hostCaching": os_image.get("hostCaching") or "ReadWrite",
                                 "source": {"id": os_source.id}},
                 "dataDiskImages": data_shown}
        extensions = bool(os_source.internal.get("extensions_installed"))
        return shown, Images.content_record(os_layers, data_layers, extensions, lineage)

    def _source(self, source_id, types: tuple[str, ...], location: str, field: str, kinds: str) -> Resource:
        rid = parse(source_id, field)
        if rid.type.lower() not in {t.lower() for t in types}:
            raise InvalidInput("InvalidParameter", f"The source id: {source_id} {kinds}.", target=field)
        found = self.store.get(str(rid))
        if found is None or found.body.get("location") != location:
            raise NotFound("NotFound", f"Source {source_id} is not found. Please check source exists, and is in the "
                           "same region as gallery image version being created.", target=field)
        return found

    def _replicate(self, version: Resource) -> Resource:
        """Each target region's replica: on a cluster its layers go to that many hosts now,
        before any pool asks (the regions here are one place: hosts serve every region)."""
        regions = version.properties["publishingProfile"]["targetRegions"]
        replicas = version.internal.setdefault("replicas", {})
        summary, failed = [], False
        for region in regions:
            try:
                hosts = self.provider.replicate(version.internal["layers"], region["regionalReplicaCount"])
                replicas[region["name"]] = {"state": "Completed", "hosts": hosts}
                summary.append({"region": region["name"], "state": "Completed", "details": "", "progress": 100})
            except MachineError as exc:
                failed = True
                replicas[region["name"]] = {"state": "Failed", "hosts": []}
                summary.append({"region": region["name"], "state": "Failed", "details": str(exc), "progress": 0})
        for gone in set(replicas) - {r["name"] for r in regions}:
            del replicas[gone]
        version.properties["replicationStatus"] = {"aggregatedState": "Failed" if failed else "Completed",
                                                   "summary": summary}
        version.properties["provisioningState"] = "Failed" if failed else "Succeeded"
        return self.store.put(version)

    def delete_version(self, rid: ResourceId) -> bool:
        """Pools and machines made from a version keep its layers (as from a managed image)."""
        version = self.store.get(str(rid))
        if version is None:
            return False
        self.store.delete(version.id)
        self.storage.reclaim()
        return True

    def delete_in_group(self, subscription: str, resource_group: str) -> None:
        """The group is going: versions, then definitions, then galleries."""
        for type_ in (VERSION_TYPE, DEFINITION_TYPE, GALLERY_TYPE):
            for resource in self.store.list(type=type_, subscription=subscription, resource_group=resource_group):
                self.store.delete(resource.id)
        self.storage.reclaim()

    @staticmethod
    def _same_location(existing: Resource, body: dict, rid: ResourceId) -> None:
        if "location" in body and normalize_location(body["location"]) != existing.body["location"]:
            raise Conflict("InvalidResourceLocation", f"The resource '{rid.name}' already exists in location "
                           f"'{existing.body['location']}' in resource group '{rid.resource_group}'. A resource with "
                           "the same name cannot be created in location "
                           f"'{normalize_location(body['location'])}'. Please select a new resource name.")
