"""The base images that really exist on this host: its own OS (read-only, masked) and root
filesystems imported from archives. Named in Azure's publisher/offer/sku/version habit,
saying honestly what they are."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ...store.db import Database
from ..errors import InvalidInput, NotFound

PUBLISHER = "batchyard"


@dataclass
class BaseImage:
    publisher: str
    offer: str
    sku: str
    version: str
    layers: list[str]
    os_type: str = "Linux"
    node_agent_sku_id: str = ""
    description: str = ""
    hyper_v_generation: str = "V2"
    tags: dict = field(default_factory=dict)

    @property
    def urn(self) -> str:
        return f"{self.publisher}:{self.offer}:{self.sku}:{self.version}"


def _version_key(version: str) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in version.split("."))


class Catalog:
    def __init__(self, db: Database):
        self.db = db

    def all(self) -> list[BaseImage]:
        return [BaseImage(**item) for item in self.db.get_setting("base_images") or []]

    def register(self, image: BaseImage) -> None:
        images = [i for i in self.all() if i.urn.lower() != image.urn.lower()]
        images.append(image)
        self.db.set_setting("base_images", [asdict(i) for i in images])

    def layers(self) -> list[str]:
        return [layer for image in self.all() for layer in image.layers]

    def publishers(self) -> list[str]:
        return sorted({i.publisher for i in self.all()})

    def offers(self, publisher: str) -> list[str]:
        return sorted({i.offer for i in self.all() if i.publisher.lower() == publisher.lower()})

    def skus(self, publisher: str, offer: str) -> list[str]:
        return sorted({i.sku for i in self.all()
                       if i.publisher.lower() == publisher.lower() and i.offer.lower() == offer.lower()})

    def versions(self, publisher: str, offer: str, sku: str) -> list[BaseImage]:
        found = [i for i in self.all() if (i.publisher.lower(), i.offer.lower(), i.sku.lower())
                 == (publisher.lower(), offer.lower(), sku.lower())]
        return sorted(found, key=lambda i: _version_key(i.version))

    def resolve(self, reference: dict, field: str = "storageProfile.imageReference") -> BaseImage:
        """publisher/offer/sku/version ('latest' allowed) -> the base image."""
        publisher, offer, sku = (reference.get(k) for k in ("publisher", "offer", "sku"))
        version = reference.get("version") or "latest"
        if not all(isinstance(v, str) and v for v in (publisher, offer, sku)) or not isinstance(version, str):
            raise InvalidInput("InvalidParameter", "The image reference must name publisher, offer, sku and version, "
                               "or an image id.", target=field)
        if reference.get("plan") or publisher.lower() not in {p.lower() for p in self.publishers()}:
            raise InvalidInput(
                "VMMarketplaceInvalidInput",
                f"Creating a virtual machine from Marketplace image or a custom image sourced from a Marketplace image "
                f"requires Plan information in the request, and this service offers first-party images only. "
                f"Publisher '{publisher}' has no images here; see the virtual machine images catalog.",
                target=field,
            )
        candidates = self.versions(publisher, offer, sku)
        if version.lower() != "latest":
            candidates = [i for i in candidates if i.version == version]
        if not candidates:
            raise NotFound(
                "PlatformImageNotFound",
                f"The platform image '{publisher}:{offer}:{sku}:{version}' is not available. Verify that all fields in "
                "the storage profile are correct.",
            )
        return candidates[-1]

    def find(self, publisher: str, offer: str, sku: str, version: str) -> BaseImage:
        for image in self.versions(publisher, offer, sku):
            if image.version == version:
                return image
        raise NotFound("ArtifactNotFound", "Artifact: VMImage was not found.")
