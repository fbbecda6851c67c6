"""What a pool asks for: the create body checked field by field and brought to the wire
shape Batch returns. Rules that need other resources (the image, the account) live in
`pools.py`; this module only reads the request."""

from __future__ import annotations

import ipaddress
import re
from datetime import timedelta

from ..arm_ids import virtual_network_of
from . import batch_input as bi, container_spec
from .durations import format_duration, parse_duration
from .vm_sizes import lookup as lookup_vm_size

POOL_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_TASK_SLOTS = 256
# Azure documents no per-pool node maximum beyond the account's core quotas (its largest
# documented pools, from custom images, hold 2,500 dedicated nodes). A target far beyond
# any quota is refused here rather than accepted and left to fail in the allocator.
MAX_TARGET_NODES = 10_000
# Azure reserves these frontend ports for the Batch service itself.
RESERVED_FRONTEND = range(50000, 55001)
RESERVED_BACKEND = (29876, 29877)
MIN_NAT_RANGE = 40


def pool_id(value) -> str:
    if value is None:
        raise bi.missing("id")
    if not isinstance(value, str) or not POOL_ID.fullmatch(value):
        raise bi.invalid("id", value, "The id may hold letters, digits, hyphens and underscores, "
                                      "at most 64 characters.")
    return value


def vm_size(value) -> str:
    if value is None:
        raise bi.missing("vmSize")
    if not isinstance(value, str) or lookup_vm_size(value) is None:
        raise bi.invalid("vmSize", value, "The vmSize is not a known Azure virtual machine size.")
    return value.lower()


def targets(body: dict) -> tuple[int, int]:
    dedicated = bi.integer(body, "targetDedicatedNodes", minimum=0, maximum=MAX_TARGET_NODES, default=0)
    low_priority = bi.integer(body, "targetLowPriorityNodes", minimum=0, maximum=MAX_TARGET_NODES, default=0)
    return dedicated, low_priority


def resize_timeout(body: dict, minimum: timedelta, field: str = "resizeTimeout") -> timedelta:
    value = body.get("resizeTimeout")
    if value is None:
        return timedelta(minutes=15)
    timeout = parse_duration(value, field)
    if timeout < minimum:
        raise bi.invalid(field, value, f"The resizeTimeout must be at least {format_duration(minimum)}.")
    return timeout


def deallocation_option(body: dict) -> str:
    return bi.choice(body, "nodeDeallocationOption", ("requeue", "terminate", "taskcompletion", "retaineddata"),
                     default="requeue")


# Settings of a pool's virtual machines that change what a node is, and that nodes here do
# not do yet: refused rather than accepted and ignored.
UNHONOURED_VM_SETTINGS = {
    "dataDisks": "Empty data disks on pool nodes are not supported yet; put data disks in the image.",
    "diskEncryptionConfiguration": "Disk encryption of pool nodes is not supported here.",
    "securityProfile": "Security profiles (trusted launch, confidential VMs) are not supported here.",
    "serviceArtifactReference": "Service artifact references are not supported here.",
    "licenseType": "licenseType applies to Windows nodes, which are not supported here.",
}
# Pool settings this service does not do yet (the same rule).
UNHONOURED_POOL_SETTINGS = {
    "mountConfiguration": "Mounting file systems on pool nodes is not supported yet.",
    "upgradePolicy": "OS upgrade policies are not supported here: nodes run the image they were made from.",
    "certificateReferences": "Certificates are not supported here.",
    "userAccounts": "Named user accounts are not supported yet; tasks run as the pool's auto-user.",
    "applicationLicenses": "Licensed applications (rendering software) are not available on nodes here.",
}


def refuse_unhonoured(body: dict) -> None:
    for name, why in UNHONOURED_POOL_SETTINGS.items():
        if body.get(name):
            raise bi.invalid(name, body[name], why)


# What a pool is made with that Azure lets a PATCH change on an empty pool (2025-06-01), and
# that nodes here keep from their pool's creation, each as creation reads it. A change is
# refused, on either plane; the same value sent back (a pool read and sent whole, a template
# deployed again) is not a change.
KEPT_AT_CREATION = {
    "vmSize": lambda spec, cores: vm_size(spec["vmSize"]),
    "virtualMachineConfiguration": lambda spec, cores: vm_configuration(spec),
    "networkConfiguration": lambda spec, cores: network_configuration(spec),
    "taskSlotsPerNode": lambda spec, cores: task_slots(spec, cores),
    "taskSchedulingPolicy": lambda spec, cores: scheduling_policy(spec),
    "userAccounts": lambda spec, cores: bi.array(spec, "userAccounts") or None,  # refused at creation: none kept
    "enableInterNodeCommunication": lambda spec, cores: bi.boolean(spec, "enableInterNodeCommunication",
                                                                   default=False),
}


def changes_kept_at_creation(spec: dict, current: dict) -> list[str]:
    """The properties kept from creation that `spec` gives another value than `current`
    (the pool's body). Both are read as creation reads them now, so a pool made before a
    setting had a default (jobDefaultOrder) compares as if it had it."""
    cores = lookup_vm_size(current["vmSize"]).cores
    return [name for name, read in KEPT_AT_CREATION.items()
            if spec.get(name) is not None and read(spec, cores) != read(current, cores)]


def refuse_changes_kept_at_creation(body: dict, current: dict) -> None:
    """The data plane's refusal (a PATCH): 400 InvalidPropertyValue naming the first one."""
    for name in changes_kept_at_creation(body, current):
        raise bi.invalid(name, body[name], f"A pool's {name} cannot be changed here; create a new pool.")


def resource_tags(body: dict) -> dict | None:
    """Tags Azure puts on a pool's backing resources: recorded and shown (there are none here)."""
    tags = bi.obj(body, "resourceTags")
    for name, value in (tags or {}).items():
        if not isinstance(value, str):
            raise bi.invalid(f"resourceTags.{name}", value, "A tag's value must be a string.")
    return tags or None


def communication_mode(body: dict) -> str | None:
    """How nodes talk to the service: recorded and shown (nodes here reach it one way)."""
    return bi.choice(body, "targetNodeCommunicationMode", ("default", "classic", "simplified"))


def vm_configuration(body: dict) -> dict:
    config = bi.obj(body, "virtualMachineConfiguration", required_=True)
    if body.get("cloudServiceConfiguration") is not None:
        raise bi.invalid("cloudServiceConfiguration", "...", "Cloud service pools are retired; use "
                                                             "virtualMachineConfiguration.")
    field = "virtualMachineConfiguration"
    reference = bi.obj(config, "imageReference", f"{field}.imageReference", required_=True)
    agent = bi.string(config, "nodeAgentSKUId", f"{field}.nodeAgentSKUId", required_=True)
    if config.get("windowsConfiguration") is not None:
        raise bi.invalid(f"{field}.windowsConfiguration", "...", "Windows nodes are not supported here.")
    image = _image_reference(reference, f"{field}.imageReference")
    out = {"imageReference": image, "nodeAgentSKUId": agent}
    containers = container_spec.container_configuration(config, f"{field}.containerConfiguration")
    if containers is not None:
        out["containerConfiguration"] = containers
    for name, why in UNHONOURED_VM_SETTINGS.items():
        if config.get(name):
            raise bi.invalid(f"{field}.{name}", config[name], why)
    # Where a node's disks live and which zone it is placed in: recorded and shown, with
    # nothing to choose between on this service's hosts.
    for recorded in ("nodePlacementConfiguration", "osDisk"):
        if config.get(recorded) is not None:
            out[recorded] = bi.obj(config, recorded, f"{field}.{recorded}")
    if config.get("extensions"):
        raise bi.invalid(f"{field}.extensions", "...", "VM extensions on pool nodes are not supported here.")
    return out


def _image_reference(reference: dict, field: str) -> dict:
    image_id = bi.string(reference, "virtualMachineImageId", f"{field}.virtualMachineImageId")
    for gallery in ("sharedGalleryImageId", "communityGalleryImageId"):
        if reference.get(gallery) is not None:
            raise bi.invalid(f"{field}.{gallery}", reference[gallery], "Gallery images are not supported yet.")
    marketplace = {k: reference.get(k) for k in ("publisher", "offer", "sku", "version") if reference.get(k)}
    if image_id and marketplace:
        raise bi.invalid(field, "...", "Give either virtualMachineImageId or publisher, offer and sku, not both.")
    if image_id:
        return {"virtualMachineImageId": image_id}
    for key in ("publisher", "offer", "sku"):
        bi.string(reference, key, f"{field}.{key}", required_=True)
    return {**marketplace, "version": marketplace.get("version") or "latest"}


def start_task(body: dict, field: str = "startTask") -> dict | None:
    task = bi.obj(body, "startTask", field)
    if task is None:
        return None
    command = bi.string(task, "commandLine", f"{field}.commandLine", required_=True, max_len=8192)
    out = {
        "commandLine": command,
        "maxTaskRetryCount": bi.integer(task, "maxTaskRetryCount", f"{field}.maxTaskRetryCount", minimum=-1,
                                        maximum=100, default=0),
        "waitForSuccess": bi.boolean(task, "waitForSuccess", f"{field}.waitForSuccess", default=True),
        "environmentSettings": bi.name_value_pairs(task, "environmentSettings", f"{field}.environmentSettings"),
        "userIdentity": user_identity(task, f"{field}.userIdentity"),
    }
    from .task_spec import resource_files  # task_spec builds on this module
    files = resource_files(task, f"{field}.resourceFiles")
    if files:
        out["resourceFiles"] = files
    container = container_spec.container_settings(task, field)
    if container is not None:
        out["containerSettings"] = container
    return out


def user_identity(body: dict, field: str) -> dict:
    identity = bi.obj(body, "userIdentity", field) or {}
    if identity.get("username") is not None:
        raise bi.invalid(f"{field}.username", identity["username"], "Named user accounts are not supported yet; "
                                                                    "use autoUser.")
    auto = bi.obj(identity, "autoUser", f"{field}.autoUser") or {}
    scope = bi.choice(auto, "scope", ("task", "pool"), f"{field}.autoUser.scope", default="pool")
    elevation = bi.choice(auto, "elevationLevel", ("nonadmin", "admin"), f"{field}.autoUser.elevationLevel",
                          default="nonadmin")
    return {"autoUser": {"scope": scope, "elevationLevel": elevation}}


def task_slots(body: dict, cores: int) -> int:
    # Azure allows up to 4 times the node's cores, and never more than 256.
    limit = min(MAX_TASK_SLOTS, 4 * cores)
    return bi.integer(body, "taskSlotsPerNode", minimum=1, maximum=limit, default=1)


def scheduling_policy(body: dict) -> dict:
    policy = bi.obj(body, "taskSchedulingPolicy") or {}
    fill = bi.choice(policy, "nodeFillType", ("spread", "pack"), "taskSchedulingPolicy.nodeFillType",
                     default="spread")
    # none: jobs of equal priority share the pool evenly; creationtime: the older first
    order = bi.choice(policy, "jobDefaultOrder", ("none", "creationtime"), "taskSchedulingPolicy.jobDefaultOrder",
                      default="none")
    return {"nodeFillType": fill, "jobDefaultOrder": order}


def network_configuration(body: dict) -> dict | None:
    network = bi.obj(body, "networkConfiguration")
    if network is None:
        return None
    endpoint = bi.obj(network, "endpointConfiguration", "networkConfiguration.endpointConfiguration")
    _refuse_unhonoured_network(network)
    out = {k: v for k, v in network.items() if k != "endpointConfiguration"}
    if network.get("subnetId") is not None:
        out["subnetId"] = subnet_id(network["subnetId"])
    if endpoint is not None:
        field = "networkConfiguration.endpointConfiguration.inboundNATPools"
        pools = bi.array(endpoint, "inboundNATPools", field, max_items=5)
        out["endpointConfiguration"] = {"inboundNATPools": [_nat_pool(p, f"{field}[{i}]", pools[:i])
                                                            for i, p in enumerate(pools)]}
    return out


# A pool's networkConfiguration: what is honoured (subnetId, endpointConfiguration) and
# what is recorded and shown, with no effect a node could notice here (README).
NETWORK_SETTINGS = ("subnetId", "endpointConfiguration", "publicIPAddressConfiguration",
                    "enableAcceleratedNetworking", "dynamicVNetAssignmentScope")


def _refuse_unhonoured_network(network: dict) -> None:
    """Settings that would change how nodes are reached, and unknown ones: refused, not kept."""
    for name in network:
        if name not in NETWORK_SETTINGS:
            raise bi.invalid(f"networkConfiguration.{name}", network[name],
                             "Not a network setting of a pool; known: " + ", ".join(NETWORK_SETTINGS) + ".")
    field = "networkConfiguration.publicIPAddressConfiguration"
    public = bi.obj(network, "publicIPAddressConfiguration", field) or {}
    bi.choice(public, "provision", ("batchmanaged", "usermanaged", "nopublicipaddresses"), f"{field}.provision")
    if (public.get("provision") or "").lower() == "usermanaged" or public.get("ipAddressIds"):
        raise bi.invalid(f"{field}.ipAddressIds", public.get("ipAddressIds") or "...",
                         "Public IP addresses of your own are not supported here: nodes are reached through the "
                         "service's host (endpointConfiguration.inboundNATPools).")
    scope = bi.choice(network, "dynamicVNetAssignmentScope", ("none", "job"),
                      "networkConfiguration.dynamicVNetAssignmentScope")
    if scope == "job":
        raise bi.invalid("networkConfiguration.dynamicVNetAssignmentScope", scope,
                         "Jobs with virtual networks of their own are not supported here.")
    bi.boolean(network, "enableAcceleratedNetworking", "networkConfiguration.enableAcceleratedNetworking")


SUBNET_ID = re.compile(r"^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.Network/"
                       r"virtualNetworks/[^/]+/subnets/[^/]+$", re.IGNORECASE)


def subnet_id(value) -> str:
    """An ARM subnet id, as Azure requires it. There is no Microsoft.Network provider here:
    the virtual network is taken by its id alone."""
    if not isinstance(value, str) or not SUBNET_ID.fullmatch(value):
        raise bi.invalid("networkConfiguration.subnetId", value, "The subnetId must be the ARM resource id of a "
                         "subnet: /subscriptions/{subscription}/resourceGroups/{group}/providers/"
                         "Microsoft.Network/virtualNetworks/{vnet}/subnets/{subnet}.")
    return value


def virtual_network(network: dict | None) -> str | None:
    """The network of the virtual network a pool's nodes join, or None for a network of
    the pool's own."""
    subnet = (network or {}).get("subnetId")
    return virtual_network_of(subnet) if subnet else None


def _nat_pool(pool, field: str, earlier: list[dict]) -> dict:
    if not isinstance(pool, dict):
        raise bi.invalid(field, pool, "An object is required.")
    name = bi.string(pool, "name", f"{field}.name", required_=True, max_len=77)
    protocol = bi.choice(pool, "protocol", ("tcp", "udp"), f"{field}.protocol")
    if protocol is None:
        raise bi.missing(f"{field}.protocol")
    backend = bi.integer(pool, "backendPort", f"{field}.backendPort", minimum=1, maximum=65535)
    start = bi.integer(pool, "frontendPortRangeStart", f"{field}.frontendPortRangeStart", minimum=1, maximum=65534)
    end = bi.integer(pool, "frontendPortRangeEnd", f"{field}.frontendPortRangeEnd", minimum=1, maximum=65534)
    for value, key in ((backend, "backendPort"), (start, "frontendPortRangeStart"), (end, "frontendPortRangeEnd")):
        if value is None:
            raise bi.missing(f"{field}.{key}")
    if backend in RESERVED_BACKEND:
        raise bi.invalid(f"{field}.backendPort", backend, "Ports 29876 and 29877 are reserved.")
    if start in RESERVED_FRONTEND or end in RESERVED_FRONTEND or (start < RESERVED_FRONTEND.start and end >= RESERVED_FRONTEND.stop):
        raise bi.invalid(f"{field}.frontendPortRangeStart", start, "Frontend ports 50000 to 55000 are reserved.")
    if end - start + 1 < MIN_NAT_RANGE:
        raise bi.invalid(f"{field}.frontendPortRangeEnd", end,
                         f"The frontend port range must hold at least {MIN_NAT_RANGE} ports.")
    for other in earlier:
        if other["name"].lower() == name.lower():
            raise bi.invalid(f"{field}.name", name, "Inbound NAT pool names must be unique.")
        if start <= other["frontendPortRangeEnd"] and other["frontendPortRangeStart"] <= end:
            raise bi.invalid(f"{field}.frontendPortRangeStart", start, "Frontend port ranges may not overlap.")
    rules_field = f"{field}.networkSecurityGroupRules"
    rules = bi.array(pool, "networkSecurityGroupRules", rules_field, max_items=25)
    rules = [_security_rule(rule, f"{rules_field}[{i}]", rules[:i]) for i, rule in enumerate(rules)]
    return {"name": name, "protocol": protocol, "backendPort": backend, "frontendPortRangeStart": start,
            "frontendPortRangeEnd": end, "networkSecurityGroupRules": rules}


def _security_rule(rule, field: str, earlier: list[dict]) -> dict:
    """A network security group rule as Azure's Batch API documents it."""
    if not isinstance(rule, dict):
        raise bi.invalid(field, rule, "An object is required.")
    priority = bi.integer(rule, "priority", f"{field}.priority", minimum=150, maximum=4096)
    if priority is None:
        raise bi.missing(f"{field}.priority")
    if any(other["priority"] == priority for other in earlier):
        raise bi.invalid(f"{field}.priority", priority, "Priorities within a pool must be unique.")
    access = bi.choice(rule, "access", ("allow", "deny"), f"{field}.access")
    if access is None:
        raise bi.missing(f"{field}.access")
    prefix = bi.string(rule, "sourceAddressPrefix", f"{field}.sourceAddressPrefix", required_=True)
    if prefix != "*":
        try:
            ipaddress.ip_network(prefix, strict=False)
        except ValueError:
            raise bi.invalid(f"{field}.sourceAddressPrefix", prefix, "Give a single IP address, an IP subnet "
                             "(CIDR) or *; service tags are not supported here.") from None
    ports = bi.array(rule, "sourcePortRanges", f"{field}.sourcePortRanges") or ["*"]
    spans = []
    for i, ports_ in enumerate(ports):
        span = _port_range(ports_)
        if span is None or any(s[0] <= span[1] and span[0] <= s[1] for s in spans):
            raise bi.invalid(f"{field}.sourcePortRanges[{i}]", ports_, "Give *, a port (22) or a range (100-200) "
                             "of ports 0 to 65535, not overlapping another entry.")
        spans.append(span)
    return {"priority": priority, "access": access, "sourceAddressPrefix": prefix, "sourcePortRanges": ports}


def _port_range(value) -> tuple[int, int] | None:
    if value == "*":
        return 0, 65535
    match = re.fullmatch(r"(\d{1,5})(?:-(\d{1,5}))?", value) if isinstance(value, str) else None
    if match is None:
        return None
    low, high = int(match[1]), int(match[2] or match[1])
    return (low, high) if low <= high <= 65535 else None


def nat_node_limit(network: dict | None) -> int | None:
    """Each node needs its own frontend port in every inbound NAT pool, so a pool can hold
    no more nodes than its smallest frontend port range has ports."""
    pools = ((network or {}).get("endpointConfiguration") or {}).get("inboundNATPools") or []
    if not pools:
        return None
    return min(p["frontendPortRangeEnd"] - p["frontendPortRangeStart"] + 1 for p in pools)
