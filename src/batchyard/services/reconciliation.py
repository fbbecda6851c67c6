"""At start, after a crash: the machines and disks the hosts hold are made to agree with the
records again.

A crash can fall between making a machine or disk and recording it (a managed disk's files
exist before its resource is stored), or between the halves of a delete (a disk resource
goes before its files). The runtime never reads the records, so it cannot tell which of
its machines are still wanted: the service compares the provider's inventory with them.
- A machine or disk that no node, VM or managed disk names is deleted, with its cgroup,
  network address and files.
- A node whose machine is gone is treated as Azure treats a node whose VM was lost:
  unusable, then made again (Allocator.restore_nodes).
- A VM whose machine cannot start again shows as stopped (VirtualMachines.restore).
"""

from __future__ import annotations

import logging

from ..runtime.provider import Inventory, MachineProvider
from ..store.batch_nodes import NodeStore
from ..store.resources import ResourceStore
from .compute.disks import DISK_TYPE, Disks
from .compute.images import VM_TYPE

log = logging.getLogger("batchyard")


def recorded_keys(nodes: NodeStore, store: ResourceStore) -> tuple[set[str], set[str]]:
    """The machines and disks the records name: (machine keys, disk keys)."""
    machines: set[str] = set()
    disks: set[str] = set()
    for node in nodes.all():
        machines.add(node.internal["machine_key"])
        node_disks = node.internal["disks"]
        disks.update([node_disks["os"]["key"], *(d["key"] for d in node_disks["data"].values())])
    machines.update(vm.internal["machine_key"] for vm in store.list(type=VM_TYPE))
    disks.update(d.internal["disk_key"] for d in store.list(type=DISK_TYPE))
    return machines, disks


def remove_unrecorded(provider: MachineProvider, nodes: NodeStore, store: ResourceStore,
                      disks: Disks) -> Inventory | None:
    """Deletes what no record names; returns what remains (None: the provider cannot tell)."""
    machines, disk_keys = recorded_keys(nodes, store)
    disks.remove_unrecorded_uploads(disk_keys)
    held = provider.inventory()
    if held is None:
        return None
    for key in sorted(held.machines - machines):
        log.warning("machine %s belongs to no node or VM (a crash cut its creation or deletion short): deleted", key)
        _delete(provider.delete_machine, key)
    for key in sorted(held.disks - disk_keys):
        log.warning("disk %s belongs to no node or managed disk (a crash cut its creation or deletion short): "
                    "deleted", key)
        _delete(provider.delete_disk, key)
    return Inventory(held.machines & machines, held.disks & disk_keys)


def _delete(delete, key: str) -> None:
    """One leftover that cannot be deleted (its host does not answer, say) keeps no service
    from starting: it is left for the next start."""
    try:
        delete(key)
    except Exception as exc:  # noqa: BLE001 - whatever the provider raised
        log.warning("%s could not be deleted: %s", key, exc)
