"""Azure Compute Gallery image definitions and their versions as the portal offers them (the
Add form's Shared Image choices, the Images page): what ARM's list requests would give the
principal, gallery by gallery and definition by definition, each checked as ARM checks it
(`GET .../galleries`, `.../galleries/{g}/images`, `.../images/{d}/versions`)."""

from __future__ import annotations

from dataclasses import dataclass

from ...services.arm_ids import parse
from ...services.compute.image_sources import usable
from ...store.resources import Resource
from . import access


@dataclass
class GalleryImage:
    gallery: str
    definition: Resource
    versions: list[Resource]  # the usable ones (provisioned), lowest first

    @property
    def name(self) -> str:
        return f"{self.gallery}/{self.definition.name}"

    @property
    def os_type(self) -> str:
        return self.definition.properties.get("osType", "")


def readable(services, caller, subscription: str) -> list[GalleryImage]:
    """The definitions (with their versions) in `subscription` the caller may list, by name."""
    path = f"/subscriptions/{subscription}/providers/Microsoft.Compute/galleries"
    if not access.may(services, caller, "GET", path):
        return []
    found = []
    for gallery in services.galleries.list(subscription, None):
        if not access.may(services, caller, "GET", gallery.id + "/images"):
            continue
        for definition in services.galleries.list_definitions(parse(gallery.id)):
            versions = []
            if access.may(services, caller, "GET", definition.id + "/versions"):
                versions = [v for v in services.galleries.list_versions(parse(definition.id)) if usable(v)]
            found.append(GalleryImage(gallery.name, definition, versions))
    return sorted(found, key=lambda g: g.name.lower())
