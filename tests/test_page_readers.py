"""Pages of tasks, nodes, jobs and pools come from the list readers (api/batch/page_readers.py):
processes of their own, at a lower CPU priority than the service, that read while the
service writes and end with it, however it ends."""

from __future__ import annotations

import os
import signal
import sqlite3
from pathlib import Path

import pytest
from azure.core.exceptions import HttpResponseError

from conftest import Clients, Server, marketplace_pool, wait_for


def readers_of(pid: int) -> list[int]:
    """The service's list readers: its children that run page_readers.reader_main."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid and b"reader_main" in cmdline:
            found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        return "Z" not in Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False


def test_pages_come_from_low_priority_readers_that_read_while_the_service_writes(tmp_path):
    with Server(tmp_path / "data", extra_env={"BATCHYARD_LIST_NICE": "7"}) as server:
        batch = Clients(server.info).batch_key
        marketplace_pool(batch, "p")
        batch.create_job({"id": "j", "poolInfo": {"poolId": "p"}})
        batch.create_tasks("j", [{"id": f"t{i:03}", "commandLine": "true"} for i in range(250)])
        for i in range(12):
            batch.create_job({"id": f"Job{i:02}", "poolInfo": {"poolId": "p"}})
            marketplace_pool(batch, f"Pool{i:02}")
        batch.begin_disable_job("Job05", {"disableTasks": "requeue"}, polling_interval=0.1).result()
        batch.begin_terminate_job("Job07", {"terminateReason": "done"}, polling_interval=0.1).result()
        assert readers_of(server.proc.pid) == []  # started with the first page asked for
        # a page of jobs is a reader's too (jobs and pools were once listed whole in the service)
        assert [j.id for j in next(iter(batch.list_jobs(max_results=2).by_page()))] == ["j", "Job00"]
        assert readers_of(server.proc.pid)

        # another writer holds the database's write lock: pages still come (WAL readers)
        writer = sqlite3.connect(server.data_dir / "batchyard.db", isolation_level=None)
        writer.execute("BEGIN IMMEDIATE")
        try:
            pages = [[t.id for t in page] for page in batch.list_tasks("j", max_results=100).by_page()]
            selected = list(batch.list_tasks("j", filter="state eq 'active' and startswith(id, 't1')",
                                             select=["id", "state"], max_results=30))
            job_pages = [[j.id for j in page] for page in batch.list_jobs(max_results=5).by_page()]
            jobs_chosen = list(batch.list_jobs(filter="startswith(id, 'Job0') and state eq 'active'",
                                               select=["id", "state"], max_results=2))
            pool_pages = [[p.id for p in page] for page in batch.list_pools(max_results=6).by_page()]
            pools_chosen = [p.id for p in batch.list_pools(filter="id eq 'pool11' or id eq 'Pool03'")]
            pool_named = [p.id for p in batch.list_pools(filter="id eq 'POOL07'")]
        finally:
            writer.execute("ROLLBACK")
            writer.close()
        assert [len(p) for p in pages] == [100, 100, 50]
        assert sum(pages, []) == [f"t{i:03}" for i in range(250)]
        assert [t.id for t in selected] == [f"t{i}" for i in range(100, 200)]
        assert {t.state for t in selected} == {"active"} and all(t.command_line is None for t in selected)
        assert list(batch.list_nodes("p")) == []
        jobs = [f"Job{i:02}" for i in range(12)]
        assert job_pages == [["j"] + jobs[:4], jobs[4:9], jobs[9:]]  # in the order of lower-cased ids
        assert [(j.id, j.state) for j in jobs_chosen] == [(i, "active") for i in jobs[:10] if i not in
                                                          ("Job05", "Job07")]
        assert all(j.pool_info is None for j in jobs_chosen)
        assert pool_pages == [["p"] + [f"Pool{i:02}" for i in range(5)], [f"Pool{i:02}" for i in range(5, 11)],
                              ["Pool11"]]
        # Batch compares strings with eq without regard to case: the store's range of
        # lower-cased keys must hold every case of the id
        assert pools_chosen == ["Pool03", "Pool11"] and pool_named == ["Pool07"]

        # a client's mistakes are answered by the service itself, in Batch's shape
        for bad in ({"filter": "state eq"}, {"select": ["id", "", "state"]}):
            with pytest.raises(HttpResponseError) as refused:
                list(batch.list_tasks("j", **bad))
            assert refused.value.status_code == 400
        with pytest.raises(HttpResponseError) as missing:
            list(batch.list_tasks("nope"))
        assert missing.value.status_code == 404 and missing.value.error.code == "JobNotFound"
        with pytest.raises(HttpResponseError) as missing:  # a reader finds no pool of that id either
            list(batch.list_nodes("nope"))
        assert missing.value.status_code == 404 and missing.value.error.code == "PoolNotFound"
        with pytest.raises(HttpResponseError) as missing:  # a pool's id is not a job's
            list(batch.list_tasks("p"))
        assert missing.value.status_code == 404 and missing.value.error.code == "JobNotFound"

        readers = readers_of(server.proc.pid)
        assert readers and all(os.getpriority(os.PRIO_PROCESS, pid) == 7 for pid in readers)
        assert os.getpriority(os.PRIO_PROCESS, server.proc.pid) == 0

        # a reader that dies (killed, out of memory) is replaced: pages keep coming
        for pid in readers:
            os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not any(alive(pid) for pid in readers), timeout=30, what="the readers to end")
        assert len(list(batch.list_tasks("j", max_results=100))) == 250
        replaced = readers_of(server.proc.pid)
        assert replaced and set(replaced).isdisjoint(readers)
        readers = replaced

        # a service that dies takes its readers with it
        os.kill(server.proc.pid, signal.SIGKILL)
        server.proc.wait()
        wait_for(lambda: not any(alive(pid) for pid in readers), timeout=30, what="the readers to end")
        # and a service started again on its data directory has readers of its own (and
        # takes back what the killed one left on the host, its cgroups and NAT table)
        server.start()
        assert [t.id for t in Clients(server.info).batch_key.list_tasks("j", max_results=5)] == \
            [f"t{i:03}" for i in range(250)]
        assert set(readers_of(server.proc.pid)).isdisjoint(readers)
