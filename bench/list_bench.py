"""Listing benchmark: pages of tasks in a large job, through the real azure-batch client
against a live server. Prints its figures.

- a page of 100 tasks in a job of 100,000 (first page, and every page of a full listing),
  median and worst (target: under 50 ms)
- the whole listing of the job, page after page (linear in the job's size, not quadratic)
- a page filtered on state

The job's pool has no nodes, so the tasks stay active and only the listing is measured.

Usage: bench/list_bench.py [--tasks 100000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from conftest import Clients, Server  # noqa: E402

PAGE = 100


def make_job(batch, count: int) -> None:
    image = next(iter(batch.list_supported_images()))
    ref = image.image_reference
    batch.create_pool({"id": "empty", "vmSize": "standard_d2s_v3", "targetDedicatedNodes": 0,
                       "virtualMachineConfiguration": {"imageReference": {"publisher": ref.publisher,
                                                                          "offer": ref.offer, "sku": ref.sku},
                                                       "nodeAgentSKUId": image.node_agent_sku_id}})
    batch.create_job({"id": "big", "poolInfo": {"poolId": "empty"}})
    start = time.perf_counter()
    for first in range(0, count, 10_000):
        batch.create_tasks("big", [{"id": f"task-{i:06d}", "commandLine": "true"}
                                   for i in range(first, min(first + 10_000, count))], max_concurrency=4)
    print(f"made a job of {count} tasks in {time.perf_counter() - start:.1f} s")


def timed_pages(pages) -> list[float]:
    times = []
    while True:
        start = time.perf_counter()
        try:
            page = list(next(pages))
        except StopIteration:
            return times
        times.append(time.perf_counter() - start)
        assert len(page) <= PAGE


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="batchyard-bench-") as tmp, Server(Path(tmp) / "data") as server:
        batch = Clients(server.info).batch_key
        make_job(batch, args.tasks)
        firsts = []
        for _ in range(20):
            start = time.perf_counter()
            assert len(list(next(batch.list_tasks("big", max_results=PAGE).by_page()))) == PAGE
            firsts.append(time.perf_counter() - start)
        print(f"first page of {PAGE} in a job of {args.tasks}: median {statistics.median(firsts) * 1000:.1f} ms, "
              f"worst {max(firsts) * 1000:.1f} ms   target < 50 ms")
        start = time.perf_counter()
        pages = timed_pages(batch.list_tasks("big", max_results=PAGE).by_page())
        total = time.perf_counter() - start
        print(f"every page of the whole listing ({len(pages)} pages): median {statistics.median(pages) * 1000:.1f} ms, "
              f"worst {max(pages) * 1000:.1f} ms; whole listing {total:.1f} s")
        filtered = timed_pages(batch.list_tasks("big", max_results=PAGE, filter="state eq 'active'",
                                                select=["id", "state"]).by_page())
        print(f"pages filtered on state with $select: median {statistics.median(filtered) * 1000:.1f} ms")


if __name__ == "__main__":
    main()
