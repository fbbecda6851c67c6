"""A service crash is a reboot for every node: a machine's commands end shortly after the
service goes, the background processes a start task left behind included. Azure runs a
pool's start task on every reboot, so a restored node of a pool with a start task runs it
again, waits for it in `waitingforstarttask` (waitForSuccess) and only then takes tasks; a
node of a pool without one comes back idle."""

from __future__ import annotations

from conftest import Clients, Server, pool_settled, wait_for
from test_batch_pools import base_pool

SHARED = "$AZ_BATCH_NODE_SHARED_DIR"
# Starts a daemon, then holds the node in waitingforstarttask until the test deletes
# shared/hold through the node files API (so every state the test checks is one the node
# cannot leave on its own), and records the boot last.
START = ("/bin/sh -c 'sleep 1000 & touch " + SHARED + "/hold; "
         "while [ -e " + SHARED + "/hold ]; do sleep 0.05; done; "
         "echo $AZ_BATCH_NODE_ID >> " + SHARED + "/boots'")
# a start task that fails on the node's first boot and succeeds on the next, and one the other way round
SECOND_SUCCEEDS = "/bin/sh -c 'test -e " + SHARED + "/once || { touch " + SHARED + "/once; exit 3; }'"
SECOND_FAILS = "/bin/sh -c 'test ! -e " + SHARED + "/once && touch " + SHARED + "/once'"


def _held(batch, pool_id: str) -> list:
    """The pool's nodes once each waits for its start task with shared/hold in place."""
    nodes = list(batch.list_nodes(pool_id))
    if nodes and all(n.state == "waitingforstarttask" and "shared/hold" in
                     {f.name for f in batch.list_node_files(pool_id, n.id, recursive=True)} for n in nodes):
        return nodes
    return []


def _release(batch, pool_id: str, nodes: list) -> None:
    for node in nodes:
        batch.delete_node_file(pool_id, node.id, "shared/hold")


def _read(batch, pool_id: str, node_id: str, path: str) -> str:
    return b"".join(batch.download_node_file(pool_id, node_id, path)).decode()


def test_a_restored_node_runs_its_start_task_again(tmp_path):
    with Server(tmp_path / "data") as server:
        clients = Clients(server.info)
        batch = clients.batch_key
        batch.create_pool(base_pool(clients, "booted", dedicated=2,
                                    startTask={"commandLine": START, "waitForSuccess": True}))
        batch.create_pool(base_pool(clients, "plain"))
        for pool_id, command in (("mends", SECOND_SUCCEEDS), ("breaks", SECOND_FAILS)):
            batch.create_pool(base_pool(clients, pool_id, startTask={"commandLine": command, "waitForSuccess": True}))
        _release(batch, "booted", wait_for(lambda: _held(batch, "booted"), what="the first start tasks"))
        _, before = pool_settled(batch, "booted")
        _, (plain,) = pool_settled(batch, "plain")
        pool_settled(batch, "mends", states=("starttaskfailed",))
        pool_settled(batch, "breaks")
        for node in before:
            assert _read(batch, "booted", node.id, "shared/boots") == f"{node.id}\n"
            assert (node.start_task_info.result, node.start_task_info.retry_count) == ("success", 0)
        batch.create_job({"id": "after", "poolInfo": {"poolId": "booted"}})

        server.proc.kill()  # SIGKILL: the machines' agents end their commands, the daemons too
        server.proc.wait()
        batch = Clients(server.start()).batch_key

        held = wait_for(lambda: _held(batch, "booted"), what="the start tasks to run again")
        batch.create_task("after", {"id": "sees", "commandLine": f"/bin/sh -c 'cat {SHARED}/boots'"})
        # no node is idle before its start task ends: the task waits for one
        assert batch.get_task("after", "sees").state == "active"
        assert {n.state for n in batch.list_nodes("booted")} == {"waitingforstarttask"}
        previous = {n.id: n for n in before}
        for node in held:
            info = node.start_task_info
            assert (info.state, info.retry_count) == ("running", 0)
            assert info.start_time > previous[node.id].start_task_info.start_time
            assert node.last_boot_time > previous[node.id].last_boot_time
        _release(batch, "booted", held)

        _, after = pool_settled(batch, "booted")
        assert {n.id for n in after} == set(previous)
        for node in after:
            # ran twice: once when the node was made, once after the crash
            assert _read(batch, "booted", node.id, "shared/boots") == f"{node.id}\n{node.id}\n"
            info = node.start_task_info
            assert (info.state, info.result, info.exit_code, info.retry_count) == ("completed", "success", 0, 0)
            assert info.start_time > previous[node.id].start_task_info.start_time
        task = wait_for(lambda: (t := batch.get_task("after", "sees")).state == "completed" and t, what="the task")
        assert task.execution_info.exit_code == 0
        node_id = task.node_info.node_id
        # the task saw the rerun's line: it started only after the start task ended
        assert b"".join(batch.download_task_file("after", "sees", "stdout.txt")) == f"{node_id}\n{node_id}\n".encode()

        # the rerun decides where the node goes, not the state it had before the crash
        _, (mended,) = pool_settled(batch, "mends")
        assert (mended.start_task_info.exit_code, mended.start_task_info.result) == (0, "success")
        assert mended.start_task_info.failure_info is None
        _, (broken,) = pool_settled(batch, "breaks", states=("starttaskfailed",))
        assert (broken.start_task_info.exit_code, broken.start_task_info.result) == (1, "failure")
        assert broken.start_task_info.failure_info.code == "FailureExitCode"

        # a pool without a start task: its node comes back idle, with no start task info
        _, (restored,) = pool_settled(batch, "plain")
        assert restored.id == plain.id and restored.start_task_info is None
