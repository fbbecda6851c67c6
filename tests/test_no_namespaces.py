"""On a host that forbids namespaces the server says so at start and keeps serving: disks,
snapshots and images work as layers; starting a machine is refused with a clear error."""

from __future__ import annotations

import pytest
from azure.core.exceptions import ResourceExistsError

from conftest import Clients, Server, base_image_reference, vm_body


@pytest.fixture(scope="module")
def restricted(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("restricted") / "data", extra_env={"BATCHYARD_ISOLATION": "off"})
    info = srv.start()
    yield srv, Clients(info)
    srv.stop()


def test_start_banner_and_connection_say_machines_are_unavailable(restricted):
    server, clients = restricted
    assert clients.info["machines"] == "unavailable"
    assert "machines: UNAVAILABLE" in server.log.read_text()


def test_vm_is_refused_but_disks_and_snapshots_work(restricted):
    _, clients = restricted
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
