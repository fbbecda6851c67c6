"""The base images that really exist on this host: its own OS (read-only, masked) and root
filesystems imported from archives. Named in Azure's publisher/offer/sku/version habit,
saying honestly what they are. Besides them, the marketplace image aliases
(`image_aliases.py`): Azure's references that stand for one of those or for a managed
image. Every image reference by publisher/offer/sku is resolved here."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from ...store.db import Database
from ..errors import InvalidInput, NotFound
from .image_aliases import FILE_NAME, HOST, Alias, ImageAliases

PUBLISHER = "batchyard"
# What Batch's supported images report for an image whose nodes can run container tasks.
DOCKER_COMPATIBLE = "DockerCompatible"


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
    # Set for an alias of a managed image: its content is that image's (no layers here).
    image_id: str = ""
    capabilities: list[str] = field(default_factory=list)

    @property
    def urn(self) -> str:
        return f"{self.publisher}:{self.offer}:{self.sku}:{self.version}"


def _version_key(version: str) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in version.split("."))


class Catalog:
    def __init__(self, db: Database, aliases: ImageAliases | None = None, containers: bool = False):
        self.db = db
        self.aliases = aliases
        # Whether this host's machines run container tasks: the container agent is the
        # service's own, entering the machine, so every Linux image here can, or none can.
        self.containers = containers

    def bases(self) -> list[BaseImage]:
        """The images registered here, without the aliases."""
        return [BaseImage(**item) for item in self.db.get_setting("base_images") or []]

    def all(self) -> list[BaseImage]:
        """The registered images, then the aliases (the first alias of a reference wins, and
        no alias hides a registered image)."""
        bases = self.bases()
        images = [self._with_containers(b, [DOCKER_COMPATIBLE] if b.os_type.lower() == "linux" else [])
                  for b in bases]
        taken = {b.urn.lower() for b in bases}
        for alias in self.aliases.current() if self.aliases else []:
            entry = self._aliased(alias, bases)
            if entry is not None and entry.urn.lower() not in taken:
                images.append(self._with_containers(entry, entry.capabilities))
                taken.add(entry.urn.lower())
        return images

    def _with_containers(self, image: BaseImage, capabilities: list[str]) -> BaseImage:
        """The image with the capabilities Batch reports for it. An alias says what its Azure
        image reports (Canonical's plain Ubuntu has no container runtime there, so a container
        pool on it is refused as Azure refuses it); no image claims containers the machines
        here cannot run."""
        kept = [c for c in capabilities if self.containers or c.lower() != DOCKER_COMPATIBLE.lower()]
        return image if kept == image.capabilities else replace(image, capabilities=kept)

    def register(self, image: BaseImage) -> None:
        images = [i for i in self.bases() if i.urn.lower() != image.urn.lower()]
        images.append(image)
        self.db.set_setting("base_images", [asdict(i) for i in images])

    def layers(self) -> list[str]:
        return [layer for image in self.bases() for layer in image.layers]

    @staticmethod
    def _aliased(alias: Alias, bases: list[BaseImage]) -> BaseImage | None:
        """The alias as a catalog entry with its target's content; None while the target
        base image is not there."""
        entry = dict(publisher=alias.publisher, offer=alias.offer, sku=alias.sku,
                     node_agent_sku_id=alias.node_agent_sku_id, capabilities=list(alias.capabilities))
        if alias.image_id:
            return BaseImage(**entry, version=alias.version or "1.0.0", layers=[], image_id=alias.image_id,
                             description=f"Alias of the managed image {alias.image_id}")
        target = _alias_target(alias, bases)
        if target is None:
            return None
        return BaseImage(**entry, version=alias.version or target.version, layers=list(target.layers),
                         os_type=target.os_type, hyper_v_generation=target.hyper_v_generation,
                         description=f"Alias of {target.urn}: {target.description}")

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
                f"Publisher '{publisher}' has no images here; see the virtual machine images catalog, or map the "
                f"reference to an image here in {FILE_NAME} in the service's data directory.",
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


def _alias_target(alias: Alias, bases: list[BaseImage]) -> BaseImage | None:
    if alias.target == HOST:
        return next((b for b in bases if b.tags.get("source") == HOST), None)
    publisher, offer, sku, *version = (part.lower() for part in alias.target.split(":"))
    found = sorted((b for b in bases if (b.publisher.lower(), b.offer.lower(), b.sku.lower()) == (publisher, offer, sku)
                    and (not version or version[0] in ("latest", b.version.lower()))),
                   key=lambda b: _version_key(b.version))
    return found[-1] if found else None
