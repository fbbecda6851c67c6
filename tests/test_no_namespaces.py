"""Hosts that forbid namespaces. With fakechroot the server falls back to plain directories and
copies (slower, not isolated) and the whole custom-image flow still works; without it,
the server says so and refuses to start machines while disks and snapshots still work."""

from __future__ import annotations

import pytest
from azure.core.exceptions import ResourceExistsError

from conftest import Clients, Server, base_image_reference, build_flow, pool_settled, run_script, vm_body, wait_for

RG = "fallback"


@pytest.fixture(scope="module")
def fallback(tmp_path_factory):
    with Server(tmp_path_factory.mktemp("fallback") / "data", extra_env={"BATCHYARD_ISOLATION": "off"}) as srv:
        clients = Clients(srv.info)
        yield srv, clients, build_flow(clients, RG)


@pytest.fixture(scope="module")
def unavailable(tmp_path_factory):
    with Server(tmp_path_factory.mktemp("unavailable") / "data",
                extra_env={"BATCHYARD_ISOLATION": "off", "BATCHYARD_FAKECHROOT": "/nonexistent/fakechroot"}) as srv:
        yield srv, Clients(srv.info)


def test_fallback_is_announced(fallback):
    server, clients, _ = fallback
    assert clients.info["machines"] == "directories"
    log = " ".join(server.log.read_text().split())  # the banner wraps long lines
    assert "machines: NOT ISOLATED" in log
    assert "NOT enforced: VM size limits" in log and "private networks" in log and "seccomp" in log


def test_fallback_runs_the_custom_image_flow(fallback):
    _, clients, built = fallback
    out = run_script(clients.compute, RG, "worker", "/opt/tool/run from-image", "cat /datadisks/lun0/input.txt",
                     "test -e /opt/tool/later && echo LATER-VISIBLE || echo no-later")
    assert out.split("\n")[:3] == ["tool-v1 from-image", "reference-data", "no-later"]


def test_fallback_disks_are_private_copies(fallback):
    _, clients, _ = fallback
    c = clients.compute
    run_script(c, RG, "worker", "echo mine > /opt/tool/worker-only", "echo secret > /etc/worker-only")
    out = run_script(c, RG, "builder", "ls /opt/tool", "test -e /etc/worker-only && echo ETC-SHARED || echo etc-private",
                     "test -e /etc/shadow && echo SHADOW || echo no-shadow")
    assert "worker-only" not in out and "etc-private" in out and "no-shadow" in out


def test_fallback_machines_survive_a_restart(fallback):
    server, _, _ = fallback
    clients = Clients(server.restart())
    out = run_script(clients.compute, RG, "worker", "/opt/tool/run after-restart", "cat /opt/tool/worker-only")
    assert out.split("\n")[:2] == ["tool-v1 after-restart", "mine"]


def test_without_fakechroot_vms_are_refused_but_disks_and_snapshots_work(unavailable):
    server, clients = unavailable
    assert clients.info["machines"] == "unavailable"
    assert "machines: UNAVAILABLE" in server.log.read_text()
    c = clients.compute
    clients.resource.resource_groups.create_or_update("rg", {"location": clients.location})
    with pytest.raises(ResourceExistsError) as e:
        c.virtual_machines.begin_create_or_update("rg", "vm", vm_body(
            clients.location, base_image_reference(c, clients.location))).result()
    assert e.value.error.code == "AllocationFailed" and "cannot run on this host" in e.value.error.message
    assert c.virtual_machines.get("rg", "vm").provisioning_state == "Failed"
    disk = c.disks.begin_create_or_update("rg", "d", {"location": clients.location, "properties": {
        "creationData": {"createOption": "Empty"}, "diskSizeGB": 1}}).result()
    snap = c.snapshots.begin_create_or_update("rg", "s", {"location": clients.location, "properties": {
        "creationData": {"createOption": "Copy", "sourceResourceId": disk.id}}}).result()
    assert snap.provisioning_state == "Succeeded"


def test_fallback_runs_batch_pools_and_tasks(fallback):
    _, clients, built = fallback
    batch = clients.batch
    batch.create_pool({"id": "flat", "vmSize": "standard_a1_v2", "targetDedicatedNodes": 1,
                       "virtualMachineConfiguration": {"imageReference": {"virtualMachineImageId": built["image"].id},
                                                       "nodeAgentSKUId": "batch.node.debian 12"},
                       "startTask": {"commandLine": "/bin/sh -c 'echo started > $AZ_BATCH_NODE_SHARED_DIR/s'"}})
    pool_settled(batch, "flat")
    batch.create_job({"id": "flat-job", "poolInfo": {"poolId": "flat"}})
    batch.create_task("flat-job", {"id": "t", "commandLine": "/opt/tool/run flat; cat $AZ_BATCH_NODE_SHARED_DIR/s"})
    task = wait_for(lambda: (t := batch.get_task("flat-job", "t")).state == "completed" and t, what="the task")
    assert task.execution_info.exit_code == 0
    assert b"".join(batch.download_task_file("flat-job", "t", "stdout.txt")) == b"tool-v1 flat\nstarted\n"
