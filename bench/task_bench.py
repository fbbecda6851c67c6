"""Task benchmarks against a live server, through the real azure-batch client, with Slurm on
the same machine as the peer. Prints its figures.

- end to end: 10,000 trivial tasks (`true`, each a real process on a node) submitted with
  `create_tasks` (collections of 100) to a 4-node pool, until all are completed, as tasks
  per second (target: at least 500)
- dependency latency: a chain of tasks each depending on the one before; the time from a
  task's end to the start of the next, median and worst (target: under 50 ms)
- the same 10,000-job workload through Slurm (Debian's slurm-wlm, single host, set up by
  ../shared/peers/slurm-bench.sh), and the ratio (target: faster than Slurm)

Usage: bench/task_bench.py [--tasks 10000] [--chain 50] [--no-slurm] [--slurm-array-only]
(Slurm's side takes about 7 minutes for 10,000 jobs, half with --slurm-array-only.)
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
from conftest import Clients, Server, pool_settled  # noqa: E402

NODES = 4
VM_SIZE = "standard_d4s_v3"  # 4 cores: up to 16 task slots a node
SLOTS = 16


def make_pool(batch) -> None:
    image = next(iter(batch.list_supported_images()))
    ref = image.image_reference
    batch.create_pool({"id": "bench", "vmSize": VM_SIZE, "targetDedicatedNodes": NODES, "taskSlotsPerNode": SLOTS,
                       "virtualMachineConfiguration": {"imageReference": {"publisher": ref.publisher,
                                                                          "offer": ref.offer, "sku": ref.sku},
                                                       "nodeAgentSKUId": image.node_agent_sku_id}})
    pool_settled(batch, "bench")


def throughput(batch, count: int) -> float:
    batch.create_job({"id": "throughput", "poolInfo": {"poolId": "bench"}})
    tasks = [{"id": f"t{i}", "commandLine": "true"} for i in range(count)]
    start = time.perf_counter()
    batch.create_tasks("throughput", tasks, max_concurrency=4)
    submitted = time.perf_counter() - start
    while batch.get_job_task_counts("throughput").task_counts.completed < count:
        time.sleep(0.2)
    elapsed = time.perf_counter() - start
    counts = batch.get_job_task_counts("throughput").task_counts
    assert counts.succeeded == count, counts
    print(f"submitted {count} tasks in {submitted:.2f} s ({count / submitted:.0f}/s)")
    return elapsed


def dependency_latency(batch, length: int) -> list[float]:
    batch.create_job({"id": "chain", "poolInfo": {"poolId": "bench"}, "usesTaskDependencies": True})
    tasks = [{"id": "c0", "commandLine": "true"}]
    tasks += [{"id": f"c{i}", "commandLine": "true", "dependsOn": {"taskIds": [f"c{i - 1}"]}}
              for i in range(1, length)]
    batch.create_tasks("chain", tasks)
    while batch.get_job_task_counts("chain").task_counts.completed < length:
        time.sleep(0.2)
    info = {t.id: t.execution_info for t in batch.list_tasks("chain")}
    return [(info[f"c{i}"].start_time - info[f"c{i - 1}"].end_time).total_seconds() for i in range(1, length)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=10000)
    parser.add_argument("--chain", type=int, default=50)
    parser.add_argument("--no-slurm", action="store_true")
    parser.add_argument("--slurm-array-only", action="store_true", help="skip Slurm's loop of sbatch (halves its time)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="batchyard-bench-") as tmp, Server(Path(tmp) / "data") as server:
        batch = Clients(server.info).batch_key
        make_pool(batch)
        elapsed = throughput(batch, args.tasks)
        rate = args.tasks / elapsed
        print(f"Batchyard: {args.tasks} tasks end to end in {elapsed:.2f} s = {rate:.0f} tasks/s   target >= 500")
        gaps = dependency_latency(batch, args.chain)
        print(f"dependency latency over a chain of {args.chain}: median {statistics.median(gaps) * 1000:.1f} ms, "
              f"worst {max(gaps) * 1000:.1f} ms   target < 50 ms")
    if args.no_slurm:
        return
    from slurm_peer import run_slurm
    # A job array is Slurm's match for tasks submitted in collections.
    figures = run_slurm(args.tasks, loop=not args.slurm_array_only, lat=3)
    for variant in ("loop", "array"):
        if figures.get(f"{variant}_end_to_end_per_s"):
            print(f"Slurm {figures['slurm_version']} ({figures['profile']} profile, this machine), {variant}: "
                  f"{args.tasks} jobs end to end in {figures[f'{variant}_end_to_end_s']:.1f} s = "
                  f"{figures[f'{variant}_end_to_end_per_s']:.1f} jobs/s")
    slurm_rate = max(v for k, v in figures.items() if k.endswith("end_to_end_per_s") and v)
    print(f"Slurm single-job latency (submit to completed): median {figures['latency_median_s'] * 1000:.0f} ms")
    print(f"Batchyard / Slurm end-to-end throughput: {rate / slurm_rate:.1f}x   target > 1")


if __name__ == "__main__":
    main()
