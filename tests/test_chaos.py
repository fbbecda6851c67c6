"""Crashes at random moments (issue 14's acceptance): a 5,000-task job and a 300-node resize
while the server is killed with SIGKILL five times, restarted each time on the same data
directory. Then every task completed exactly once as the API reports it, and ran again
only where Azure would have run it again (a task cut short by the crash is requeued and
counted in requeueCount, as for a node that rebooted under it); node counts are exact; the
host holds a machine for every node and nothing else; and once everything is deleted the
data directory is back to its size right after the first start.

The kill schedule comes from a seeded generator, so every run kills at the same moments
after each start (what the server was doing at those moments varies with the machine's
speed; the assertions hold whatever it was).
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections import Counter
from pathlib import Path

from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError

from batchyard.runtime.host import tag
from conftest import Clients, Server, wait_for
from test_batch_pools import base_pool

SEED = 14
KILLS = 5
TASKS = 5000
CHUNK = 100  # tasks per addTaskCollection call, Azure's limit
BIG_POOL = 300
WORK_NODES = 2
# Each task leaves its id in a file of its node's shared directory, appended with one write
# just before it exits: the record of every time it ran to its end.
TASK_COMMAND = "/bin/sh -c 'echo $AZ_BATCH_TASK_ID >> $AZ_BATCH_NODE_SHARED_DIR/ran'"
# SQLite keeps the pages freed by deletes for reuse (no auto_vacuum), so the database's own
# files may stay larger than at the first start; everything else must be back to its size.
DATABASE_FILES = ("batchyard.db", "batchyard.db-wal", "batchyard.db-shm")
# Files rewritten at each start whose size may move by a few bytes (the pid in connection.json).
REWRITTEN = ("connection.json",)


def test_sigkill_five_times_loses_nothing_and_leaves_nothing(tmp_path):
    data = tmp_path / "data"
    server = Server(data)
    rng = random.Random(SEED)
    kill_after = [rng.uniform(0.5, 4.0) for _ in range(KILLS)]
    phases: dict = {}
    try:
        server.start()
        empty = _files(data)
        clients = Clients(server.info)
        server.set_quotas(server.info["batch_account"], "--dedicated-cores", "100000")
        batch = clients.batch_key
        batch.create_pool(base_pool(clients, "work", dedicated=WORK_NODES, vmSize="standard_d16s_v3",
                                    taskSlotsPerNode=64))
        batch.create_pool(base_pool(clients, "big", dedicated=0))
        batch.create_job({"id": "chaos", "poolInfo": {"poolId": "work"}})
        wait_for(lambda: batch.get_pool("big").allocation_state == "steady", what="the empty pool")
        # the resize is asked for here; its end is awaited below, after the crashes
        batch.begin_resize_pool("big", {"targetDedicatedNodes": BIG_POOL}, polling_interval=3600)
        submitter = _Submitter(batch)
        submitter.start()
        for delay in kill_after:
            time.sleep(delay)
            server.proc.kill()  # SIGKILL: nothing is flushed, closed or cleaned up
            server.proc.wait()
            started = time.monotonic()
            server.start()
            phases.setdefault("restarts", []).append(round(time.monotonic() - started, 1))
        submitter.join(timeout=300)
        assert not submitter.is_alive() and submitter.error is None, submitter.error

        started = time.monotonic()
        wait_for(lambda: batch.get_job_task_counts("chaos").task_counts.completed == TASKS, timeout=300,
                 interval=0.5, what="every task to complete")
        phases["tasks after the last start"] = round(time.monotonic() - started, 1)
        _assert_ran_once(batch)
        _assert_node_counts(batch, data)
        assert set(_machine_cgroups(server)) <= set(os.listdir(data / "runtime" / "machines"))
        started = time.monotonic()

        batch.begin_delete_job("chaos", polling_interval=0.2).result()
        for pool in ("work", "big"):
            batch.begin_delete_pool(pool, polling_interval=0.2).result()
        wait_for(lambda: not list(batch.list_pools()), timeout=120, what="the pools to go")
        phases["deleting everything"] = round(time.monotonic() - started, 1)
        _assert_back_to_empty(data, empty)
        assert _machine_cgroups(server) == [], "cgroups of machines that are gone"
        print(f"chaos: seconds {phases}")
    finally:
        server.stop()


class _Submitter(threading.Thread):
    """Adds the job's tasks in chunks of 100 while the server comes and goes. A chunk whose
    answer the crash swallowed is sent again: tasks it had added answer TaskExists."""

    def __init__(self, batch):
        super().__init__(daemon=True)
        self.batch = batch
        self.error: BaseException | None = None
        self.added: set[str] = set()

    def run(self) -> None:
        try:
            for start in range(0, TASKS, CHUNK):
                ids = [f"t{i}" for i in range(start, start + CHUNK)]
                while ids:
                    ids = self._add(ids)
        except BaseException as exc:
            self.error = exc

    def _add(self, ids: list[str]) -> list[str]:
        """Those still to add."""
        try:
            result = self.batch.create_task_collection(
                "chaos", {"value": [{"id": i, "commandLine": TASK_COMMAND} for i in ids]})
        except (ServiceRequestError, ServiceResponseError, HttpResponseError, ConnectionError) as exc:
            if isinstance(exc, HttpResponseError) and exc.status_code not in (None, 500, 502, 503):
                raise
            time.sleep(0.2)  # the server is down: again once it is back
            return ids
        again = []
        for item in result.result_values:
            if item.status == "success" or (item.error is not None and item.error.code == "TaskExists"):
                self.added.add(item.task_id)
            else:
                again.append(item.task_id)
        return again


def _assert_ran_once(batch) -> None:
    tasks = list(batch.list_tasks("chaos"))
    assert len(tasks) == TASKS and len({t.id for t in tasks}) == TASKS
    assert all(t.state == "completed" and t.execution_info.result == "success" and
               t.execution_info.exit_code == 0 and t.execution_info.retry_count == 0 for t in tasks)
    counts = batch.get_job_task_counts("chaos").task_counts
    assert (counts.completed, counts.succeeded, counts.failed, counts.active, counts.running) == (TASKS, TASKS, 0, 0, 0)
    runs = Counter()
    for node in batch.list_nodes("work"):
        content = b"".join(batch.download_node_file("work", node.id, "shared/ran")).decode()
        runs.update(content.split())
    requeued = {t.id: t.execution_info.requeue_count for t in tasks}
    assert set(runs) == set(requeued), "every task ran to its end, and nothing else ran"
    # A task whose command ended while the server was down is recorded as it ended (its
    # machine kept the exit), not run again: Azure reruns only a task cut short (requeued).
    twice = {t: n for t, n in runs.items() if n != 1}
    assert not twice, f"tasks that ran to their end more than once: {twice}"
    print(f"chaos: {sum(1 for n in requeued.values() if n)} tasks requeued (cut short or never started)")


def _assert_node_counts(batch, data: Path) -> None:
    wait_for(lambda: batch.get_pool("big").allocation_state == "steady", timeout=300, interval=0.5,
             what="the resize to end")
    for pool_id, target in (("big", BIG_POOL), ("work", WORK_NODES)):
        pool = batch.get_pool(pool_id)
        assert (pool.current_dedicated_nodes, pool.target_dedicated_nodes) == (target, target)
        assert pool.resize_errors is None or pool.resize_errors == []
        wait_for(lambda: all(n.state == "idle" for n in batch.list_nodes(pool_id)), timeout=120, interval=0.5,
                 what=f"the nodes of {pool_id} to be idle")
        assert len(list(batch.list_nodes(pool_id))) == target
    # one machine and one OS disk on the host for each node, nothing else
    runtime = data / "runtime"
    assert len(_entries(runtime / "machines")) == BIG_POOL + WORK_NODES
    assert len(_entries(runtime / "disks")) == BIG_POOL + WORK_NODES


def _assert_back_to_empty(data: Path, empty: dict[str, int]) -> None:
    runtime = data / "runtime"

    def cleaned() -> bool:
        return not _entries(runtime / "machines") and not _entries(runtime / "disks") and \
            not _entries(runtime / "layers" / "tmp")
    wait_for(cleaned, timeout=60, what="the machines' files to go")
    now = _files(data)
    kept = {p for p in now if Path(p).name not in DATABASE_FILES}
    left = {p: now[p] for p in kept - set(empty)}
    assert not left, f"left behind: {sorted(left)[:20]}"
    changed = {p: (empty[p], now[p]) for p in kept & set(empty)
               if now[p] != empty[p] and Path(p).name not in REWRITTEN}
    assert not changed, f"files whose size changed: {changed}"
    gone = set(empty) - set(now)
    assert not gone, f"files the service had at its first start are gone: {sorted(gone)}"


def _machine_cgroups(server: Server) -> list[str] | None:
    """The cgroups the server holds for its machines (in its memory hierarchy: v1's memory
    controller, or the unified one), named after its data directory (runtime/host.py);
    None when the server has no such hierarchy."""
    name = f"batchyard-{tag(server.data_dir / 'runtime')}"
    for line in Path(f"/proc/{server.proc.pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controllers in ("memory", ""):
            own = Path(path.removesuffix("/batchyard-service"))  # v2 moves the service into a leaf of its own
            base = Path("/sys/fs/cgroup") / ("memory" if controllers else "unified") / own.relative_to("/") / name
            if base.is_dir():
                return sorted(p.name for p in base.iterdir() if p.is_dir())
    return None


def _entries(path: Path) -> list[str]:
    return sorted(os.listdir(path)) if path.is_dir() else []


def _files(root: Path) -> dict[str, int]:
    """Every file and directory under root, with the file's size (0 for directories)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            out[os.path.relpath(os.path.join(dirpath, name), root) + "/"] = 0
        for name in filenames:
            path = os.path.join(dirpath, name)
            out[os.path.relpath(path, root)] = os.lstat(path).st_size
    return out
