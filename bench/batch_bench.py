"""Batch pool benchmarks against a live server, through the real SDKs. Prints its figures.

- time from create to steady with all nodes idle for pools of 100, 1,000 and 2,500 nodes,
  from an image holding 1 GiB and from one holding 1 MiB, and what a node costs at each
  size: wall-clock time and the server's CPU time (its own and its children's, which load
  from other work on the machine changes far less) per node (targets: 2,500 nodes in
  under 40 s; the cost per node flat within 25% from 100 to 2,500; image size changes the
  time by at most 20%)
- 100 nodes to idle with a start task that sleeps 10 s (target: at most 12 s)
- the host memory an idle node costs (target: under 2 MiB): kernel memory (mount
  namespaces, overlay mounts, their dentries and inodes) plus the server's resident memory,
  measured across the largest pool

The load average is printed with each figure: the machine may be shared.

Usage: bench/batch_bench.py [--sizes 100,1000,2500] [--start-nodes 100] [--one-image]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from cluster_bench import time_to_idle as marketplace_time_to_idle  # noqa: E402
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


def cpu_seconds(pid: int) -> float:
    """CPU time of the process and of its children that ended (user and system)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def load() -> str:
    return f"load {os.getloadavg()[0]:.1f}"


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
        time.sleep(0.05)


def delete(batch, pool_id: str) -> None:
    batch.begin_delete_pool(pool_id, polling_interval=0.2).result()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="100,1000,2500")
    parser.add_argument("--start-nodes", type=int, default=100, help="0: no start-task figure")
    parser.add_argument("--one-image", action="store_true", help="only the 1 GiB image (no image-size ratio)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    with tempfile.TemporaryDirectory(prefix="batchyard-bench-") as tmp:
        server = Server(Path(tmp) / "data")
        info = server.start()
        try:
            # the default 900 dedicated cores would stop the large pools at 900 nodes
            server.set_quotas("devbatch", "--dedicated-cores", str(4 * max(sizes + [args.start_nodes])))
            clients = Clients(info)
            c, loc, batch = clients.compute, clients.location, clients.batch
            clients.resource.resource_groups.create_or_update(RG, {"location": loc})
            base = base_image_reference(c, loc)
            images = {"1 GiB": image_with(c, loc, base, "img-1g", 1024)}
            if not args.one_image:
                images["1 MiB"] = image_with(c, loc, base, "img-1m", 1)
            time_to_idle(batch, "warm", images["1 GiB"], 2)
            delete(batch, "warm")
            time.sleep(6)  # the image builders' command agents leave when idle: their CPU is not a node's
            print(f"{'nodes':>6} {'1 GiB image':>12} {'per node':>9} {'CPU/node':>9} {'1 MiB image':>12} {'ratio':>6}")
            per_node, cpu_per_node, per_node_memory = {}, {}, None
            for nodes in sizes:
                times = {}
                for label, image_id in images.items():
                    before, cpu_before = used_by_kernel_and(server.proc.pid), cpu_seconds(server.proc.pid)
                    times[label] = time_to_idle(batch, f"p{nodes}", image_id, nodes)
                    if label == "1 GiB":
                        cpu_per_node[nodes] = (cpu_seconds(server.proc.pid) - cpu_before) / nodes
                        if nodes == max(sizes):
                            per_node_memory = (used_by_kernel_and(server.proc.pid) - before) / nodes
                    delete(batch, f"p{nodes}")
                per_node[nodes] = times["1 GiB"] / nodes
                small = f"{times['1 MiB']:>10.2f} s {times['1 GiB'] / times['1 MiB']:>6.2f}" if "1 MiB" in times else ""
                print(f"{nodes:>6} {times['1 GiB']:>10.2f} s {1000 * per_node[nodes]:>6.1f} ms "
                      f"{1000 * cpu_per_node[nodes]:>6.1f} ms {small}   {load()}", flush=True)
            if sizes:
                for name, costs in (("time", per_node), ("CPU", cpu_per_node)):
                    print(f"{name} per node at {max(sizes)} nodes / at {min(sizes)}: "
                          f"x{costs[max(sizes)] / costs[min(sizes)]:.2f}")
                print(f"targets: {max(sizes)} nodes in under 40 s; cost per node flat within 25% (x0.75 - x1.25); "
                      "1 GiB / 1 MiB ratio within 0.8-1.2")
            if args.start_nodes:
                started = marketplace_time_to_idle(batch, "boot", args.start_nodes, startTask={
                    "commandLine": "/bin/sh -c 'sleep 10'", "waitForSuccess": True})
                print(f"{args.start_nodes} nodes with a 10 s start task: idle in {started:.1f} s   target <= 12 s   "
                      f"{load()}")
                delete(batch, "boot")
            if per_node_memory is not None:
                print(f"host memory per idle node (kernel slab/stacks/page tables + server RSS, over {max(sizes)} "
                      f"nodes): {per_node_memory / 1024:.0f} KiB   target < 2048 KiB")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
