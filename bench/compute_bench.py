"""Compute benchmarks against a live server, through the real SDKs. Prints its figures.

- time to create 20 VMs from an image holding 1 GiB and from one holding 1 MiB, and the ratio
  (target: ratio <= 1.2, 20 VMs in under 5 s)
- time to snapshot a disk with 1 GiB written
- bytes stored after snapshotting identical content twice (target: stored once)
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from conftest import Clients, Server, base_image_reference, run_script, vm_body  # noqa: E402

RG = "bench"
VMS = 20


def stored_bytes(server: Server) -> int:
    total = 0
    for dirpath, _, files in os.walk(server.data_dir / "runtime" / "layers" / "blobs"):
        total += sum(os.lstat(os.path.join(dirpath, f)).st_blocks * 512 for f in files)
    return total


def image_with(c, location: str, base: dict, name: str, size_mib: int) -> str:
    c.virtual_machines.begin_create_or_update(RG, f"{name}-src", vm_body(location, base)).result()
    run_script(c, RG, f"{name}-src", f"mkdir -p /opt/payload && head -c {size_mib}M /dev/urandom > /opt/payload/blob")
    disk_id = c.virtual_machines.get(RG, f"{name}-src").storage_profile.os_disk.managed_disk.id
    snap = c.snapshots.begin_create_or_update(RG, f"{name}-snap", {"location": location, "properties": {
        "creationData": {"createOption": "Copy", "sourceResourceId": disk_id}}}).result()
    return c.images.begin_create_or_update(RG, name, {"location": location, "properties": {"storageProfile": {
        "osDisk": {"osType": "Linux", "osState": "Generalized", "snapshot": {"id": snap.id}}}}}).result().id


def create_vms(c, location: str, image_id: str, prefix: str) -> float:
    start = time.perf_counter()
    for i in range(VMS):
        c.virtual_machines.begin_create_or_update(RG, f"{prefix}-{i}", vm_body(location, {"id": image_id})).result()
    return time.perf_counter() - start


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="batchyard-bench-") as tmp:
        server = Server(Path(tmp) / "data")
        info = server.start()
        try:
            clients = Clients(info)
            c, loc = clients.compute, clients.location
            clients.resource.resource_groups.create_or_update(RG, {"location": loc})
            base = base_image_reference(c, loc)
            big = image_with(c, loc, base, "img-1g", 1024)
            small = image_with(c, loc, base, "img-1m", 1)
            create_vms(c, loc, small, "warm")  # first-use costs out of the measurement
            t_big = create_vms(c, loc, big, "big")
            t_small = create_vms(c, loc, small, "small")
            print(f"create {VMS} VMs from a 1 GiB image: {t_big:.2f} s")
            print(f"create {VMS} VMs from a 1 MiB image: {t_small:.2f} s")
            print(f"ratio (1 GiB / 1 MiB): {t_big / t_small:.2f}   target <= 1.2; 20 VMs target < 5 s")

            c.virtual_machines.begin_create_or_update(RG, "writer", vm_body(loc, base, data_disks=[
                {"lun": 0, "createOption": "Empty", "diskSizeGB": 2}])).result()
            run_script(c, RG, "writer", "head -c 1G /dev/urandom > /datadisks/lun0/blob")
            data_disk = c.virtual_machines.get(RG, "writer").storage_profile.data_disks[0].managed_disk.id
            before = stored_bytes(server)
            start = time.perf_counter()
            c.snapshots.begin_create_or_update(RG, "snap-1g", {"location": loc, "properties": {
                "creationData": {"createOption": "Copy", "sourceResourceId": data_disk}}}).result()
            t_snap = time.perf_counter() - start
            first = stored_bytes(server) - before
            c.snapshots.begin_create_or_update(RG, "snap-1g-again", {"location": loc, "properties": {
                "creationData": {"createOption": "Copy", "sourceResourceId": data_disk}}}).result()
            second = stored_bytes(server) - before - first
            print(f"snapshot a disk with 1 GiB written: {t_snap:.2f} s")
            print(f"bytes stored by the first snapshot: {first:,}; by an identical second one: {second:,}")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
