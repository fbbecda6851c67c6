"""The VM size catalogue (services/batch/vm_sizes.py) as Compute's discovery APIs show it:
`locations/{l}/vmSizes`, resource SKUs (`Microsoft.Compute/skus`) and regional usages.

Cores and memory are the catalogue's; the disk figures follow Azure's common rule for
general-purpose sizes (two data disks and 16 GiB of temporary disk per vCPU, at most 32
disks and 1 TiB) and are descriptive: data disk counts and the temporary disk are not limited here."""

from __future__ import annotations

import re
from collections import Counter

from ..batch.vm_sizes import VmSize, all_sizes, lookup

OS_DISK_MB = 1047552  # Azure's figure for every size: the largest OS disk, 1023 GiB


def family(size: VmSize) -> str:
    """Azure's quota family: 'Standard_D2s_v3' -> 'standardDSv3Family'."""
    body = size.name.removeprefix("Standard_")
    series, _, version = body.partition("_")
    letters = re.sub(r"\d+", "", series).upper()
    return f"standard{letters}{version}Family"


def max_data_disks(size: VmSize) -> int:
    return min(32, max(2, 2 * size.cores))


def resource_disk_mb(size: VmSize) -> int:
    return min(64, size.cores) * 16 * 1024


def vm_size_view(size: VmSize) -> dict:
    return {"name": size.name, "numberOfCores": size.cores, "osDiskSizeInMB": OS_DISK_MB,
            "resourceDiskSizeInMB": resource_disk_mb(size), "memoryInMB": size.memory_mib,
            "maxDataDiskCount": max_data_disks(size)}


def vm_sizes() -> list[dict]:
    return [vm_size_view(s) for s in all_sizes()]


def capabilities(size: VmSize) -> list[dict]:
    """The capability names clients read from a resource SKU (and Batch's virtualMachineSkus)."""
    values = {
        "MaxResourceVolumeMB": resource_disk_mb(size),
        "OSVhdSizeMB": OS_DISK_MB,
        "vCPUs": size.cores,
        "MemoryGB": _gib(size.memory_mib),
        "MaxDataDiskCount": max_data_disks(size),
        "LowPriorityCapable": "True",
        "HyperVGenerations": "V1,V2",
        "vCPUsAvailable": size.cores,
        "CpuArchitectureType": "x64",
        "EphemeralOSDiskSupported": "False",
        "AcceleratedNetworkingEnabled": "False",
    }
    return [{"name": name, "value": str(value)} for name, value in values.items()]


def _gib(memory_mib: int) -> str:
    gib = memory_mib / 1024
    return str(int(gib)) if gib.is_integer() else str(gib)


def resource_skus(locations: list[str]) -> list[dict]:
    """One ResourceSku per size and location, as Compute lists them."""
    return [{"resourceType": "virtualMachines", "name": s.name, "tier": "Standard",
             "size": s.name.removeprefix("Standard_"), "family": family(s), "locations": [location],
             "locationInfo": [{"location": location, "zones": [], "zoneDetails": []}],
             "capabilities": capabilities(s), "restrictions": []}
            for location in locations for s in all_sizes()]


def usages(vms: list[dict], location: str, limit: int) -> list[dict]:
    """Compute's regional usages: vCPUs in use by the VMs of `location` (allocated or not, as
    Azure counts them), in total and per family, against `limit` vCPUs."""
    here = [lookup(vm["properties"]["hardwareProfile"]["vmSize"]) for vm in vms
            if vm.get("location", "").lower() == location.lower()]
    sizes = [s for s in here if s is not None]
    per_family = Counter()
    for s in sizes:
        per_family[family(s)] += s.cores
    rows = [("cores", "Total Regional vCPUs", sum(s.cores for s in sizes), limit),
            ("virtualMachines", "Virtual Machines", len(here), 25000)]
    families = sorted({family(s) for s in all_sizes()})
    rows += [(f, _family_display(f), per_family[f], limit) for f in families]
    return [{"unit": "Count", "currentValue": value, "limit": cap, "name": {"value": name, "localizedValue": text}}
            for name, text, value, cap in rows]


def _family_display(name: str) -> str:
    # 'standardDSv3Family' -> 'Standard DSv3 Family vCPUs', as Azure words it
    return f"Standard {name.removeprefix('standard').removesuffix('Family')} Family vCPUs"
