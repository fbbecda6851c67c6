"""What containers cost: the time to pull and unpack a 200 MB image once (a container pool
whose nodes prefetch it, against the same pool without containers), a second pool of the
same image on the same host (the pull is paid once per host), and then how long a trivial
container task takes from submission to completion against a plain task on the same pool
(target: within 2x). Everything offline: Debian's docker-registry on loopback, the image
built here (busybox-static plus 200 MB of incompressible files) and pushed with skopeo.

Usage: bench/container_bench.py [--megabytes 200] [--tasks 20] [--batch 200]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from conftest import Clients, Server  # noqa: E402
from oci_registry import Registry, busybox_files, write_layout  # noqa: E402
from test_batch_pools import base_pool  # noqa: E402


def pool_to_idle(clients, pool_id: str, nodes: int, image: str | None) -> float:
    body = base_pool(clients, pool_id, nodes, taskSlotsPerNode=4)
    if image:
        body["virtualMachineConfiguration"]["containerConfiguration"] = {"type": "dockerCompatible",
                                                                         "containerImageNames": [image]}
    start = time.perf_counter()
    clients.batch_key.create_pool(body)
    while True:
        nodes_now = list(clients.batch_key.list_nodes(pool_id))
        if len(nodes_now) == nodes and all(n.state == "idle" for n in nodes_now):
            return time.perf_counter() - start
        if any(n.state == "unusable" for n in nodes_now):
            raise RuntimeError(f"pool {pool_id}: {nodes_now[0].errors}")
        time.sleep(0.05)


def one_task(batch, job: str, task_id: str, image: str | None) -> float:
    body = {"id": task_id, "commandLine": "/bin/sh -c 'echo hi'"}
    if image:
        body["containerSettings"] = {"imageName": image}
    start = time.perf_counter()
    batch.create_task(job, body)
    while batch.get_task(job, task_id).state != "completed":
        time.sleep(0.01)
    return time.perf_counter() - start


def many_tasks(batch, job: str, count: int, image: str | None) -> float:
    start = time.perf_counter()
    for first in range(0, count, 100):
        batch.create_task_collection(job, {"value": [
            {"id": f"m{i}", "commandLine": "/bin/sh -c 'echo hi'",
             **({"containerSettings": {"imageName": image}} if image else {})}
            for i in range(first, min(count, first + 100))]})
    while batch.get_job_task_counts(job).task_counts.completed < count:
        time.sleep(0.05)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--megabytes", type=int, default=200)
    parser.add_argument("--tasks", type=int, default=20, help="sequential tasks of each kind, for the latency")
    parser.add_argument("--batch", type=int, default=200, help="tasks of each kind at once, for the throughput")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="batchyard-bench-") as tmp:
        root = Path(tmp)
        registry = Registry(root / "registry")
        try:
            built = time.perf_counter()
            files = {f"data/part{i}": os.urandom(1 << 20) * 1 for i in range(args.megabytes)}
            layout = write_layout(root / "big", [(busybox_files(), "gzip"), (files, "gzip")])
            image = registry.push(layout, "bench/big:1")
            print(f"image built and pushed: {args.megabytes} MB in {time.perf_counter() - built:.1f} s "
                  f"(load average {os.getloadavg()[0]:.1f})")
            with Server(root / "data") as server:
                clients = Clients(server.info)
                plain = pool_to_idle(clients, "plain", 4, None)
                first = pool_to_idle(clients, "containers", 4, image)
                second = pool_to_idle(clients, "again", 4, image)
                print(f"4-node pool to idle: plain {plain:.2f} s; prefetching the image {first:.2f} s "
                      f"(pull and unpack once: {first - plain:.2f} s); a second pool of it {second:.2f} s "
                      f"(pulled once per host)")
                batch = clients.batch_key
                batch.create_job({"id": "latency", "poolInfo": {"poolId": "containers"}})
                plain_times = [one_task(batch, "latency", f"p{i}", None) for i in range(args.tasks)]
                container_times = [one_task(batch, "latency", f"c{i}", image) for i in range(args.tasks)]
                p, c = statistics.median(plain_times), statistics.median(container_times)
                print(f"one task, submission to completion (median of {args.tasks}): plain {p * 1000:.0f} ms, "
                      f"container {c * 1000:.0f} ms (x{c / p:.2f}; target <= x2)")
                batch.create_job({"id": "plain-many", "poolInfo": {"poolId": "containers"}})
                batch.create_job({"id": "container-many", "poolInfo": {"poolId": "containers"}})
                tp = many_tasks(batch, "plain-many", args.batch, None)
                tc = many_tasks(batch, "container-many", args.batch, image)
                print(f"{args.batch} tasks on 4 nodes: plain {args.batch / tp:.0f} tasks/s, container "
                      f"{args.batch / tc:.0f} tasks/s (load average {os.getloadavg()[0]:.1f})")
        finally:
            registry.stop()


if __name__ == "__main__":
    main()
