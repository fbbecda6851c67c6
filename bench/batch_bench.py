"""Batch pool benchmarks against a live server, through the real SDKs. Prints its figures.

- time from create to all nodes idle for pools of 10, 100 and 1,000 nodes, from an image
  holding 1 GiB and from one holding 1 MiB (targets: 100 nodes in under 10 s; image size
  changes it by at most 20%)
- the host memory an idle node costs (target: under 2 MiB): kernel memory (mount
  namespaces, overlay mounts, their dentries and inodes) plus the server's resident memory,
  measured across the 1,000-node pool
- the time for a 2,500-node pool to reach steady state with every node idle (target:
  under 2 minutes)

Usage: bench/batch_bench.py [--sizes 10,100,1000] [--big 2500]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from compute_bench import RG, image_with  # noqa: E402
from conftest import Clients, Server, base_image_reference  # noqa: E402


def meminfo() -> dict[str, int]:
    fields = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        name, value = line.split(":", 1)
        fields[name] = int(value.split()[0]) * 1024
    return fields


def used_by_kernel_and(pid: int) -> int:
    """Bytes of kernel memory that grow with mounts and namespaces, plus the server's RSS."""
    info = meminfo()
    kernel = info["Slab"] + info.get("KernelStack", 0) + info.get("PageTables", 0)
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
    return kernel + rss


def pool_body(pool_id: str, image_id: str, nodes: int) -> dict:
    return {"id": pool_id, "vmSize": "standard_a1_v2", "targetDedicatedNodes": nodes,
            "virtualMachineConfiguration": {"imageReference": {"virtualMachineImageId": image_id},
                                            "nodeAgentSKUId": "batch.node.debian 12"}}


def time_to_idle(batch, pool_id: str, image_id: str, nodes: int) -> float:
    start = time.perf_counter()
    batch.create_pool(pool_body(pool_id, image_id, nodes))
    while True:
        pool = batch.get_pool(pool_id)
        if pool.allocation_state == "steady":
            counts = next(c for c in batch.list_pool_node_counts() if c.pool_id == pool_id)
            if counts.dedicated.idle == nodes:
                return time.perf_counter() - start
        time.sleep(0.2)


def delete(batch, pool_id: str) -> None:
    batch.begin_delete_pool(pool_id, polling_interval=0.2).result()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10,100,1000")
    parser.add_argument("--big", type=int, default=2500)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    with tempfile.TemporaryDirectory(prefix="batchyard-bench-") as tmp:
        server = Server(Path(tmp) / "data")
        info = server.start()
        try:
            # the default 900 dedicated cores would stop the large pools at 900 nodes
            server.set_quotas("devbatch", "--dedicated-cores", str(4 * max(sizes + [args.big])))
            clients = Clients(info)
            c, loc, batch = clients.compute, clients.location, clients.batch
            clients.resource.resource_groups.create_or_update(RG, {"location": loc})
            base = base_image_reference(c, loc)
            images = {"1 GiB": image_with(c, loc, base, "img-1g", 1024), "1 MiB": image_with(c, loc, base, "img-1m", 1)}
            time_to_idle(batch, "warm", images["1 MiB"], 2)
            delete(batch, "warm")
            print(f"{'nodes':>6} {'1 GiB image':>12} {'1 MiB image':>12} {'ratio':>6}")
            per_node_memory = None
            for nodes in sizes:
                times = {}
                for label, image_id in images.items():
                    before = used_by_kernel_and(server.proc.pid)
                    times[label] = time_to_idle(batch, f"p{nodes}", image_id, nodes)
                    if nodes == max(sizes):
                        per_node_memory = (used_by_kernel_and(server.proc.pid) - before) / nodes
                    delete(batch, f"p{nodes}")
                print(f"{nodes:>6} {times['1 GiB']:>10.2f} s {times['1 MiB']:>10.2f} s "
                      f"{times['1 GiB'] / times['1 MiB']:>6.2f}")
            print("targets: 100 nodes idle in under 10 s; ratio within 0.8-1.2")
            if per_node_memory is not None:
                print(f"host memory per idle node (kernel slab/stacks/page tables + server RSS, over {max(sizes)} "
                      f"nodes): {per_node_memory / 1024:.0f} KiB   target < 2048 KiB")
            if args.big:
                elapsed = time_to_idle(batch, "big", images["1 GiB"], args.big)
                print(f"{args.big} nodes from the 1 GiB image: steady and all idle in {elapsed:.1f} s   "
                      f"target < 120 s")
                delete(batch, "big")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
