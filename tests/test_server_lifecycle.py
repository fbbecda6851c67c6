"""The server process itself: both stop signals end it cleanly."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys

import pytest
from azure.core.exceptions import ResourceNotFoundError

from conftest import Clients, Server, agents_of, base_image_reference, pool_settled, vm_body, wait_for
from test_batch_pools import base_pool


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_stop_signals_shut_down_cleanly(tmp_path, stop_signal):
    server = Server(tmp_path / "data", tls=False)
    with server:
        connection = tmp_path / "data" / "connection.json"
        assert connection.exists()
        server.proc.send_signal(stop_signal)
        assert server.proc.wait(30) == 0
        # connection.json names a server that is gone once it stops: a clean stop removes it
        assert not connection.exists()


def test_a_second_server_on_a_data_directory_in_use_refuses_to_start(tmp_path):
    """It started, and reclaimed the running server's scratch trees as a crash's leftovers.
    Now it says why it cannot start, with no traceback; a directory it cannot make is said
    the same way; once the first ends (SIGKILL included), the directory is free."""
    data = tmp_path / "data"
    with Server(data) as first:
        second = subprocess.run([sys.executable, "-m", "batchyard.cli", "serve", "--data-dir", str(data),
                                 "--port", "0", "--no-tls"], capture_output=True, text=True, timeout=60)
        assert second.returncode != 0 and "batchyard serve that is running" in second.stderr, second.stderr
        assert "Traceback" not in second.stderr
        Clients(first.info).batch_key.list_supported_images()  # the first serves on, untouched
        first.proc.kill()
        first.proc.wait()
        first.start()  # a SIGKILLed server leaves its directory free
    (tmp_path / "file").write_text("")
    unusable = subprocess.run([sys.executable, "-m", "batchyard.cli", "serve", "--data-dir",
                               str(tmp_path / "file" / "data"), "--port", "0"], capture_output=True, text=True, timeout=60)
    assert unusable.returncode != 0 and "cannot use" in unusable.stderr and "Traceback" not in unusable.stderr


def test_start_reclaims_what_a_crash_left(tmp_path):
    """A crash between attaching a new VM's disks and recording the VM leaves disks attached
    to nothing; one mid-snapshot leaves a staging copy. The next start clears both."""
    with Server(tmp_path / "data") as server:
        clients = Clients(server.info)
        clients.resource.resource_groups.create_or_update("crash", {"location": clients.location})
        disk = clients.compute.disks.begin_create_or_update("crash", "left", {
            "location": clients.location, "properties": {"creationData": {"createOption": "Empty"},
                                                         "diskSizeGB": 4}}).result()
        image = base_image_reference(clients.compute, clients.location)
        vm = clients.compute.virtual_machines.begin_create_or_update(
            "crash", "broken", vm_body(clients.location, image)).result()
        server.proc.kill()  # SIGKILL: no cleanup of any kind
        server.proc.wait()
        with sqlite3.connect(tmp_path / "data" / "batchyard.db") as db:
            (os_disk_key,) = db.execute("SELECT json_extract(internal, '$.disk_key') FROM resources WHERE key = ?",
                                        (vm.storage_profile.os_disk.managed_disk.id.lower(),)).fetchone()
        shutil.rmtree(tmp_path / "data" / "runtime" / "disks" / os_disk_key)  # the host lost the VM's OS disk
        ghost = f"/subscriptions/{clients.subscription}/resourceGroups/crash/providers/Microsoft.Compute/" \
                "virtualMachines/never-recorded"
        with sqlite3.connect(tmp_path / "data" / "batchyard.db") as db:
            (body,) = db.execute("SELECT body FROM resources WHERE key = ?", (disk.id.lower(),)).fetchone()
            body = json.loads(body)
            body["managedBy"] = ghost
            body["properties"]["diskState"] = "Attached"
            db.execute("UPDATE resources SET body = ? WHERE key = ?", (json.dumps(body), disk.id.lower()))
        staging = tmp_path / "data" / "runtime" / "layers" / "tmp" / "interrupted-snapshot"
        staging.mkdir()
        (staging / "half-copied").write_bytes(b"x" * (1 << 20))

        clients = Clients(server.start())
        assert not staging.exists()
        # its machine cannot start again: stopped, its provisioning failed, as Azure shows it
        broken = clients.compute.virtual_machines.get("crash", "broken", expand="instanceView")
        statuses = {s.code for s in broken.instance_view.statuses}
        assert "PowerState/stopped" in statuses and broken.provisioning_state == "Failed", statuses
        released = clients.compute.disks.get("crash", "left")
        assert released.managed_by is None and released.disk_state == "Unattached"
        clients.compute.disks.begin_delete("crash", "left").result()
        with pytest.raises(ResourceNotFoundError):
            clients.compute.disks.get("crash", "left")


def test_start_reconciles_machines_with_records(tmp_path):
    """After a SIGKILL: a task that ended while the server was down is recorded as it ended
    (its machine kept the exit), not run again; machines and disks no record names are
    deleted (an address record the kill cut short stops nothing); a node whose machine is
    gone is made again, as Azure replaces a lost VM."""
    data = tmp_path / "data"
    with Server(data) as server:
        batch = Clients(server.info).batch_key
        batch.create_pool(base_pool(Clients(server.info), "kept", dedicated=2))
        pool_settled(batch, "kept")
        batch.create_job({"id": "across", "poolInfo": {"poolId": "kept"}})
        batch.create_task("across", {"id": "slow", "commandLine": "/bin/sh -c 'touch $AZ_BATCH_NODE_SHARED_DIR/began; "
                                     "sleep 0.2; echo $AZ_BATCH_TASK_ID >> $AZ_BATCH_NODE_SHARED_DIR/ran'"})
        node = wait_for(lambda: batch.get_task("across", "slow").node_info, what="the task to be placed").node_id
        wait_for(lambda: "shared/began" in {f.name for f in batch.list_node_files("kept", node, recursive=True)},
                 what="the task's command to begin")
        server.proc.kill()  # the task is still running: it ends while no server is there
        server.proc.wait()

        runtime = data / "runtime"
        with sqlite3.connect(data / "batchyard.db") as db:
            keys = dict(db.execute("SELECT node_id, json_extract(internal, '$.machine_key') FROM batch_nodes"))
            (task_node,) = db.execute("SELECT json_extract(internal, '$.node.id') FROM batch_tasks").fetchone()
        lost = next(node for node in keys if node != task_node)
        shutil.rmtree(runtime / "machines" / keys[lost])  # the host lost this node's machine
        for leftover in (runtime / "machines" / ("0" * 32 + "vm"), runtime / "disks" / ("1" * 32 + "os")):
            (leftover / "upper").mkdir(parents=True)
            (leftover / "upper" / "bytes").write_bytes(b"x" * (1 << 20))
        # a machine whose address record the kill cut short: once, it kept the service from starting
        (runtime / "machines" / ("0" * 32 + "vm") / "network.json").write_text("")
        (runtime / "ns" / ("2" * 32 + "vm")).touch()  # a namespace file whose binding went with the service

        batch = Clients(server.start()).batch_key
        task = batch.get_task("across", "slow")
        assert (task.state, task.execution_info.exit_code, task.execution_info.requeue_count) == ("completed", 0, 0)
        ran = b"".join(batch.download_node_file("kept", task_node, "shared/ran"))
        assert ran == b"slow\n"  # once
        assert set(os.listdir(runtime / "machines")) <= set(keys.values())  # the unrecorded one is gone
        assert "1" * 32 + "os" not in os.listdir(runtime / "disks")
        assert not (runtime / "ns" / ("2" * 32 + "vm")).exists()
        replaced = wait_for(lambda: _node_if_idle(batch, "kept", lost), timeout=60,
                            what="the lost node to be made again")
        assert replaced.errors in (None, [])
        assert {n.id for n in batch.list_nodes("kept")} == set(keys)
        assert set(os.listdir(runtime / "machines")) == set(keys.values())
        assert len(os.listdir(runtime / "disks")) == 2


def test_a_task_made_again_is_never_given_the_exit_its_namesake_journaled(tmp_path):
    """A machine's exit journal outlives its agents (an idle close keeps it, for an exit the
    service may not have recorded yet), so a task made again with the ids of one that ran
    there (its job deleted and made again) must never be given the old one's exit after a
    crash: it goes back to the queue, as any task the crash cut short, and ends as its own
    command does."""
    data = tmp_path / "data"
    with Server(data) as server:
        batch = Clients(server.info).batch_key
        batch.create_pool(base_pool(Clients(server.info), "again", dedicated=1))
        pool_settled(batch, "again")
        batch.create_job({"id": "same", "poolInfo": {"poolId": "again"}})
        batch.create_task("same", {"id": "t", "commandLine": "/bin/true"})
        wait_for(lambda: batch.get_task("same", "t").state == "completed", what="the first task to complete")
        with sqlite3.connect(data / "batchyard.db") as db:
            (job_key, attempt, machine), = db.execute(
                "SELECT job_key, json_extract(internal, '$.attempt'), json_extract(internal, '$.node.machine_key') "
                "FROM batch_tasks")
        machine_dir = data / "runtime" / "machines" / machine
        wait_for(lambda: not agents_of(machine), timeout=30, what="the idle agent to be closed")
        stale = json.dumps({"id": f"{job_key}|t|{attempt}", "exit": 0}).encode()
        assert any(stale in path.read_bytes() for path in machine_dir.glob("exits.*"))  # kept by the close

        batch.begin_delete_job("same", polling_interval=0.1).result()
        batch.create_job({"id": "same", "poolInfo": {"poolId": "again"}})
        shared = machine_dir / "resource" / "batch" / "tasks" / "shared"
        batch.create_task("same", {"id": "t", "commandLine": "/bin/sh -c 'cd $AZ_BATCH_NODE_SHARED_DIR; touch began; "
                                   "while [ ! -e go ]; do sleep 0.05; done; exit 3'"})
        wait_for(lambda: (shared / "began").exists(), what="the second task's command to begin")
        server.proc.kill()  # SIGKILL: the command never ends, and its agent goes with the service
        server.proc.wait()

        batch = Clients(server.start()).batch_key
        (shared / "go").touch()
        task = wait_for(lambda: (t := batch.get_task("same", "t")).state == "completed" and t,
                        what="the second task to complete")
        assert (task.execution_info.exit_code, task.execution_info.requeue_count) == (3, 1)


def _node_if_idle(batch, pool_id: str, node_id: str):
    node = batch.get_node(pool_id, node_id)
    return node if node.state == "idle" else None


def test_the_command_line_says_what_is_wrong_without_a_traceback(tmp_path):
    """Each of these printed a Python traceback (found by fuzzing the command line)."""
    def batchyard(*args: str, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "batchyard.cli", *args], capture_output=True, text=True,
                              timeout=60, env={**os.environ, **env})
    data = tmp_path / "data"
    data.mkdir()
    connection = data / "connection.json"
    stale = {"client_id": "c", "client_secret": "s", "authority": "https://127.0.0.1:9", "tenant_id": "t",
             "arm_endpoint": "https://127.0.0.1:9", "subscription_id": "s"}
    for content, args, env, said in [
            (None, ("serve", "--data-dir", str(tmp_path / "other")), {"BATCHYARD_NODE_WORKERS": "four"},
             "BATCHYARD_NODE_WORKERS='four' is not an integer"),
            ("{}", ("principal", "list"), {}, "lacks client_id"),
            ("not json", ("principal", "list"), {}, "cannot be read"),
            (json.dumps(stale), ("principal", "list"), {}, "does not answer"),
            (json.dumps(stale), ("quota", "set", "--account", "a", "--family", "x=²"), {}, "give FAMILY=CORES"),
            (json.dumps(stale), ("quota", "set", "--account", "a", "--family", "x=" + "9" * 5000), {},
             "give FAMILY=CORES")]:
        if content is not None:
            connection.write_text(content)
            args = (*args, "--data-dir", str(data))
        done = batchyard(*args, **env)
        assert done.returncode != 0 and said in done.stderr and "Traceback" not in done.stderr, done.stderr
