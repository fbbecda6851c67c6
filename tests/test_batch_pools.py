"""Pools from custom images through the real azure-batch client, with shared key and bearer
authentication: nodes are real machines made from the image, the start task sees the
image's program and data, and pools resize, lose their image, and change as Azure says."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError

from conftest import build_flow, pool_settled, wait_for

RG = "batchimg"
IMAGE_CHECK = "/opt/tool/run on-node && grep -q reference-data /datadisks/lun0/input.txt"


@pytest.fixture(scope="module")
def image(clients):
    return build_flow(clients, RG)["image"]


def custom_pool(pool_id: str, image_id: str, dedicated: int = 1, low_priority: int = 0, **extra) -> dict:
    return {"id": pool_id, "vmSize": "standard_a1_v2",
            "virtualMachineConfiguration": {"imageReference": {"virtualMachineImageId": image_id},
                                            "nodeAgentSKUId": "batch.node.debian 12"},
            "targetDedicatedNodes": dedicated, "targetLowPriorityNodes": low_priority, **extra}


def base_pool(clients, pool_id: str, dedicated: int = 1, **extra) -> dict:
    image = next(iter(clients.batch_key.list_supported_images()))
    ref = image.image_reference
    return {"id": pool_id, "vmSize": "standard_a1_v2",
            "virtualMachineConfiguration": {"imageReference": {"publisher": ref.publisher, "offer": ref.offer,
                                                               "sku": ref.sku, "version": "latest"},
                                            "nodeAgentSKUId": image.node_agent_sku_id},
            "targetDedicatedNodes": dedicated, **extra}


def error_values(excinfo) -> dict:
    """A Batch error's `values`, as the SDK exposes them."""
    return {d.code: d.message for d in excinfo.value.error.details}


def test_supported_images_are_the_ones_that_exist(clients):
    images = list(clients.batch_key.list_supported_images())
    base = clients.compute.virtual_machine_images.list_publishers(clients.location)
    assert {i.image_reference.publisher for i in images} == {p.name for p in base}
    assert all(i.os_type == "linux" and i.verification_type == "verified" for i in images)
    assert images[0].node_agent_sku_id.startswith("batch.node.")


def test_custom_image_pool_nodes_run_the_image_software(clients, image):
    batch = clients.batch
    batch.create_pool(custom_pool("custom", image.id, dedicated=2, startTask={
        "commandLine": f"/bin/sh -c '{IMAGE_CHECK} && echo ok > $AZ_BATCH_NODE_SHARED_DIR/ready'",
        "waitForSuccess": True, "userIdentity": {"autoUser": {"scope": "pool", "elevationLevel": "admin"}}},
        networkConfiguration={"endpointConfiguration": {"inboundNATPools": [{
            "name": "ssh", "protocol": "tcp", "backendPort": 22, "frontendPortRangeStart": 40000,
            "frontendPortRangeEnd": 40099}]}}))
    pool, nodes = pool_settled(batch, "custom")
    assert pool.current_dedicated_nodes == 2 and pool.resize_errors in (None, [])
    assert pool.virtual_machine_configuration.image_reference.virtual_machine_image_id == image.id
    for node in nodes:
        assert node.is_dedicated and node.start_task_info.exit_code == 0
        assert node.start_task_info.result == "success"
        assert node.virtual_machine_info.image_reference.virtual_machine_image_id == image.id
    ports = sorted(n.endpoint_configuration.inbound_endpoints[0].frontend_port for n in nodes)
    assert ports == [40000, 40001]


def test_start_task_failure_is_reported_with_retries(clients, image):
    batch = clients.batch
    batch.create_pool(custom_pool("failing", image.id, startTask={
        "commandLine": "/bin/sh -c 'test -e /opt/tool/later'", "maxTaskRetryCount": 1, "waitForSuccess": True}))
    _, nodes = pool_settled(batch, "failing", states=("starttaskfailed",))
    info = nodes[0].start_task_info
    assert info.exit_code == 1 and info.retry_count == 1 and info.result == "failure"
    assert info.failure_info.code == "FailureExitCode" and info.failure_info.category == "usererror"
    batch.begin_delete_pool("failing", polling_interval=0.1).result()


def test_shared_key_is_refused_for_custom_image_pools(clients, image):
    with pytest.raises(HttpResponseError) as e:
        clients.batch_key.create_pool(custom_pool("by-key", image.id))
    assert e.value.status_code == 403 and e.value.error.code == "InsufficientPermissions"
    assert e.value.error.message.startswith("The specified type of authentication SharedKey is not allowed "
                                                  "when external resources of type Compute are linked.")
    with pytest.raises(ResourceNotFoundError):
        clients.batch.get_pool("by-key")
    with pytest.raises(HttpResponseError) as e:
        clients.batch_key.begin_resize_pool("custom", {"targetDedicatedNodes": 3}).result()
    assert e.value.status_code == 403


def test_resize_up_and_down(clients):
    batch = clients.batch_key
    batch.create_pool(base_pool(clients, "sizes", dedicated=1))
    pool_settled(batch, "sizes")
    batch.begin_resize_pool("sizes", {"targetDedicatedNodes": 3, "targetLowPriorityNodes": 1},
                            polling_interval=0.1).result()
    pool, nodes = pool_settled(batch, "sizes")
    assert (pool.current_dedicated_nodes, pool.current_low_priority_nodes) == (3, 1)
    assert sorted(n.is_dedicated for n in nodes) == [False, True, True, True]
    batch.begin_resize_pool("sizes", {"targetDedicatedNodes": 1, "targetLowPriorityNodes": 0,
                                      "nodeDeallocationOption": "terminate"}, polling_interval=0.1).result()
    pool, nodes = pool_settled(batch, "sizes")
    assert (pool.current_dedicated_nodes, pool.current_low_priority_nodes, len(nodes)) == (1, 0, 1)


def test_node_operations_and_counts(clients):
    batch = clients.batch_key
    batch.create_pool(base_pool(clients, "ops", dedicated=2, targetLowPriorityNodes=1, startTask={
        "commandLine": "/bin/sh -c 'echo started >> $AZ_BATCH_NODE_SHARED_DIR/boots'"}))
    _, nodes = pool_settled(batch, "ops")
    dedicated = [n for n in nodes if n.is_dedicated]
    low = next(n for n in nodes if not n.is_dedicated)
    # pages of one node, in id order, each continuing from the one before
    assert [n.id for n in batch.list_nodes("ops", max_results=1)] == sorted(n.id for n in nodes)
    assert [n.id for n in batch.list_nodes("ops", max_results=1, filter="isDedicated eq false")] == [low.id]
    batch.begin_reboot_node("ops", dedicated[0].id, {"nodeRebootOption": "requeue"}, polling_interval=0.1).result()
    batch.begin_reimage_node("ops", dedicated[1].id, {"nodeReimageOption": "requeue"}, polling_interval=0.1).result()
    _, nodes = pool_settled(batch, "ops")
    assert all(n.start_task_info.exit_code == 0 for n in nodes)
    batch.disable_node_scheduling("ops", dedicated[0].id, {"nodeDisableSchedulingOption": "requeue"})
    assert batch.get_node("ops", dedicated[0].id).scheduling_state == "disabled"
    batch.enable_node_scheduling("ops", dedicated[0].id)
    assert batch.get_node("ops", dedicated[0].id).scheduling_state == "enabled"
    for action in ("reboot", "reimage", "disablescheduling"):  # each read a body that was not an object: 500
        for body in ([1], [], "x", 0, False):  # ([] and 0 were taken for no body, and carried out)
            with pytest.raises(HttpResponseError) as e:  # (the SDK's pipeline raises every error)
                batch.send_request(_node_request("ops", dedicated[0].id, action, body))
            assert e.value.status_code == 400 and e.value.error.code == "InvalidRequestBody"
    assert batch.get_node("ops", dedicated[0].id).state == "idle"
    response = batch.send_request(_preempt_request("ops", low.id))
    assert response.status_code == 202
    wait_for(lambda: batch.get_node("ops", low.id).state == "preempted", what="preemption")
    counts = next(c for c in batch.list_pool_node_counts() if c.pool_id == "ops")
    assert counts.dedicated.idle == 2 and counts.dedicated.total == 2
    assert counts.low_priority.preempted == 1 and counts.low_priority.total == 1
    batch.begin_remove_nodes("ops", {"nodeList": [dedicated[1].id]}, polling_interval=0.1).result()
    pool, nodes = pool_settled(batch, "ops", states=("idle", "preempted"))
    assert pool.target_dedicated_nodes == 1 and dedicated[1].id not in {n.id for n in nodes}
    with pytest.raises(HttpResponseError) as e:
        batch.send_request(_preempt_request("ops", dedicated[0].id)).raise_for_status()
    assert e.value.status_code == 400


def _preempt_request(pool_id: str, node_id: str):
    return _node_request(pool_id, node_id, "batchyard.preempt", {})


def _node_request(pool_id: str, node_id: str, action: str, body):
    from azure.core.rest import HttpRequest
    return HttpRequest("POST", f"/pools/{pool_id}/nodes/{node_id}/{action}",
                       params={"api-version": "2025-06-01"}, headers={"content-type": "application/json"}, json=body)


def test_image_deleted_keeps_nodes_but_growth_fails(clients, image):
    c, batch = clients.compute, clients.batch
    storage = c.images.get(RG, image.name).storage_profile
    spare = c.images.begin_create_or_update(RG, "spare-image", {"location": clients.location, "properties": {
        "storageProfile": {"osDisk": {"osType": "Linux", "osState": "Generalized",
                                      "snapshot": {"id": storage.os_disk.snapshot.id}},
                           "dataDisks": [{"lun": 0, "snapshot": {"id": storage.data_disks[0].snapshot.id}}]}}}).result()
    batch.create_pool(custom_pool("orphan", spare.id, startTask={"commandLine": f"/bin/sh -c '{IMAGE_CHECK}'"}))
    _, nodes = pool_settled(batch, "orphan")
    c.images.begin_delete(RG, "spare-image").result()
    batch.begin_reboot_node("orphan", nodes[0].id, {"nodeRebootOption": "requeue"}, polling_interval=0.1).result()
    _, nodes = pool_settled(batch, "orphan")
    assert nodes[0].start_task_info.exit_code == 0  # the node still has the image's files
    batch.begin_resize_pool("orphan", {"targetDedicatedNodes": 2}, polling_interval=0.1).result()
    pool = batch.get_pool("orphan")
    assert pool.allocation_state == "steady" and pool.current_dedicated_nodes == 1
    assert pool.resize_errors[0].code == "AllocationFailed"
    assert pool.resize_errors[0].message == ("There was an error encountered while performing the last resize on "
                                             "the pool. Please try resizing the pool again.")
    batch.begin_resize_pool("orphan", {"targetDedicatedNodes": 0}, polling_interval=0.1).result()
    pool = batch.get_pool("orphan")
    assert pool.current_dedicated_nodes == 0 and not pool.resize_errors
    c.images.begin_create_or_update(RG, "spare-image", {"location": clients.location, "properties": {
        "storageProfile": {"osDisk": {"osType": "Linux", "osState": "Generalized",
                                      "snapshot": {"id": storage.os_disk.snapshot.id}}}}}).result()
    batch.begin_resize_pool("orphan", {"targetDedicatedNodes": 1}, polling_interval=0.1).result()
    pool, _ = pool_settled(batch, "orphan")
    assert pool.current_dedicated_nodes == 1 and not pool.resize_errors


def test_image_must_be_in_the_accounts_subscription_and_region(clients, image):
    c, batch = clients.compute, clients.batch
    clients.resource.resource_groups.create_or_update("far", {"location": "eastus"})
    snapshot = c.images.get(RG, image.name).storage_profile.os_disk.snapshot.id
    with pytest.raises(HttpResponseError):  # a snapshot must be in its source's region, as in Azure
        c.snapshots.begin_create_or_update("far", "snap", {"location": "eastus", "properties": {
            "creationData": {"createOption": "Copy", "sourceResourceId": snapshot}}}).result()
    far_disk = c.disks.begin_create_or_update("far", "empty", {"location": "eastus", "properties": {
        "creationData": {"createOption": "Empty"}, "diskSizeGB": 1, "osType": "Linux"}}).result()
    far_image = c.images.begin_create_or_update("far", "img", {"location": "eastus", "properties": {
        "storageProfile": {"osDisk": {"osType": "Linux", "osState": "Generalized",
                                      "managedDisk": {"id": far_disk.id}}}}}).result()
    with pytest.raises(HttpResponseError) as e:
        batch.create_pool(custom_pool("far-pool", far_image.id))
    assert e.value.status_code == 400 and e.value.error.code == "InvalidPropertyValue"
    reason = error_values(e)["Reason"]
    assert "eastus" in reason and clients.location in reason
    other_sub = image.id.replace(clients.subscription, "11111111-2222-3333-4444-555555555555")
    with pytest.raises(HttpResponseError) as e:
        batch.create_pool(custom_pool("other-sub", other_sub))
    reason = error_values(e)["Reason"]
    assert "11111111-2222-3333-4444-555555555555" in reason and clients.subscription in reason
    for pool_id in ("far-pool", "other-sub"):
        with pytest.raises(ResourceNotFoundError):
            batch.get_pool(pool_id)


def test_list_filter_select_paging_and_conditions(clients):
    batch = clients.batch_key
    for index in range(3):
        batch.create_pool(base_pool(clients, f"page-{index}", dedicated=0, metadata=[{"name": "i", "value": str(index)}]))
    ids = [p.id for p in batch.list_pools(filter="startswith(id,'page-')", max_results=1, select=["id", "state"])]
    assert ids == ["page-0", "page-1", "page-2"]
    selected = next(iter(batch.list_pools(filter="id eq 'page-1'", select=["id"])))
    assert selected.id == "page-1" and selected.vm_size is None
    assert batch.pool_exists("page-1") is True
    with pytest.raises(ResourceNotFoundError):
        batch.pool_exists("missing")
    headers = batch.get_pool("page-1", cls=lambda response, body, headers: headers)
    from azure.core import MatchConditions
    batch.update_pool("page-1", {"metadata": [{"name": "changed", "value": "yes"}]},
                      etag=headers["ETag"], match_condition=MatchConditions.IfNotModified)
    assert batch.get_pool("page-1").metadata[0].name == "changed"
    with pytest.raises(Exception) as e:  # the eTag changed with the update
        batch.update_pool("page-1", {"metadata": []}, etag=headers["ETag"],
                          match_condition=MatchConditions.IfNotModified)
    assert e.value.status_code == 412
    batch.replace_pool_properties("page-1", {"metadata": [], "applicationPackageReferences": []})
    assert not batch.get_pool("page-1").metadata
    for index in range(3):
        batch.begin_delete_pool(f"page-{index}", polling_interval=0.1).result()
        with pytest.raises(ResourceNotFoundError):
            batch.get_pool(f"page-{index}")


def test_pool_usage_metrics_count_core_hours(clients):
    batch = clients.batch_key
    rows = {r.pool_id: r for r in batch.list_pool_usage_metrics()}
    assert rows["sizes"].vm_size == "standard_a1_v2" and rows["sizes"].total_core_hours > 0
    # "sizes" grew to four nodes and shrank to one: none of them, gone or not, ran before it existed
    created = batch.get_pool("sizes").creation_time
    before = {r.pool_id: r for r in batch.list_pool_usage_metrics(start_time=created - timedelta(hours=2),
                                                                   end_time=created - timedelta(hours=1))}
    assert before["sizes"].total_core_hours == 0


@pytest.mark.parametrize("body, code, prop", [
    ({"id": "bad", "vmSize": "standard_a1_v2"}, "MissingRequiredProperty", "virtualMachineConfiguration"),
    ({"vmSize": "standard_a1_v2"}, "MissingRequiredProperty", "id"),
    ({"id": "bad id!", "vmSize": "standard_a1_v2"}, "InvalidPropertyValue", "id"),
    ({"id": "bad", "vmSize": "standard_nonsense"}, "InvalidPropertyValue", "vmSize"),
])
def test_bad_pool_bodies(clients, body, code, prop):
    with pytest.raises(HttpResponseError) as e:
        clients.batch_key.create_pool(body)
    assert e.value.status_code == 400 and e.value.error.code == code
    assert error_values(e)["PropertyName"] == prop


@pytest.mark.parametrize("change, prop", [
    ({"targetDedicatedNodes": -1}, "targetDedicatedNodes"),
    ({"targetLowPriorityNodes": "two"}, "targetLowPriorityNodes"),
    ({"resizeTimeout": "15 minutes"}, "resizeTimeout"),
    ({"resizeTimeout": "PT1M"}, "resizeTimeout"),
    ({"taskSlotsPerNode": 0}, "taskSlotsPerNode"),
])
def test_bad_pool_values(clients, change, prop):
    with pytest.raises(HttpResponseError) as e:
        clients.batch_key.create_pool({**base_pool(clients, "bad-values"), **change})
    assert e.value.status_code == 400 and e.value.error.code == "InvalidPropertyValue"
    assert error_values(e)["PropertyName"] == prop


@pytest.mark.parametrize("change, prop", [
    ({"userAccounts": [{"name": "u", "password": "p@ss"}]}, "userAccounts"),
    ({"mountConfiguration": [{"nfsMountConfiguration": {"source": "s", "relativeMountPath": "m"}}]},
     "mountConfiguration"),
    ({"upgradePolicy": {"mode": "automatic"}}, "upgradePolicy"),
    ({"virtualMachineConfiguration": {"dataDisks": [{"lun": 1, "diskSizeGB": 8}]}},
     "virtualMachineConfiguration.dataDisks"),
    ({"virtualMachineConfiguration": {"securityProfile": {"securityType": "trustedLaunch"}}},
     "virtualMachineConfiguration.securityProfile"),
    ({"virtualMachineConfiguration": {"extensions": [{"name": "e", "publisher": "p", "type": "t"}]}},
     "virtualMachineConfiguration.extensions"),
    ({"applicationLicenses": ["maya"]}, "applicationLicenses"),
    ({"networkConfiguration": {"bogus": 1}}, "networkConfiguration.bogus"),
    ({"networkConfiguration": {"publicIPAddressConfiguration": {"provision": "usermanaged", "ipAddressIds": [
        "/subscriptions/s/resourceGroups/g/providers/Microsoft.Network/publicIPAddresses/ip"]}}},
     "networkConfiguration.publicIPAddressConfiguration.ipAddressIds"),
    ({"networkConfiguration": {"dynamicVNetAssignmentScope": "job"}}, "networkConfiguration.dynamicVNetAssignmentScope"),
])
def test_settings_not_honoured_are_refused_not_ignored(clients, change, prop):
    body = base_pool(clients, "unhonoured")
    vm_config = change.pop("virtualMachineConfiguration", {})
    body["virtualMachineConfiguration"].update(vm_config)
    with pytest.raises(HttpResponseError) as e:
        clients.batch_key.create_pool({**body, **change})
    assert e.value.status_code == 400 and e.value.error.code == "InvalidPropertyValue"
    assert error_values(e)["PropertyName"] == prop
    with pytest.raises(ResourceNotFoundError):
        clients.batch_key.get_pool("unhonoured")


def test_a_pool_patch_changes_what_it_can_and_refuses_what_nodes_keep_from_creation(clients):
    """PATCH pool changes its display name, tags and the rest it may; what a node is made
    with (vmSize, image, slots, scheduling, network) it refuses to change, where Azure would
    change it on an empty pool, rather than answer 200 and change nothing; the same values
    sent back are not a change. Settings refused at creation are refused here too, and so
    are certificates, but for the empty list older SDKs always send."""
    batch = clients.batch_key
    batch.create_pool({**base_pool(clients, "patched", dedicated=0), "resourceTags": {"team": "render"},
                       "targetNodeCommunicationMode": "simplified"})
    pool = batch.get_pool("patched")
    # fields of older api-versions (the SDK's models no longer name them): recorded and shown
    assert (pool.get("resourceTags"), pool.get("targetNodeCommunicationMode")) == ({"team": "render"}, "simplified")
    batch.update_pool("patched", {"displayName": "Patched", "resourceTags": {"team": "vfx"},
                                  "vmSize": pool.vm_size.upper(), "taskSlotsPerNode": pool.task_slots_per_node})
    pool = batch.get_pool("patched")
    assert (pool.display_name, pool.get("resourceTags")) == ("Patched", {"team": "vfx"})
    for change, prop in (({"vmSize": "standard_d4s_v3"}, "vmSize"), ({"taskSlotsPerNode": 2}, "taskSlotsPerNode"),
                         ({"taskSchedulingPolicy": {"nodeFillType": "pack"}}, "taskSchedulingPolicy"),
                         ({"enableInterNodeCommunication": True}, "enableInterNodeCommunication"),
                         ({"mountConfiguration": [{"nfsMountConfiguration": {"source": "s", "relativeMountPath": "m"}}]},
                          "mountConfiguration"),
                         ({"certificateReferences": [{"thumbprint": "ab", "thumbprintAlgorithm": "sha1"}]},
                          "certificateReferences")):
        with pytest.raises(HttpResponseError) as e:
            batch.update_pool("patched", change)
        assert e.value.status_code == 400 and error_values(e)["PropertyName"] == prop
    assert batch.get_pool("patched").vm_size == pool.vm_size
    batch.replace_pool_properties("patched", {"metadata": [], "applicationPackageReferences": [],
                                              "certificateReferences": []})
    with pytest.raises(HttpResponseError) as e:
        batch.replace_pool_properties("patched", {"metadata": [], "applicationPackageReferences": [],
                                                  "certificateReferences": [{"thumbprint": "ab",
                                                                             "thumbprintAlgorithm": "sha1"}]})
    assert error_values(e)["PropertyName"] == "certificateReferences"
    batch.begin_delete_pool("patched", polling_interval=0.1).result()


def test_references_to_applications_that_do_not_exist_are_refused(clients):
    batch = clients.batch_key
    with pytest.raises(HttpResponseError) as e:  # no application "blender" exists in the account
        batch.create_pool({**base_pool(clients, "apps", dedicated=0), "applicationPackageReferences": [
            {"applicationId": "blender", "version": "1.0"}]})
    assert e.value.status_code == 409 and e.value.error.code == "InvalidApplicationPackageReferences"
    batch.create_pool(base_pool(clients, "tagged", dedicated=0))
    with pytest.raises(HttpResponseError) as e:
        batch.replace_pool_properties("tagged", {"metadata": [], "applicationPackageReferences": [
            {"applicationId": "blender"}]})
    assert e.value.error.code == "InvalidApplicationPackageReferences"
    batch.begin_delete_pool("tagged", polling_interval=0.1).result()


def test_windows_images_and_wrong_agents_are_refused(clients, image):
    c, batch = clients.compute, clients.batch
    snapshot = c.images.get(RG, image.name).storage_profile.os_disk.snapshot.id
    windows = c.images.begin_create_or_update(RG, "windows", {"location": clients.location, "properties": {
        "storageProfile": {"osDisk": {"osType": "Windows", "osState": "Generalized",
                                      "snapshot": {"id": snapshot}}}}}).result()
    with pytest.raises(HttpResponseError) as e:
        batch.create_pool(custom_pool("windows", windows.id))
    assert e.value.status_code == 400 and "Windows" in error_values(e)["Reason"]
    wrong_agent = custom_pool("wrong-agent", image.id)
    wrong_agent["virtualMachineConfiguration"]["nodeAgentSKUId"] = "batch.node.windows amd64"
    with pytest.raises(HttpResponseError) as e:
        batch.create_pool(wrong_agent)
    assert error_values(e)["PropertyName"] == "virtualMachineConfiguration.nodeAgentSKUId"
    market = base_pool(clients, "wrong-market-agent")
    market["virtualMachineConfiguration"]["nodeAgentSKUId"] = "batch.node.ubuntu 22.04"
    with pytest.raises(HttpResponseError) as e:
        clients.batch_key.create_pool(market)
    assert error_values(e)["PropertyName"] == "virtualMachineConfiguration.nodeAgentSKUId"


def test_unknown_image_and_pool_errors(clients, image):
    batch = clients.batch
    missing = image.id.rsplit("/", 1)[0] + "/no-such-image"
    with pytest.raises(HttpResponseError) as e:
        batch.create_pool(custom_pool("ghost", missing))
    assert e.value.status_code == 400 and "does not exist" in error_values(e)["Reason"]
    with pytest.raises(ResourceNotFoundError) as e:
        batch.get_pool("nope")
    assert e.value.error.code == "PoolNotFound"
    with pytest.raises(ResourceExistsError) as e:
        batch.create_pool(custom_pool("custom", image.id))
    assert e.value.error.code == "PoolExists"
    with pytest.raises(HttpResponseError) as e:
        batch.begin_resize_pool("nope", {"targetDedicatedNodes": 1}).result()
    assert e.value.status_code == 404
    batch.disable_pool_auto_scale("custom")  # a pool of fixed targets keeps them
    assert not batch.get_pool("custom").enable_auto_scale


def test_a_pool_being_deleted_cannot_change(clients):
    batch = clients.batch_key
    batch.create_pool(base_pool(clients, "doomed", dedicated=10))
    pool_settled(batch, "doomed")
    batch.begin_delete_pool("doomed")  # ten machines take a while to take apart
    assert batch.get_pool("doomed").state == "deleting"
    with pytest.raises(ResourceExistsError) as e:
        batch.begin_resize_pool("doomed", {"targetDedicatedNodes": 1})
    assert e.value.error.code == "PoolBeingDeleted"
    wait_for(lambda: "doomed" not in {p.id for p in batch.list_pools()}, what="the pool to go")


def test_start_tasks_run_on_every_node_at_once(clients):
    """Azure runs every node's start task at once: each node waits in waitingforstarttask
    while its own runs, and no node waits for another's (formerly four at a time). A start
    task of task scope runs as the user Azure names for it, `_azbatchtask_start`."""
    batch = clients.batch_key
    began = time.monotonic()
    batch.create_pool(base_pool(clients, "together", dedicated=8, startTask={
        "commandLine": "/bin/sh -c 'sleep 3; id -u; echo $AZ_BATCH_TASK_USER $AZ_BATCH_TASK_USER_IDENTITY $USER'",
        "waitForSuccess": True, "userIdentity": {"autoUser": {"scope": "task"}}}))
    _, nodes = pool_settled(batch, "together")
    out = b"".join(batch.download_node_file("together", nodes[0].id, "startup/stdout.txt")).decode()
    assert out == "10002\n_azbatchtask_start TaskNonAdmin _azbatchtask_start\n"
    elapsed = time.monotonic() - began
    infos = [n.start_task_info for n in nodes]
    assert len(nodes) == 8 and all(i.exit_code == 0 and i.result == "success" for i in infos)
    # every start task had begun before the first one ended: they overlapped, all eight
    assert max(i.start_time for i in infos) < min(i.end_time for i in infos)
    assert elapsed < 12, f"8 nodes with a 3 s start task took {elapsed:.1f} s to become idle"
    batch.begin_delete_pool("together", polling_interval=0.1).result()
