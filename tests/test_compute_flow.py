"""The custom-image flow of Azure's guide, end to end through the real SDKs, across a
server restart."""

from __future__ import annotations

import pytest
from azure.core.exceptions import ResourceNotFoundError

from conftest import build_flow, run_script, vm_body

RG = "flow"


@pytest.fixture(scope="module")
def built(clients):
    return build_flow(clients, RG)


def test_image_records_its_disks(built):
    image = built["image"]
    assert image.provisioning_state == "Succeeded"
    assert image.storage_profile.os_disk.os_state == "Generalized"
    assert image.storage_profile.data_disks[0].lun == 0


def test_vm_from_image_runs_the_program_and_reads_the_data(clients, built):
    out = run_script(clients.compute, RG, "worker", "/opt/tool/run from-image", "cat /datadisks/lun0/input.txt")
    assert out.split("\n")[:2] == ["tool-v1 from-image", "reference-data"]


def test_vm_from_image_does_not_see_changes_after_the_snapshot(clients, built):
    out = run_script(clients.compute, RG, "worker",
                     "test -e /opt/tool/later && echo LATER-VISIBLE || echo no-later")
    assert out.strip() == "no-later"


def test_worker_gets_data_disk_from_image(built):
    worker = built["worker"]
    assert [d.lun for d in worker.storage_profile.data_disks] == [0]
    assert worker.storage_profile.image_reference.id == built["image"].id


def test_deleting_the_builder_leaves_image_and_worker_intact(clients, server, built):
    c = clients.compute
    c.virtual_machines.begin_delete(RG, "builder").result()
    with pytest.raises(ResourceNotFoundError):
        c.virtual_machines.get(RG, "builder")
    # deleteOption defaults to Detach: the builder's disks stay, unattached
    os_disk = c.disks.get(RG, built["builder"].storage_profile.os_disk.name)
    assert os_disk.disk_state == "Unattached" and os_disk.managed_by is None
    assert c.images.get(RG, "tool-image").provisioning_state == "Succeeded"
    out = run_script(c, RG, "worker", "/opt/tool/run still-here")
    assert out.strip() == "tool-v1 still-here"


def test_everything_survives_a_restart(clients, server, built):
    c = clients.compute
    run_script(c, RG, "worker", "echo written-before-restart > /datadisks/lun0/mine.txt")
    server.restart()
    assert c.images.get(RG, "tool-image").id == built["image"].id
    assert c.snapshots.get(RG, "snap-os").provisioning_state == "Succeeded"
    view = c.virtual_machines.get(RG, "worker", expand="instanceView").instance_view
    assert "PowerState/running" in [s.code for s in view.statuses]
    out = run_script(c, RG, "worker", "/opt/tool/run after-restart", "cat /datadisks/lun0/mine.txt")
    assert out.split("\n")[:2] == ["tool-v1 after-restart", "written-before-restart"]


def test_image_survives_deleting_its_snapshots_and_new_vms_still_work(clients, built):
    c = clients.compute
    c.snapshots.begin_delete(RG, "snap-os").result()
    c.snapshots.begin_delete(RG, "snap-data").result()
    c.virtual_machines.begin_create_or_update(RG, "worker2", vm_body(clients.location, {"id": built["image"].id})).result()
    out = run_script(c, RG, "worker2", "/opt/tool/run second", "cat /datadisks/lun0/input.txt")
    assert out.split("\n")[:2] == ["tool-v1 second", "reference-data"]


def test_deleting_the_image_leaves_its_vms_working(clients, built):
    c = clients.compute
    c.images.begin_delete(RG, "tool-image").result()
    out = run_script(c, RG, "worker2", "/opt/tool/run image-gone")
    assert out.strip() == "tool-v1 image-gone"
