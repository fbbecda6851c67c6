"""What node isolation costs: node start time and task throughput with cgroups, network
namespaces and outbound NAT, with NAT off (BATCHYARD_OUTBOUND_NAT=off), and with all
switched off (BATCHYARD_NODE_CGROUPS=off, BATCHYARD_NODE_NETWORKS=off), each against a
fresh live server, through the real SDKs. Target: isolated no more than 25% slower.

Usage: bench/isolation_bench.py [--nodes 100] [--tasks 5000] [--rounds 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import Clients, Server, base_image_reference  # noqa: E402
from task_bench import make_pool, throughput  # noqa: E402

SETTINGS = {
    "isolated": {"BATCHYARD_OUTBOUND_NAT": "on"},
    "no NAT": {"BATCHYARD_OUTBOUND_NAT": "off"},
    "not isolated": {"BATCHYARD_NODE_CGROUPS": "off", "BATCHYARD_NODE_NETWORKS": "off"},
}


def time_to_idle(batch, compute, location: str, nodes: int) -> float:
    ref = base_image_reference(compute, location)
    image = next(iter(batch.list_supported_images()))
    start = time.perf_counter()
    batch.create_pool({"id": "start", "vmSize": "standard_a1_v2", "targetDedicatedNodes": nodes,
                       "virtualMachineConfiguration": {"imageReference": ref,
                                                       "nodeAgentSKUId": image.node_agent_sku_id}})
    while True:
        counts = next((c for c in batch.list_pool_node_counts() if c.pool_id == "start"), None)
        if counts is not None and counts.dedicated.idle == nodes:
            elapsed = time.perf_counter() - start
            break
        time.sleep(0.1)
    batch.begin_delete_pool("start", polling_interval=0.2).result()
    return elapsed


def measure(env: dict, nodes: int, tasks: int) -> tuple[float, float, str]:
    with tempfile.TemporaryDirectory(prefix="batchyard-bench-") as tmp:
        with Server(Path(tmp) / "data", extra_env=env) as server:
            clients = Clients(server.info)
            banner = next(line for line in server.log.read_text().splitlines() if "machines:" in line)
            idle = time_to_idle(clients.batch_key, clients.compute, clients.location, nodes)
            make_pool(clients.batch_key)
            elapsed = throughput(clients.batch_key, tasks)
            return idle, tasks / elapsed, banner.strip()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=2, help="alternating runs per setting; medians are shown")
    args = parser.parse_args()
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in SETTINGS}
    for _ in range(args.rounds):
        for name, env in SETTINGS.items():
            idle, rate, banner = measure(env, args.nodes, args.tasks)
            print(f"{name:>13}: {args.nodes} nodes idle in {idle:.2f} s; {args.tasks} tasks at {rate:.0f}/s  [{banner}]")
            results[name].append((idle, rate))
    idle = {name: statistics.median(r[0] for r in runs) for name, runs in results.items()}
    rate = {name: statistics.median(r[1] for r in runs) for name, runs in results.items()}
    print()
    print(f"{'':>13}  {args.nodes} nodes to idle   tasks/s")
    for name in SETTINGS:
        print(f"{name:>13}  {idle[name]:>12.2f} s  {rate[name]:>8.0f}")
    for name in ("isolated", "no NAT"):
        print(f"{name} / not isolated: start time x{idle[name] / idle['not isolated']:.2f}, "
              f"throughput x{rate[name] / rate['not isolated']:.2f} (target: start <= 1.25, throughput >= 0.8)")


if __name__ == "__main__":
    main()
