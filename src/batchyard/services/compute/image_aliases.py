"""Marketplace image aliases: a user-editable table that lets the references Azure's samples
and tools name (Canonical's Ubuntu offers, Debian, the `microsoft-azure-batch` container
offers, with their `batch.node.*` agent SKUs) stand for images that exist here.

The table is `image-aliases.toml` in the data directory, written with the defaults below
when missing and read again whenever it changes. A broken table is reported in the log and
the last good one stays in force; a broken entry is skipped.
"""

from __future__ import annotations

import logging
import re
import threading
import tomllib
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("batchyard.images")

FILE_NAME = "image-aliases.toml"
HOST = "host"
_IMAGE_ID = re.compile(r"^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.Compute/images/[^/]+$",
                       re.IGNORECASE)

DEFAULT_TABLE = '''\
# Marketplace image aliases: Azure marketplace references that name an image of this service.
# Batchyard re-reads this file whenever it changes. Each [[alias]] has:
#   publisher, offer, sku    the marketplace reference, matched without regard to case
#   version                  optional: the one version it answers to (besides "latest");
#                            without it, the target's version
#   node_agent_sku_id        the Batch node agent SKU a pool must name with it
#   target                   "host" (this host's own OS, read-only), a base image URN
#                            "publisher:offer:sku[:version]" from the image catalog, or a
#                            managed image id "/subscriptions/.../providers/Microsoft.Compute/images/NAME"
#   capabilities             optional: what /supportedimages reports, e.g. ["DockerCompatible"]
# The content is the target's: an Ubuntu reference pointed at "host" runs this host's OS.

[[alias]]
publisher = "canonical"
offer = "0001-com-ubuntu-server-focal"
sku = "20_04-lts"
node_agent_sku_id = "batch.node.ubuntu 20.04"
target = "host"

[[alias]]
publisher = "canonical"
offer = "0001-com-ubuntu-server-jammy"
sku = "22_04-lts"
node_agent_sku_id = "batch.node.ubuntu 22.04"
target = "host"

[[alias]]
publisher = "canonical"
offer = "ubuntu-24_04-lts"
sku = "server"
node_agent_sku_id = "batch.node.ubuntu 24.04"
target = "host"

[[alias]]
publisher = "microsoft-azure-batch"
offer = "ubuntu-server-container"
sku = "20-04-lts"
node_agent_sku_id = "batch.node.ubuntu 20.04"
target = "host"
capabilities = ["DockerCompatible"]

[[alias]]
publisher = "debian"
offer = "debian-11"
sku = "11"
node_agent_sku_id = "batch.node.debian 11"
target = "host"

[[alias]]
publisher = "debian"
offer = "debian-12"
sku = "12"
node_agent_sku_id = "batch.node.debian 12"
target = "host"
'''


@dataclass(frozen=True)
class Alias:
    publisher: str
    offer: str
    sku: str
    version: str | None
    node_agent_sku_id: str
    target: str  # HOST, a base image URN, or a managed image id
    capabilities: tuple[str, ...] = ()

    @property
    def reference(self) -> str:
        return f"{self.publisher}:{self.offer}:{self.sku}:{self.version or 'latest'}"

    @property
    def image_id(self) -> str | None:
        return self.target if self.target.startswith("/") else None


class ImageAliases:
    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()
        self._seen: tuple | None = None  # (mtime_ns, size) of the table in force
        self._aliases: list[Alias] = []

    def ensure_file(self) -> None:
        if not self.path.exists():
            self.path.write_text(DEFAULT_TABLE)

    def current(self) -> list[Alias]:
        try:
            stat = self.path.stat()
            seen = (stat.st_mtime_ns, stat.st_size)
        except FileNotFoundError:
            seen = None
        with self._lock:
            if seen != self._seen:
                self._seen = seen
                self._aliases = self._read() if seen else []
            return list(self._aliases)

    def _read(self) -> list[Alias]:
        try:
            table = tomllib.loads(self.path.read_text())
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            log.error("%s is not valid TOML (%s); keeping the aliases in force", self.path, exc)
            return self._aliases
        entries = table.get("alias", [])
        if not isinstance(entries, list):
            log.error("%s: 'alias' must be an array of tables ([[alias]]); keeping the aliases in force", self.path)
            return self._aliases
        aliases = []
        for number, entry in enumerate(entries, 1):
            try:
                aliases.append(parse_alias(entry))
            except ValueError as exc:
                log.error("%s: alias %d skipped: %s", self.path, number, exc)
        log.info("%d marketplace image aliases from %s", len(aliases), self.path)
        return aliases


def parse_alias(entry) -> Alias:
    if not isinstance(entry, dict):
        raise ValueError("each alias is a table")
    fields = {}
    for key in ("publisher", "offer", "sku", "node_agent_sku_id", "target"):
        value = entry.get(key)
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"'{key}' must be a non-empty string")
        fields[key] = value.strip()
    version = entry.get("version")
    if version is not None and (not isinstance(version, str) or not version.strip()
                                or version.strip().lower() == "latest"):
        raise ValueError("'version' must be a version such as \"1.0.0\" (or be left out)")
    target = fields["target"]
    if target.startswith("/") and not _IMAGE_ID.fullmatch(target):
        raise ValueError(f"target '{target}' is not a managed image id")
    if not target.startswith("/") and target != HOST and len(target.split(":")) not in (3, 4):
        raise ValueError(f"target '{target}' is neither \"host\", a URN publisher:offer:sku[:version] "
                         "nor a managed image id")
    capabilities = entry.get("capabilities", [])
    if not isinstance(capabilities, list) or not all(isinstance(c, str) for c in capabilities):
        raise ValueError("'capabilities' must be a list of strings")
    unknown = set(entry) - {"publisher", "offer", "sku", "version", "node_agent_sku_id", "target", "capabilities"}
    if unknown:
        raise ValueError(f"unknown keys: {', '.join(sorted(unknown))}")
    return Alias(fields["publisher"], fields["offer"], fields["sku"], version.strip() if version else None,
                 fields["node_agent_sku_id"], target, tuple(capabilities))
