"""Allocation and scheduling rules on the in-memory machine provider (runtime/fake_provider.py):
the real services (pools, allocator, scheduler, SQLite store) with machines that are records
and commands that end with scripted exit codes. No root, no process, no HTTP: each rule in
milliseconds, beside the end-to-end tests that check the same services through the SDKs."""

from __future__ import annotations

import collections
import stat
import threading
import time
from datetime import UTC, datetime

import pytest

from batchyard.bootstrap import build
from batchyard.config import Settings
from batchyard.runtime.fake_provider import FakeProvider, Script
from batchyard.runtime.provider import HostCapacity
from batchyard.services.authorization import Caller
from batchyard.services.batch.accounts import account_id
from batchyard.services.batch.task_users import AUTO_USER_GID, POOL_USER_UID
from conftest import serving, wait_for


def until(condition, timeout: float = 20.0):
    """The allocator and scheduler are background loops: poll them often."""
    return wait_for(condition, timeout, interval=0.005)


class World:
    def __init__(self, tmp_path, provider: FakeProvider, **settings):
        self.provider = provider
        self.services = build(Settings(data_dir=tmp_path, **settings), False, provider)
        self.account = self.services.accounts.by_name("devbatch")
        self.image = self.services.pools.supported_images()[0]

    def pool(self, pool_id: str, dedicated: int = 1, **extra):
        body = {"id": pool_id, "vmSize": "standard_a1_v2", "targetDedicatedNodes": dedicated,
                "virtualMachineConfiguration": {"imageReference": self.image["imageReference"],
                                                "nodeAgentSKUId": self.image["nodeAgentSKUId"]}, **extra}
        return self.services.pools.create(self.account, body, Caller.shared_key())

    def nodes(self, pool_id: str):
        return list(self.services.pools.nodes_in_id_order(self.account, pool_id, None))

    def settled(self, pool_id: str, states=("idle",)):
        def check():
            pool = self.services.pools.get(self.account, pool_id)
            nodes = self.nodes(pool_id)
            return (pool, nodes) if pool.body["allocationState"] == "steady" and \
                all(n.state in states for n in nodes) else None
        return until(check)

    def job(self, job_id: str, pool_id: str, **extra):
        return self.services.jobs.create(self.account, {"id": job_id, "poolInfo": {"poolId": pool_id}, **extra})

    def task(self, job_id: str, task_id: str, command: str, **extra):
        return self.services.tasks.create(self.account, job_id, {"id": task_id, "commandLine": command, **extra})

    def finished(self, job_id: str, task_id: str):
        return until(lambda: (t := self.services.tasks.get(self.account, job_id, task_id)).state == "completed" and t)


@pytest.fixture
def world(tmp_path):
    worlds = []

    def make(*scripts: Script, hosts=None, **settings):
        provider = FakeProvider(list(scripts), *([hosts] if hosts else []))
        worlds.append(World(tmp_path / f"w{len(worlds)}", provider, **settings))
        return worlds[-1]
    yield make
    for w in worlds:
        w.services.close()


def test_start_tasks_of_every_node_overlap(world):
    w = world(Script("*boot*", 0, 1.0))
    w.pool("p", dedicated=30, startTask={"commandLine": "boot", "waitForSuccess": True})
    until(lambda: sum(n.state == "waitingforstarttask" for n in w.nodes("p")) == 30)  # all waiting at once
    _, nodes = w.settled("p")
    boots = [r for r in w.provider.commands if r.command_line == "boot"]
    assert len(boots) == 30 and all(n.body["startTaskInfo"]["result"] == "success" for n in nodes)
    assert max(r.started for r in boots) < min(r.ended for r in boots)


def test_start_task_failure_retries_then_starttaskfailed(world):
    w = world(Script("*boot*", 3))
    w.pool("p", dedicated=2, startTask={"commandLine": "boot", "waitForSuccess": True, "maxTaskRetryCount": 2})
    _, nodes = w.settled("p", states=("starttaskfailed",))
    for node in nodes:
        info = node.body["startTaskInfo"]
        assert (info["exitCode"], info["retryCount"], info["result"]) == (3, 2, "failure")
        assert info["failureInfo"]["code"] == "FailureExitCode"
    assert sum(r.command_line == "boot" for r in w.provider.commands) == 6  # 1 + 2 retries per node


def test_start_task_without_wait_leaves_node_idle_at_once(world):
    w = world(Script("*boot*", 1, 0.3))
    w.pool("p", startTask={"commandLine": "boot", "waitForSuccess": False})
    _, nodes = w.settled("p")
    # idle before its start task is launched, so its startTaskInfo may not be there yet
    until(lambda: w.nodes("p")[0].body.get("startTaskInfo", {}).get("state") == "completed")
    assert w.nodes("p")[0].state == "idle"  # a failed start task it did not wait for changes nothing


def test_reported_host_capacity_bounds_the_pool(world):
    w = world(hosts=[HostCapacity("a", 2, 1 << 20, 1 << 40), HostCapacity("b", 1, 1 << 20, 1 << 40)],
              host_overcommit=1)
    w.pool("p", dedicated=5, resizeTimeout="PT5M")
    until(lambda: len(w.nodes("p")) == 3)  # 3 cores reported, one per standard_a1_v2 node
    time.sleep(0.2)
    assert len(w.nodes("p")) == 3
    assert w.services.pools.get(w.account, "p").body["allocationState"] == "resizing"


def test_failed_machine_start_makes_the_node_unusable(world):
    w = world()
    w.provider.failing_starts.add("*")
    w.pool("p", dedicated=2)
    _, nodes = w.settled("p", states=("unusable",))
    assert all(n.body["errors"][0]["code"] == "NodeStartFailed" for n in nodes)
    assert not w.provider.running


def test_task_retries_and_exit_code(world):
    w = world(Script("fail*", 2), Script("ok*", 0))
    w.pool("p", dedicated=1)
    w.settled("p")
    w.job("j", "p")
    w.task("j", "bad", "fail now", constraints={"maxTaskRetryCount": 3})
    w.task("j", "good", "ok now")
    bad, good = w.finished("j", "bad"), w.finished("j", "good")
    assert bad.body["executionInfo"]["retryCount"] == 3 and bad.body["executionInfo"]["exitCode"] == 2
    assert bad.body["executionInfo"]["result"] == "failure"
    assert good.body["executionInfo"]["result"] == "success"
    assert sum(r.command_line == "fail now" for r in w.provider.commands) == 4


def test_an_exit_fills_its_slot_without_a_pass(world):
    """A slot freed by a task's exit is filled by that exit (the refiller), not by the
    scheduler's next pass: with the loop stopped, ending the running task starts the next
    one, and the next one's own exit is recorded the same way."""
    w = world(Script("hold*", 0, 3600))
    w.pool("p", dedicated=1, taskSlotsPerNode=1)
    w.settled("p")
    w.job("j", "p")
    w.task("j", "first", "hold first")
    w.task("j", "second", "quick second")
    until(lambda: w.services.tasks.get(w.account, "j", "first").state == "running")
    scheduler = w.services.scheduler
    scheduler.stop_loop()  # no pass from here on
    assert w.services.tasks.get(w.account, "j", "second").state == "active"  # one slot, taken
    [held] = [r for r in w.provider.commands if r.command_line == "hold first"]
    w.provider.end(held, 0)  # the exit's callback runs on this thread and wakes the refiller
    [quick] = until(lambda: [r for r in w.provider.commands if r.command_line == "quick second"])
    assert quick.started >= held.ended
    assert w.services.tasks.get(w.account, "j", "first").body["executionInfo"]["result"] == "success"
    second = w.finished("j", "second")  # its exit came on the fake's timer thread
    assert second.body["executionInfo"]["result"] == "success"
    node = until(lambda: (n := w.nodes("p")[0]).state == "idle" and n)  # written just after the task
    assert node.body["totalTasksRun"] == 2 and node.body["runningTasksCount"] == 0
    # the refiller's connection is set for bookkeeping once (Database.keep_books_only): its
    # commits skip their own fsync, its statement journals stay in memory
    db = scheduler.store.db
    [refiller] = [conn for thread, conn in db._connections.items() if thread.name == "refiller"]
    assert [refiller.execute(f"PRAGMA {name}").fetchone()[0] for name in ("synchronous", "temp_store")] == [1, 2]


def test_spread_and_pack(world):
    w = world(Script("*", 0, 0.5))
    w.pool("spread", dedicated=2, taskSlotsPerNode=2)
    w.pool("pack", dedicated=2, taskSlotsPerNode=2, taskSchedulingPolicy={"nodeFillType": "pack"})
    w.settled("spread"), w.settled("pack")
    for pool_id in ("spread", "pack"):
        w.job(pool_id, pool_id)
        for i in range(2):
            w.task(pool_id, f"t{i}", "work")
    spread = {w.finished("spread", f"t{i}").body["nodeInfo"]["nodeId"] for i in range(2)}
    pack = {w.finished("pack", f"t{i}").body["nodeInfo"]["nodeId"] for i in range(2)}
    assert len(spread) == 2 and len(pack) == 1


@pytest.mark.parametrize("order", ["none", "creationtime"])
def test_jobs_of_equal_priority_share_the_pool_unless_it_orders_them_by_age(world, order):
    """taskSchedulingPolicy.jobDefaultOrder: `none` (Azure's default) shares a pool's slots
    evenly between jobs of equal priority, turn by turn; `creationtime` starts the older
    job's tasks first. A job of higher priority goes before both either way."""
    w = world(Script("*", 0, 0.1))
    w.pool("p", dedicated=0, taskSlotsPerNode=2, taskSchedulingPolicy={"jobDefaultOrder": order})
    assert w.services.pools.get(w.account, "p").body["taskSchedulingPolicy"] == {
        "nodeFillType": "spread", "jobDefaultOrder": order}
    for job_id in ("older", "newer"):
        w.job(job_id, "p")
        for i in range(6):
            w.task(job_id, f"t{i}", f"{job_id} {i}")
    w.job("urgent", "p", priority=10)
    w.task("urgent", "t", "urgent 0")
    w.services.pools.resize(w.account, "p", {"targetDedicatedNodes": 1}, Caller.shared_key())
    for job_id in ("older", "newer"):
        for i in range(6):
            w.finished(job_id, f"t{i}")
    started = [r.command_line.split()[0] for r in sorted(w.provider.commands, key=lambda r: r.started)
               if r.command_line.split()[0] in ("older", "newer", "urgent")]
    assert started[0] == "urgent"
    first = started[1:5]
    if order == "creationtime":
        assert first == ["older"] * 4, started
    else:
        assert first.count("older") == first.count("newer") == 2, started


@pytest.mark.parametrize("rerun", [True, False])
def test_a_preparation_task_runs_again_after_a_reboot_as_its_job_asks_and_after_every_reimage(world, rerun):
    """jobPreparationTask.rerunOnNodeRebootAfterSuccess (default true): after a node's
    reboot its job's preparation task runs there again before the job's next task, or, when
    false, does not; after a reimage (a new disk, the task's directory gone) it always does."""
    w = world(Script("*", 0, 0.0))
    w.pool("p", dedicated=1)
    _, [node] = w.settled("p")
    w.job("j", "p", jobPreparationTask={"commandLine": "prepare", "rerunOnNodeRebootAfterSuccess": rerun})

    def run_task_then_count_preparations(task_id: str) -> int:
        w.task("j", task_id, f"work {task_id}")
        w.finished("j", task_id)
        return len([r for r in w.provider.commands if r.command_line == "prepare"])

    assert run_task_then_count_preparations("first") == 1
    w.services.pools.node_action(w.account, "p", node.id, "reboot", {})
    w.settled("p")
    assert run_task_then_count_preparations("rebooted") == (2 if rerun else 1)
    assert run_task_then_count_preparations("again") == (2 if rerun else 1)  # once a boot
    w.services.pools.node_action(w.account, "p", node.id, "reimage", {})
    w.settled("p")
    assert run_task_then_count_preparations("reimaged") == (3 if rerun else 2)


def test_a_release_task_waits_for_the_preparation_task_its_job_s_end_found_running(world):
    """A job that ends while a node's preparation task runs (its tasks did not wait for it)
    runs that node's release task after the preparation task, never beside it: a release
    task cleans up what the preparation made."""
    w = world(Script("prepare", 0, 1.0), Script("*", 0, 0.0))
    w.pool("p", dedicated=1)
    w.settled("p")
    w.job("j", "p", jobPreparationTask={"commandLine": "prepare", "waitForSuccess": False},
          jobReleaseTask={"commandLine": "release"})
    w.task("j", "t", "work")
    w.finished("j", "t")
    [prepare] = until(lambda: [r for r in w.provider.commands if r.command_line == "prepare"])
    assert prepare.ended is None
    w.services.jobs.terminate(w.account, "j", {})
    until(lambda: w.services.jobs.get(w.account, "j").body["state"] == "completed")
    [release] = [r for r in w.provider.commands if r.command_line == "release"]
    assert prepare.ended is not None and release.started >= prepare.ended


def test_a_task_goes_to_the_node_its_affinity_names_when_it_has_room(world):
    """affinityInfo.affinityId (a node's affinityId, as a finished task's nodeInfo shows it)
    is a hint, as on Azure: the task runs there when the node has its slots free, and
    elsewhere otherwise rather than wait."""
    w = world(Script("hold", 0, 1.0), Script("*", 0, 0.0))
    w.pool("p", dedicated=2)
    _, nodes = w.settled("p")
    w.job("j", "p")
    for node in nodes:
        w.task("j", f"near-{node.id}", "work", affinityInfo={"affinityId": node.body["affinityId"]})
        assert w.finished("j", f"near-{node.id}").body["nodeInfo"]["nodeId"] == node.id
    w.task("j", "hold", "hold", affinityInfo={"affinityId": nodes[0].body["affinityId"]})
    until(lambda: w.services.tasks.get(w.account, "j", "hold").state == "running")
    w.task("j", "busy", "work", affinityInfo={"affinityId": nodes[0].body["affinityId"]})
    assert w.finished("j", "busy").body["nodeInfo"]["nodeId"] == nodes[1].id  # the named node had no slot


def test_multi_instance_tasks_run_only_where_the_pool_permits_inter_node_communication(world):
    """Azure's rule: a multi-instance task runs in a pool with enableInterNodeCommunication
    and taskSlotsPerNode 1; in any other pool it is never scheduled and stays active, and
    the job's other tasks run past it (here more of them wait than the pool has slots)."""
    w = world()
    w.pool("apart", dedicated=2)
    w.pool("crowded", dedicated=2, enableInterNodeCommunication=True, taskSlotsPerNode=2)
    w.pool("mpi", dedicated=2, enableInterNodeCommunication=True)
    for pool_id in ("apart", "crowded", "mpi"):
        w.settled(pool_id)
        w.job(pool_id, pool_id)
        for name in ("multi", "more-1", "more-2", "more-3", "more-4") if pool_id != "mpi" else ("multi",):
            w.task(pool_id, name, "work", multiInstanceSettings={"numberOfInstances": 2,
                                                                 "coordinationCommandLine": "coordinate"})
        w.task(pool_id, "single", "work")
    assert w.finished("mpi", "multi").body["executionInfo"]["result"] == "success"
    assert sum(r.command_line == "coordinate" for r in w.provider.commands) == 2
    for pool_id in ("apart", "crowded"):
        assert w.finished(pool_id, "single")
        time.sleep(0.2)  # passes go by
        assert w.services.tasks.get(w.account, pool_id, "multi").state == "active"


def test_autoscale_counts_a_waiting_multi_instance_task_once_per_instance(world):
    """Azure's $ActiveTasks: the tasks ready to run, a multi-instance task counted once per
    instance; $PendingTasks adds the running ones."""
    w = world()
    w.pool("p", dedicated=0)
    w.job("j", "p")
    w.task("j", "multi", "work", multiInstanceSettings={"numberOfInstances": 3})
    w.task("j", "other", "work", multiInstanceSettings={"numberOfInstances": 2})
    w.task("j", "plain", "work")
    pool, metrics = w.services.pools.get(w.account, "p"), w.services.autoscaler.metrics
    metrics.sample(pool, datetime.now(UTC))
    sampled = {name: metrics.metrics(pool)[name].samples[-1][1] for name in ("$ActiveTasks", "$PendingTasks")}
    assert sampled == {"$ActiveTasks": 6.0, "$PendingTasks": 6.0}


def test_a_pool_with_inter_node_communication_holds_at_most_100_nodes(world):
    """Azure's pool size limit for pools with inter-node communication: 100 nodes, dedicated
    and low-priority together. The resize stops there, steady, with its resize error."""
    w = world()
    w.pool("close", dedicated=97, targetLowPriorityNodes=5, enableInterNodeCommunication=True)
    pool, nodes = w.settled("close")
    assert (pool.body["currentDedicatedNodes"], pool.body["currentLowPriorityNodes"]) == (97, 3)
    error = pool.body["resizeErrors"][0]
    assert error["code"] == "CommunicationEnabledPoolReachedMaxVMCount" and len(nodes) == 100
    assert error["message"] == "Communication enabled pool has reached the maximum VM count"
    w.pool("wide", dedicated=102)  # without it, the same size is no matter
    pool, nodes = w.settled("wide")
    assert len(nodes) == 102 and not pool.body.get("resizeErrors")
    # 80 in an account whose pools are made in the user's subscription
    w.account, _ = w.services.accounts.create_or_update(account_id("sub", "rg", "mine"), {
        "location": w.account.body["location"], "properties": {"poolAllocationMode": "UserSubscription"}})
    w.pool("close", dedicated=90, enableInterNodeCommunication=True)
    pool, nodes = w.settled("close")
    assert len(nodes) == 80 and pool.body["resizeErrors"][0]["code"] == "CommunicationEnabledPoolReachedMaxVMCount"


def test_reboot_requeues_a_running_task_once(world):
    w = world(Script("long*", 0, 1.0))
    w.pool("p", dedicated=1)
    _, [node] = w.settled("p")
    w.job("j", "p")
    w.task("j", "t", "long work")
    until(lambda: w.services.tasks.get(w.account, "j", "t").state == "running")
    w.services.pools.node_action(w.account, "p", node.id, "reboot", {"nodeRebootOption": "requeue"})
    task = w.finished("j", "t")
    info = task.body["executionInfo"]
    assert info["requeueCount"] == 1 and info["result"] == "success"
    runs = [r for r in w.provider.commands if r.command_line == "long work"]
    assert [r.code for r in runs] == [137, 0]  # the first attempt was killed with its machine


def test_a_multi_instance_task_is_requeued_whole_when_a_subtask_s_node_reboots(world):
    w = world(Script("long*", 0, 3.0))  # long enough to be running still when the reboot comes
    w.pool("mpi", dedicated=2, enableInterNodeCommunication=True)
    w.settled("mpi")
    w.job("j", "mpi")
    w.task("j", "t", "long work", multiInstanceSettings={"numberOfInstances": 2, "coordinationCommandLine": "set up"})
    until(lambda: any(r.command_line == "long work" for r in w.provider.commands))
    task = w.services.tasks.get(w.account, "j", "t")
    sub = next(n for n in task.internal["multi_nodes"] if n != task.body["nodeInfo"]["nodeId"])
    w.services.pools.node_action(w.account, "mpi", sub, "reboot", {"nodeRebootOption": "requeue"})
    task = w.finished("j", "t")
    info = task.body["executionInfo"]
    assert info["requeueCount"] == 1 and info["result"] == "success"
    assert [r.code for r in w.provider.commands if r.command_line == "long work"] == [137, 0]  # killed on its node
    assert sum(r.command_line == "set up" for r in w.provider.commands) == 4  # both attempts on both nodes


def test_node_files_through_the_file_service(world):
    w = world(Script("*boot*", 0, 0.0, stdout=b"booted\n"))
    w.pool("p", startTask={"commandLine": "boot"})
    _, [node] = w.settled("p")
    place = w.services.pools.node_directory(w.account, "p", node.id)
    listed = {name for name, _ in place.files.list(place.root, recursive=True)}
    assert {"shared", "startup", "startup/stdout.txt", "workitems"} <= listed
    assert b"".join(place.files.read(f"{place.root}/startup/stdout.txt")) == b"booted\n"


def test_a_lost_machine_requeues_its_task_and_the_node_is_made_again(world):
    w = world(Script("long*", 0, 0.5), lost_node_grace=0.3)
    w.pool("p", dedicated=2)
    w.settled("p")
    w.job("j", "p")
    w.task("j", "t", "long work")
    until(lambda: w.services.tasks.get(w.account, "j", "t").state == "running")
    node_id = w.services.tasks.get(w.account, "j", "t").body["nodeInfo"]["nodeId"]
    node = w.services.pools.get_node(w.account, "p", node_id)
    w.provider.lose([node.internal["machine_key"]])
    lost = w.services.pools.get_node(w.account, "p", node_id)
    assert lost.state == "unusable" and lost.body["errors"][0]["code"] == "NodeHostLost"
    task = w.finished("j", "t")
    assert task.body["executionInfo"]["requeueCount"] == 1 and task.body["executionInfo"]["result"] == "success"
    _, nodes = w.settled("p")
    assert len(nodes) == 2 and node_id in {n.id for n in nodes} and not any(n.body["errors"] for n in nodes)


@pytest.fixture
def served():
    """A resource file's body (2.5 MiB: more than one block) and its URL on loopback."""
    body = bytes(range(256)) * (10 * 1024)
    with serving(body) as url:
        yield url, body


def test_resource_file_lands_in_the_working_directory_without_a_host_path(world, served):
    url, body = served
    w = world(Script("*", 0))
    assert not hasattr(w.provider, "temporary_disk")  # machines here have no directory on the host
    w.pool("p")
    w.settled("p")
    w.job("j", "p")
    w.task("j", "t", "use in/data.bin", resourceFiles=[{"httpUrl": url, "filePath": "in/data.bin",
                                                         "fileMode": "0640"}])
    task = w.finished("j", "t")
    assert task.body["executionInfo"]["result"] == "success"
    place = w.services.scheduler.task_place(task)
    assert b"".join(place.files.read(f"{place.root}/wd/in/data.bin")) == body
    status = place.files.stat(place.root, ["wd", "in", "data.bin"])
    assert stat.S_IMODE(status.mode) == 0o640 and status.size == len(body)
    disk = w.provider.files(task.internal["node"]["machine_key"])
    assert disk.owners[(*place.root.split("/"), "wd", "in", "data.bin")] == (POOL_USER_UID, AUTO_USER_GID)


class GatedProvider(FakeProvider):
    """Machines start and go only while `gate` is open: nodes can be held waiting for a worker."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.gate = threading.Event()

    def start(self, machine):
        self.gate.wait()
        super().start(machine)

    def delete_machine(self, key):
        self.gate.wait()
        super().delete_machine(key)


class SqlWork:
    """SQLite's virtual machine steps (rows read, written and compared), by thread name:
    the store's work, counted deterministically where timings are not."""

    def __init__(self, db):
        self.steps: collections.Counter = collections.Counter()
        # every thread has a connection of its own (store/db.py): count on those open and
        # on those opened from now on
        with db._connections_lock:
            for conn in db._connections.values():
                conn.set_progress_handler(self._step, 1)
        connect = db._connect

        def counted():
            conn = connect()
            conn.set_progress_handler(self._step, 1)
            return conn
        db._connect = counted

    def _step(self) -> int:
        self.steps[threading.current_thread().name.split("_")[0]] += 1  # worker threads are node_{n}
        return 0

    def of(self, action) -> int:
        """The steps `action` takes on this thread."""
        before = self.steps["MainThread"]
        action()
        return self.steps["MainThread"] - before


def allocation_costs(tmp_path, size: int) -> dict[str, float]:
    provider = GatedProvider(hosts=[HostCapacity("fake", 4096, 1 << 24, 1 << 40)])
    w = World(tmp_path / f"n{size}", provider)
    try:
        work, allocator = SqlWork(w.services.db), w.services.allocator
        w.pool("p", dedicated=size)
        until(lambda: len(w.nodes("p")) == size)  # made; held from their machines by the gate
        costs = {"pass, nodes waiting for a worker": work.of(allocator.one_pass)}
        provider.gate.set()
        w.settled("p")
        costs["worker steps per node made"] = work.steps["node"] / size
        costs["pass, pool at rest"] = work.of(allocator.one_pass)
        costs["node counts of the account"] = work.of(lambda: w.services.pools.node_counts(w.account))
        provider.gate.clear()
        w.services.pools.delete(w.account, "p")
        until(lambda: all(n.state == "leavingpool" for n in w.nodes("p")))
        costs["pass, nodes leaving"] = work.of(allocator.one_pass)
        provider.gate.set()
        until(lambda: not w.services.pools.list(w.account))
        costs["worker steps per node made and removed"] = work.steps["node"] / size
        return costs
    finally:
        provider.gate.set()
        w.services.close()


def test_allocation_costs_the_same_per_node_in_a_pool_of_10_and_of_200(tmp_path):
    """Issue 14: no pass walks every node of a pool per node made, no per-node query grows
    with the pool. A pass costs the same whatever the pools hold (at rest, and while
    hundreds of nodes wait for a worker or leave); each node costs the store the same work."""
    small, large = allocation_costs(tmp_path, 10), allocation_costs(tmp_path, 200)
    assert all(small.values()), small  # every measure counted work: none passes by counting nothing
    for name in small:
        assert large[name] <= small[name] * 1.1 + 5, (name, small[name], large[name])


def test_a_pool_deleted_while_its_nodes_wait_for_workers_leaves_no_machine(tmp_path):
    """Removal handed over while a worker still holds the node's creation runs after it."""
    provider = GatedProvider()
    w = World(tmp_path / "w", provider)
    try:
        w.pool("p", dedicated=20)
        until(lambda: len(w.nodes("p")) == 20)
        w.services.pools.delete(w.account, "p")
        until(lambda: all(n.state == "leavingpool" for n in w.nodes("p")))
        provider.gate.set()
        until(lambda: not w.services.pools.list(w.account))
        assert not provider.running and not provider.machines and not provider.disks
        assert w.services.pools.node_counts(w.account) == []
    finally:
        provider.gate.set()
        w.services.close()


def test_a_fault_in_one_pool_s_autoscaling_or_one_schedule_stops_no_other(world, monkeypatch):
    """The autoscaler's, the job schedules' and the allocator's passes go through every pool or
    schedule: an exception in one (a value out of range, once) ended the pass for all the
    rest, every second, until that one was deleted. Now it is logged and the pass goes on
    (PokedLoop.each)."""
    w = world()
    for pool_id in ("first", "second"):
        w.services.pools.create(w.account, {
            "id": pool_id, "vmSize": "standard_a1_v2", "enableAutoScale": True,
            "autoScaleFormula": "$TargetDedicatedNodes = 0;",
            "virtualMachineConfiguration": {"imageReference": w.image["imageReference"],
                                            "nodeAgentSKUId": w.image["nodeAgentSKUId"]}}, Caller.shared_key())
        w.job(f"{pool_id}-job", pool_id)
        w.services.job_schedules.create(w.account, {"id": f"{pool_id}-schedule", "schedule": {
            "doNotRunUntil": "2100-01-01T00:00:00Z"}, "jobSpecification": {"poolInfo": {"poolId": pool_id}}},
            Caller.shared_key())
    tried: dict[str, list[str]] = {"pools": [], "schedules": [], "allocations": []}

    def failing(kind: str):
        def fail(resource, *args):
            tried[kind].append(resource.id.rsplit("/", 1)[1])
            raise RuntimeError(f"a fault of {resource.id}'s own")
        return fail
    monkeypatch.setattr(w.services.autoscaler, "_run_and_apply", failing("pools"))
    monkeypatch.setattr(w.services.job_schedules, "_advance", failing("schedules"))
    monkeypatch.setattr(w.services.allocator, "_reconcile", failing("allocations"))
    for pool in w.services.pools.all_pools():
        pool.internal["autoscale_next"] = 0  # due now
        w.services.pools.save(pool)
    w.services.autoscaler.one_pass()
    w.services.job_schedules.one_pass()
    w.services.allocator.one_pass()
    assert {"first", "second"} <= set(tried["pools"]) and {"first", "second"} <= set(tried["allocations"])
    assert {"first-schedule", "second-schedule"} <= set(tried["schedules"])
