"""Images captured from a generalized VM, and the CustomScript extension."""

from __future__ import annotations

import pytest
from azure.core.exceptions import HttpResponseError, ResourceExistsError

from conftest import base_image_reference, run_script, vm_body

RG = "capture"


def test_image_from_a_generalized_vm_with_custom_script(clients, server):
    c = clients.compute
    clients.resource.resource_groups.create_or_update(RG, {"location": clients.location})
    c.virtual_machines.begin_create_or_update(RG, "golden", vm_body(clients.location, base_image_reference(
        c, clients.location), data_disks=[{"lun": 1, "createOption": "Empty", "diskSizeGB": 2}])).result()
    ext = c.virtual_machine_extensions.begin_create_or_update(RG, "golden", "setup", {
        "location": clients.location, "properties": {
            "publisher": "Microsoft.Azure.Extensions", "type": "CustomScript", "typeHandlerVersion": "2.1",
            "settings": {"commandToExecute": "mkdir -p /opt/cs && echo from-extension > /opt/cs/x"},
            "protectedSettings": {"storageAccountKey": "never-echoed"}}}).result()
    assert ext.provisioning_state == "Succeeded"
    assert ext.protected_settings is None
    assert [e.name for e in c.virtual_machine_extensions.list(RG, "golden").value] == ["setup"]
    view = c.virtual_machines.instance_view(RG, "golden")
    assert "Enable succeeded" in view.extensions[0].statuses[0].message

    with pytest.raises(ResourceExistsError):  # not generalized yet
        c.images.begin_create_or_update(RG, "golden-img", {"location": clients.location, "properties": {
            "sourceVirtualMachine": {"id": c.virtual_machines.get(RG, "golden").id}}}).result()
    c.virtual_machines.begin_deallocate(RG, "golden").result()
    c.virtual_machines.generalize(RG, "golden")
    codes = [s.code for s in c.virtual_machines.instance_view(RG, "golden").statuses]
    assert "OSState/generalized" in codes and "PowerState/deallocated" in codes
    image = c.images.begin_create_or_update(RG, "golden-img", {"location": clients.location, "properties": {
        "sourceVirtualMachine": {"id": c.virtual_machines.get(RG, "golden").id}}}).result()
    assert image.source_virtual_machine.id.endswith("/golden")
    assert [d.lun for d in image.storage_profile.data_disks] == [1]
    c.virtual_machines.begin_create_or_update(RG, "clone", vm_body(clients.location, {"id": image.id})).result()
    assert run_script(c, RG, "clone", "cat /opt/cs/x", "ls -d /datadisks/lun1").split("\n")[:2] == [
        "from-extension", "/datadisks/lun1"]
    with pytest.raises(ResourceExistsError):  # a generalized VM does not start again
        c.virtual_machines.begin_start(RG, "golden").result()
    with pytest.raises(HttpResponseError) as e:  # Batch refuses images from machines with extensions
        clients.batch.create_pool({"id": "from-golden", "vmSize": "standard_a1_v2", "virtualMachineConfiguration": {
            "imageReference": {"virtualMachineImageId": image.id}, "nodeAgentSKUId": "batch.node.debian 12"}})
    assert e.value.status_code == 400 and e.value.error.code == "InvalidPropertyValue"
    assert "extensions" in {d.code: d.message for d in e.value.error.details}["Reason"]


def test_failing_custom_script_reports_failure(clients):
    c = clients.compute
    clients.resource.resource_groups.create_or_update(RG, {"location": clients.location})
    c.virtual_machines.begin_create_or_update(RG, "fails", vm_body(clients.location, base_image_reference(
        c, clients.location))).result()
    with pytest.raises(HttpResponseError):
        c.virtual_machine_extensions.begin_create_or_update(RG, "fails", "bad", {
            "location": clients.location, "properties": {
                "publisher": "Microsoft.Azure.Extensions", "type": "CustomScript", "typeHandlerVersion": "2.1",
                "settings": {"commandToExecute": "echo oops >&2; exit 3"}}}).result()
    status = c.virtual_machines.instance_view(RG, "fails").extensions[0].statuses[0]
    assert status.code == "ProvisioningState/failed/3" and "exit status=3" in status.message and "oops" in status.message
