"""A full disk under the data directory: writes are answered with a retryable Azure error,
never a 500, and deletes still go through so the space can be freed."""

from __future__ import annotations

import errno
import subprocess

import pytest
from azure.batch import BatchClient
from azure.core.credentials import AzureNamedKeyCredential
from azure.core.exceptions import HttpResponseError
from azure.mgmt.resource.resources import ResourceManagementClient

from conftest import Clients, Server, marketplace_pool, wait_for


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "fs"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=160m,mode=0700", "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(path) -> None:
    """Writes until the file system has no block left."""
    with open(path, "ab", buffering=0) as out:
        chunk = b"\0" * (1 << 20)
        try:
            while True:
                out.write(chunk)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
        try:
            while True:
                out.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC


def test_a_full_disk_gets_server_busy_and_deletes_still_work(small_disk):
    with Server(small_disk / "data") as server:
        info, clients = server.info, Clients(server.info)
        ca = info["ca_bundle"]
        # no retries: the first answer is what is checked
        batch = BatchClient(info["batch_endpoint"], AzureNamedKeyCredential(info["batch_account"],
                            info["batch_account_key"]), connection_verify=ca, retry_total=0)
        arm = ResourceManagementClient(clients.credential, info["subscription_id"], base_url=info["arm_endpoint"],
                                       connection_verify=ca, retry_total=0)
        marketplace_pool(batch, "p")
        assert (small_disk / "data" / "reserve").exists()
        fill(small_disk / "filler")
        padding = [{"name": f"m{i}", "value": "x" * 4000} for i in range(20)]
        made, refusal = [], None
        for index in range(400):  # each job is ~80 KB; the disk is full, so one write soon fails
            try:
                batch.create_job({"id": f"j{index}", "poolInfo": {"poolId": "p"}, "metadata": padding})
                made.append(f"j{index}")
            except HttpResponseError as exc:
                refusal = exc
                break
        assert refusal is not None and refusal.status_code == 503 and refusal.error.code == "ServerBusy"
        assert not (small_disk / "data" / "reserve").exists()  # let go, so that deletes can write
        for job in made:
            batch.begin_delete_job(job, polling_interval=0.1).result()
        assert [j.id for j in batch.list_jobs()] == []
        fill(small_disk / "filler-again")
        arm_refusal = None
        for index in range(400):
            try:
                arm.resource_groups.create_or_update(f"g{index}", {"location": info["location"],
                                                                   "tags": {f"t{i}": "x" * 200 for i in range(40)}})
            except HttpResponseError as exc:
                arm_refusal = exc
                break
        assert arm_refusal is not None and arm_refusal.status_code == 503
        assert arm_refusal.error.code == "ServerBusy"
        (small_disk / "filler").unlink()
        (small_disk / "filler-again").unlink()
        wait_for(lambda: (small_disk / "data" / "reserve").exists(), timeout=30, what="the reserve to be taken again")
        batch.create_job({"id": "after", "poolInfo": {"poolId": "p"}})
        assert batch.get_job("after").id == "after"


def test_task_exits_on_a_full_disk_are_recorded_once_there_is_room(small_disk):
    # the log lives off the small disk: what the service says while it is full must reach it
    with Server(small_disk / "data", log=small_disk.parent / "server.log") as server:
        batch = Clients(server.info).batch_key
        marketplace_pool(batch, "p", "standard_d16s_v3", dedicated=1, taskSlotsPerNode=40)
        wait_for(lambda: [n.state for n in batch.list_nodes("p")] == ["idle"], what="the node")
        batch.create_job({"id": "j", "poolInfo": {"poolId": "p"}})
        # tasks that write nothing, all started before the disk fills: each ends the same way
        # whether the disk is full or not
        batch.create_tasks("j", [{"id": f"t{i}", "commandLine": f"sleep {2 + i % 4}"} for i in range(40)])
        wait_for(lambda: batch.get_job_task_counts("j").task_counts.running == 40, what="every task to run")
        fill(small_disk / "filler")
        # the exits that come now cannot be stored: they wait, and the tasks still show running
        wait_for(lambda: "task exits wait until they can be stored" in server.log.read_text(), timeout=60,
                 what="an exit to find the disk full")
        assert batch.get_job_task_counts("j").task_counts.completed < 40
        (small_disk / "filler").unlink()
        wait_for(lambda: batch.get_job_task_counts("j").task_counts.completed == 40, timeout=60,
                 what="every exit to be recorded")
        tasks = list(batch.list_tasks("j"))
        assert len(tasks) == 40
        unexpected = [(t.id, t.execution_info.exit_code, t.execution_info.retry_count,
                       t.execution_info.requeue_count) for t in tasks
                      if (t.execution_info.exit_code, t.execution_info.retry_count,
                          t.execution_info.requeue_count) != (0, 0, 0)]
        assert unexpected == [], server.log.read_text()[-6000:]


def test_a_machine_agent_outlives_a_full_disk(small_disk):
    """A machine's agent rewrites the machine's /proc/meminfo, a host file under the data
    directory, every second while commands run. On a full disk that write fails: the agent
    must live on, with every command of its machine (it once died there, and each of its
    tasks ended with 137)."""
    from batchyard.runtime.launcher import MemInfo

    counters = small_disk.parent / "cgroup"
    counters.mkdir()
    (counters / "limit").write_text("1073741824\n")
    (counters / "usage").write_text("104857600\n")
    (counters / "stat").write_text("total_cache 0\n")
    shown = small_disk / "meminfo"
    shown.touch()  # empty: no block of its own yet, as such files once were made
    fill(small_disk / "filler")
    meminfo = MemInfo({"file": str(shown), **{k: str(counters / k) for k in ("limit", "usage", "stat")}})
    meminfo.refresh()
    (small_disk / "filler").unlink()
    meminfo.refresh()
    assert "MemTotal:        1048576 kB" in shown.read_text()
