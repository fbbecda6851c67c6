"""Start tasks and the Ray provider, against live servers through the real azure-batch client.
Prints, in one run:

- 100 nodes to idle with a start task that sleeps 10 s, on the local provider (target:
  at most 12 s: every node runs its start task at once);
- 1,000 nodes to idle over a Ray cluster of 4 nodes on this machine, and the same on the
  local provider, with the ratio (target: the cluster within 1.5x of local);
- trivial-task throughput (`true`, each a real process) on 4 Ray nodes and locally
  (target: at least 500 tasks/s both).

Every figure is printed as it is measured, with the machine's load average (on a shared
machine the figures mean little without it), then the ratios.

Usage: bench/cluster_bench.py [--start-nodes 100] [--nodes 1000] [--tasks 5000] [--start-only | --ray-only]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from conftest import Clients, Server, pool_settled  # noqa: E402
from ray_local import server_on_ray  # noqa: E402

RAY_NODES = 4


def load() -> str:
    """The machine's load: figures from a shared machine mean little without it."""
    return f"(load average {os.getloadavg()[0]:.1f})"


def pool_body(batch, pool_id: str, nodes: int, **extra) -> dict:
    image = next(iter(batch.list_supported_images()))
    ref = image.image_reference
    return {"id": pool_id, "vmSize": "standard_a1_v2", "targetDedicatedNodes": nodes,
            "virtualMachineConfiguration": {"imageReference": {"publisher": ref.publisher, "offer": ref.offer,
                                                               "sku": ref.sku},
                                            "nodeAgentSKUId": image.node_agent_sku_id}, **extra}


def time_to_idle(batch, pool_id: str, nodes: int, **extra) -> float:
    start = time.perf_counter()
    batch.create_pool(pool_body(batch, pool_id, nodes, **extra))
    while True:
        if batch.get_pool(pool_id).allocation_state == "steady":
            counts = next(c for c in batch.list_pool_node_counts() if c.pool_id == pool_id)
            if counts.dedicated.idle == nodes:
                return time.perf_counter() - start
        time.sleep(0.2)


def throughput(batch, count: int) -> float:
    batch.create_pool(pool_body(batch, "tput", 4, vmSize="standard_d4s_v3", taskSlotsPerNode=16))
    pool_settled(batch, "tput")
    batch.create_job({"id": "tput", "poolInfo": {"poolId": "tput"}})
    start = time.perf_counter()
    batch.create_tasks("tput", [{"id": f"t{i}", "commandLine": "true"} for i in range(count)], max_concurrency=4)
    while batch.get_job_task_counts("tput").task_counts.completed < count:
        time.sleep(0.1)
    elapsed = time.perf_counter() - start
    assert batch.get_job_task_counts("tput").task_counts.succeeded == count
    return count / elapsed


def measure(server: Server, nodes: int, tasks: int) -> tuple[float, float]:
    server.set_quotas("devbatch", "--dedicated-cores", str(8 * nodes))
    batch = Clients(server.info).batch_key
    time_to_idle(batch, "warm", 2)
    batch.begin_delete_pool("warm", polling_interval=0.2).result()
    idle = time_to_idle(batch, "many", nodes)
    batch.begin_delete_pool("many", polling_interval=0.5).result()
    return idle, throughput(batch, tasks)


def local_figures(tmp: Path, args) -> tuple[float, float] | None:
    """The start-task figure, then 1,000 nodes and task throughput on the local provider."""
    with Server(tmp / "local") as server:
        server.set_quotas("devbatch", "--dedicated-cores", str(8 * max(args.nodes, args.start_nodes)))
        batch = Clients(server.info).batch_key
        started = time_to_idle(batch, "boot", args.start_nodes,
                               startTask={"commandLine": "/bin/sh -c 'sleep 10'", "waitForSuccess": True})
        print(f"{args.start_nodes} nodes with a 10 s start task: idle in {started:.1f} s   target <= 12 s   "
              f"{load()}", flush=True)
        batch.begin_delete_pool("boot", polling_interval=0.5).result()
        if args.start_only:
            return None
        idle, rate = measure(server, args.nodes, args.tasks)
        print(f"local: {args.nodes} nodes to idle in {idle:.1f} s, {rate:.0f} tasks/s {load()}", flush=True)
        return idle, rate


def ray_figures(tmp: Path, args) -> tuple[float, float]:
    """The same on a Ray cluster of RAY_NODES nodes on this machine (each with limits and networks)."""
    with server_on_ray(tmp, RAY_NODES) as server:
        idle, rate = measure(server, args.nodes, args.tasks)
        print(f"{RAY_NODES} Ray nodes: {args.nodes} nodes to idle in {idle:.1f} s, {rate:.0f} tasks/s {load()}",
              flush=True)
        return idle, rate


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--start-nodes", type=int, default=100)
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--start-only", action="store_true", help="only the start-task figure")
    parser.add_argument("--ray-only", action="store_true", help="only the Ray cluster's figures")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="batchyard-bench-") as tmp:
        local = None if args.ray_only else local_figures(Path(tmp), args)
        if args.start_only:
            return
        ray_idle, ray_rate = ray_figures(Path(tmp), args)
    if local is not None:
        local_idle, local_rate = local
        print(f"{args.nodes} nodes to idle: local {local_idle:.1f} s, {RAY_NODES} Ray nodes {ray_idle:.1f} s, "
              f"ratio {ray_idle / local_idle:.2f}   target <= 1.5")
        print(f"trivial tasks: local {local_rate:.0f}/s, {RAY_NODES} Ray nodes {ray_rate:.0f}/s   target >= 500/s both")


if __name__ == "__main__":
    main()
