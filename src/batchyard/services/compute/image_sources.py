"""The one reader of custom image ids, for VMs, disks and pools: a managed image
(`.../images/{name}`), a gallery image version (`.../galleries/{g}/images/{def}/versions/
{ver}`) or a gallery image definition (`.../galleries/{g}/images/{def}`: its latest version,
as Azure reads it). Each caller applies its own rules (who may read it, which region) to
what it finds here and words its own errors."""

from __future__ import annotations

from dataclasses import dataclass, field

from ...store.resources import Resource, ResourceStore
from ..arm_ids import parse
from ..errors import InvalidInput
from .galleries import DEFINITION_TYPE, VERSION_TYPE, version_key
from .images import IMAGE_TYPE

KINDS = {IMAGE_TYPE.lower(): "image", VERSION_TYPE.lower(): "version", DEFINITION_TYPE.lower(): "definition"}


@dataclass
class ImageContent:
    named: str  # the id as the caller gave it
    source: Resource  # the managed image or gallery version whose content it is
    kind: str  # image, version or definition
    os_type: str
    os_state: str
    os_disk_gb: int
    data_disk_gb: dict[str, int]  # by LUN
    regions: list[str]  # where machines may be made from it: its location, or its completed replicas
    exact_version: str | None = None
    internal: dict = field(default_factory=dict)

    @property
    def gallery(self) -> bool:
        return self.kind != "image"

    @property
    def os_layers(self) -> list[str]:
        return self.internal["os_layers"]

    @property
    def data_layers(self) -> dict[str, list[str]]:
        return self.internal["data_layers"]

    @property
    def layers(self) -> list[str]:
        return self.internal["layers"]

    @property
    def extensions_installed(self) -> bool:
        return bool(self.internal.get("extensions_installed"))

    @property
    def lineage(self) -> list[str]:
        """What ties pools together for the custom-image limits: the image or version and
        every image and snapshot its content came from."""
        return sorted({self.source.id.lower(), *(s.lower() for s in self.internal.get("source_snapshots", []))})


def kind_of(image_id: str, field: str) -> str:
    """image, version or definition; anything else is refused naming the field."""
    kind = KINDS.get(parse(image_id, field).type.lower())
    if kind is None:
        raise InvalidInput("InvalidParameter", f"The value '{image_id}' of parameter '{field}' is not the id of a "
                           "managed image or of a gallery image definition or version.", target=field)
    return kind


def usable(version: Resource) -> bool:
    """A gallery version makes machines only once provisioned (not while replicating, nor failed)."""
    return version.properties.get("provisioningState") == "Succeeded"


class ImageSources:
    def __init__(self, store: ResourceStore):
        self.store = store

    def find(self, image_id: str, field: str, region: str | None = None) -> ImageContent | None:
        """The content `image_id` stands for, or None when nothing of that id can be used (a
        version still replicating or failed, a definition without a version for `region`)."""
        kind = kind_of(image_id, field)
        if kind == "definition":
            version = self.latest(image_id, region)
        else:
            version = self.store.get(str(parse(image_id, field)))
        if version is None:
            return None
        if kind == "image":
            return _from_image(image_id, version)
        if not usable(version):
            return None
        return _from_version(image_id, kind, version)

    def latest(self, definition_id: str, region: str | None) -> Resource | None:
        """The highest version not excluded from latest (for the region's replica too, when
        `region` is given) that has a completed replica in `region`."""
        prefix = definition_id.lower().rstrip("/") + "/versions/"
        rid = parse(definition_id)
        candidates = []
        for version in self.store.list(type=VERSION_TYPE, subscription=rid.subscription,
                                       resource_group=rid.resource_group):
            if not version.id.lower().startswith(prefix) or not usable(version):
                continue
            publishing = version.properties["publishingProfile"]
            if publishing.get("excludeFromLatest"):
                continue
            if region is not None:
                target = next((t for t in publishing["targetRegions"] if t["name"] == region), None)
                if target is None or target.get("excludeFromLatest") or region not in _replicated(version):
                    continue
            candidates.append(version)
        return max(candidates, key=lambda v: version_key(v.name), default=None)


def _replicated(version: Resource) -> list[str]:
    return [region for region, replica in version.internal.get("replicas", {}).items()
            if replica.get("state") == "Completed"]


def _from_image(named: str, image: Resource) -> ImageContent:
    profile = image.properties["storageProfile"]
    return ImageContent(named=named, source=image, kind="image", os_type=profile["osDisk"]["osType"],
                        os_state=profile["osDisk"].get("osState", "Generalized"),
                        os_disk_gb=profile["osDisk"].get("diskSizeGB") or 30,
                        data_disk_gb={str(d["lun"]): d.get("diskSizeGB") or 32 for d in profile.get("dataDisks", [])},
                        regions=[image.body["location"]], internal=image.internal)


def _from_version(named: str, kind: str, version: Resource) -> ImageContent:
    profile = version.properties["storageProfile"]
    return ImageContent(named=named, source=version, kind=kind, os_type=version.internal["os_type"],
                        os_state=version.internal["os_state"], os_disk_gb=profile["osDiskImage"]["sizeInGB"],
                        data_disk_gb={str(d["lun"]): d["sizeInGB"] for d in profile.get("dataDiskImages", [])},
                        regions=_replicated(version), exact_version=version.name, internal=version.internal)
