"""ARM resource ids: parse, build and validate, case-insensitively as ARM does."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import InvalidInput

_GUIDISH = re.compile(r"^[0-9A-Za-z][0-9A-Za-z-]{0,63}$")
_RG_NAME = re.compile(r"^[-\w._()]{1,90}$")
# Compute names: letters, digits, '.', '_', '-'; start with a letter or digit; end with a
# letter, digit or '_' (Azure's InvalidResourceName rules for disks, snapshots, images, VMs).
_COMPUTE_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,78}[A-Za-z0-9_])?$")


@dataclass(frozen=True)
class ResourceId:
    subscription: str
    resource_group: str | None = None
    provider: str | None = None
    # (type, name) pairs below the provider, e.g. [("virtualMachines", "vm1"), ("extensions", "x")]
    segments: tuple[tuple[str, str], ...] = ()

    @property
    def name(self) -> str:
        if self.segments:
            return self.segments[-1][1]
        return self.resource_group or self.subscription

    @property
    def type(self) -> str:
        if self.provider:
            return "/".join([self.provider] + [t for t, _ in self.segments])
        if self.resource_group:
            return "Microsoft.Resources/resourceGroups"
        return "Microsoft.Resources/subscriptions"

    def __str__(self) -> str:
        out = f"/subscriptions/{self.subscription}"
        if self.resource_group is not None:
            out += f"/resourceGroups/{self.resource_group}"
        if self.provider:
            out += f"/providers/{self.provider}"
            for t, n in self.segments:
                out += f"/{t}/{n}"
        return out

    def child(self, type_: str, name: str) -> "ResourceId":
        return ResourceId(self.subscription, self.resource_group, self.provider, self.segments + ((type_, name),))

    @property
    def parent(self) -> "ResourceId":
        return ResourceId(self.subscription, self.resource_group, self.provider, self.segments[:-1])


def parse(text: str, field: str = "id") -> ResourceId:
    """Parse a full resource id; anything else is InvalidParameter naming the field."""
    parts = text.strip("/").split("/") if isinstance(text, str) else []
    bad = InvalidInput(
        "LinkedInvalidPropertyId",
        f"Property id '{text}' at path '{field}' is invalid. Expect fully qualified resource Id that "
        "start with '/subscriptions/{subscriptionId}' or '/providers/{resourceProviderNamespace}/'.",
        target=field,
    )
    if not isinstance(text, str) or not text.startswith("/") or len(parts) < 2 or parts[0].lower() != "subscriptions":
        raise bad
    sub = parts[1]
    if not _GUIDISH.fullmatch(sub):
        raise bad
    rest = parts[2:]
    if not rest:
        return ResourceId(sub)
    if len(rest) < 2 or rest[0].lower() != "resourcegroups" or not rest[1]:
        raise bad
    rg = rest[1]
    rest = rest[2:]
    if not rest:
        return ResourceId(sub, rg)
    if len(rest) < 4 or rest[0].lower() != "providers" or len(rest[2:]) % 2:
        raise bad
    provider = rest[1]
    pairs = tuple((rest[i], rest[i + 1]) for i in range(2, len(rest), 2))
    if any(not t or not n for t, n in pairs):
        raise bad
    return ResourceId(sub, rg, provider, pairs)


def parse_typed(text: str, resource_type: str, field: str) -> ResourceId:
    """Parse an id that must name a resource of one type (e.g. Microsoft.Compute/snapshots)."""
    rid = parse(text, field)
    if rid.type.lower() != resource_type.lower():
        raise InvalidInput(
            "InvalidParameter",
            f"The value '{text}' of parameter '{field}' is not a valid {resource_type} resource id.",
            target=field,
        )
    return rid


def check_resource_group_name(name: str) -> None:
    if not _RG_NAME.fullmatch(name) or name.endswith("."):
        raise InvalidInput(
            "InvalidResourceGroupName",
            f"Resource group name '{name}' is invalid. It can include alphanumeric, underscore, parentheses, "
            "hyphen, period (except at end), and Unicode characters that match the allowed characters.",
        )


def check_compute_name(name: str, kind: str) -> None:
    if not _COMPUTE_NAME.fullmatch(name):
        raise InvalidInput(
            "InvalidResourceName",
            f"The resource name '{name}' is invalid for a {kind}. It must be 1 to 80 characters of letters, "
            "digits, '.', '_' or '-', start with a letter or digit and end with a letter, digit or '_'.",
            target="name",
        )


SUBNET_TYPE = "Microsoft.Network/virtualNetworks/subnets"


def virtual_network_of(subnet_id: str) -> str:
    """The machines' network of a subnet: one per virtual network (its id in lower case, as
    ARM ids compare), shared by the Batch pools and VMs on any of its subnets."""
    return "vnet:" + subnet_id.lower().rsplit("/subnets/", 1)[0]
