"""Pools from a managed image and from a gallery image version, side by side, against live
servers through the real clients. Prints, in one run, for a pool of --nodes (500) nodes:

- time to steady state (create_pool until the pool is steady with every node idle), and
- mean node idle latency (each node's idle time, as the service stamps it, less the pool's
  creation time),

on the local provider and on a Ray cluster of four nodes on this machine (bound to
127.0.0.2, as tests/test_ray_cluster.py starts them), the version replicated to every host
(regionalReplicaCount 4). Target: both well under a minute; the gallery path no slower
locally and faster on the cluster, by the pulls its replicas save.

The two images are made the same way and hold content of the same size: each is a builder
VM's OS disk after writing --payload-mib of random data to /opt/app/blob, snapshotted. They
come from two builders because layers are content-addressed: one content would be pulled
once for both pools and the second pool would find it already there. A warm-up pool from the
base image first puts the base layers on every host, so each measured pool differs from the
other only in how its own layer reaches the hosts.

Usage: bench/gallery_bench.py [--nodes 500] [--payload-mib 128] [--local-only]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from conftest import Clients, Server, base_image_reference, pool_settled, run_script, vm_body  # noqa: E402
from ray_local import server_on_ray  # noqa: E402

RAY_NODES = 4
RG = "bench"


def snapshot_of_builder(clients: Clients, name: str, payload_mib: int) -> str:
    c, loc = clients.compute, clients.location
    vm = c.virtual_machines.begin_create_or_update(RG, name, vm_body(loc, base_image_reference(c, loc))).result()
    run_script(c, RG, name, "mkdir -p /opt/app", f"head -c {payload_mib}M /dev/urandom > /opt/app/blob")
    return c.snapshots.begin_create_or_update(RG, f"{name}-os", {"location": loc, "properties": {"creationData": {
        "createOption": "Copy", "sourceResourceId": vm.storage_profile.os_disk.managed_disk.id}}}).result().id


def make_images(clients: Clients, payload_mib: int, replicas: int) -> tuple[str, str, float]:
    """(managed image id, gallery version id, seconds the version took to make and replicate)."""
    c, loc = clients.compute, clients.location
    clients.resource.resource_groups.create_or_update(RG, {"location": loc})
    managed = c.images.begin_create_or_update(RG, "managed", {"location": loc, "properties": {"storageProfile": {
        "osDisk": {"osType": "Linux", "osState": "Generalized",
                   "snapshot": {"id": snapshot_of_builder(clients, "builder-a", payload_mib)}}}}}).result()
    version_source = snapshot_of_builder(clients, "builder-b", payload_mib)
    c.galleries.begin_create_or_update(RG, "bench", {"location": loc}).result()
    c.gallery_images.begin_create_or_update(RG, "bench", "app", {"location": loc, "properties": {
        "osType": "Linux", "osState": "Generalized",
        "identifier": {"publisher": "bench", "offer": "app", "sku": "1"}}}).result()
    start = time.perf_counter()
    version = c.gallery_image_versions.begin_create_or_update(RG, "bench", "app", "1.0.0", {
        "location": loc, "properties": {
            "storageProfile": {"osDiskImage": {"source": {"id": version_source}}},
            "publishingProfile": {"targetRegions": [{"name": loc, "regionalReplicaCount": replicas}]}}},
        polling_interval=0.5).result()
    return managed.id, version.id, time.perf_counter() - start


def pool_body(pool_id: str, image: dict, nodes: int, agent: str) -> dict:
    return {"id": pool_id, "vmSize": "standard_a1_v2", "targetDedicatedNodes": nodes,
            "virtualMachineConfiguration": {"imageReference": image, "nodeAgentSKUId": agent}}


def stamp(text) -> datetime:
    return text if isinstance(text, datetime) else datetime.fromisoformat(str(text).replace("Z", "+00:00"))


def measure(batch, pool_id: str, image: dict, nodes: int, agent: str) -> tuple[float, float]:
    """(seconds to steady with every node idle, mean node idle latency in seconds)."""
    start = time.perf_counter()
    batch.create_pool(pool_body(pool_id, image, nodes, agent))
    while True:
        if batch.get_pool(pool_id).allocation_state == "steady":
            counts = next(c for c in batch.list_pool_node_counts() if c.pool_id == pool_id)
            if counts.dedicated.idle == nodes:
                break
        time.sleep(0.2)
    steady = time.perf_counter() - start
    created = stamp(batch.get_pool(pool_id).creation_time)
    latency = statistics.mean((stamp(n.state_transition_time) - created).total_seconds()
                              for n in batch.list_nodes(pool_id))
    batch.begin_delete_pool(pool_id, polling_interval=0.5).result()
    return steady, latency


def run(server: Server, nodes: int, payload_mib: int, replicas: int) -> dict:
    server.set_quotas("devbatch", "--dedicated-cores", str(2 * nodes))
    clients = Clients(server.info)
    batch = clients.batch
    supported = next(iter(clients.batch_key.list_supported_images()))
    ref, agent = supported.image_reference, supported.node_agent_sku_id
    base = {"publisher": ref.publisher, "offer": ref.offer, "sku": ref.sku}
    # spread over every host: the base layers reach each once, before anything is measured
    batch.create_pool(pool_body("warm", base, RAY_NODES * 2, agent))
    pool_settled(batch, "warm")
    batch.begin_delete_pool("warm", polling_interval=0.5).result()
    managed, version, replication = make_images(clients, payload_mib, replicas)
    images = {"managed": managed, "gallery": version}
    figures: dict = {"managed": [], "gallery": []}
    # A, B, B, A: each path is measured once in each position (a pool measured just after
    # another one's deletion may pay for its teardown). The second pool from an image finds
    # its layers on the hosts already: on a cluster only the first pays for the pulls.
    for round_, kind in enumerate(("managed", "gallery", "gallery", "managed")):
        figures[kind].append(measure(batch, f"from-{kind}-{round_}", {"virtualMachineImageId": images[kind]},
                                     nodes, agent))
    return {"replication": replication, **figures}


def report(where: str, figures: dict, nodes: int) -> None:
    print(f"{where}, {nodes} nodes (the version was made and replicated in {figures['replication']:.1f} s, "
          "before any pool):")
    for index, label in ((0, "first pool from each image"), (1, "second pool from each (layers already placed)")):
        (m_steady, m_idle), (g_steady, g_idle) = figures["managed"][index], figures["gallery"][index]
        print(f"  {label:46s} managed image: steady {m_steady:5.1f} s, mean idle latency {m_idle:5.1f} s | "
              f"gallery version: steady {g_steady:5.1f} s, mean idle latency {g_idle:5.1f} s | "
              f"gallery/managed {g_steady / m_steady:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=500)
    parser.add_argument("--payload-mib", type=int, default=128)
    parser.add_argument("--local-only", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="batchyard-bench-") as tmp:
        with Server(Path(tmp) / "local") as server:
            local = run(server, args.nodes, args.payload_mib, 1)
        report("local", local, args.nodes)
        if args.local_only:
            return
        with server_on_ray(Path(tmp), RAY_NODES) as server:
            ray = run(server, args.nodes, args.payload_mib, RAY_NODES)
        report(f"{RAY_NODES} Ray nodes", ray, args.nodes)
    print("target: both well under a minute; gallery no slower locally, faster on the cluster")


if __name__ == "__main__":
    main()
