"""Pools on the management plane through the real azure-mgmt-batch client: the same pools the
data plane (azure-batch) serves, with the same nodes and targets, changed from either side;
ARM's shape (PascalCase enums, scaleSettings, resizeOperationStatus, etag), its errors, its
conditional requests, and the pool's identity."""

from __future__ import annotations

import pytest
from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.mgmt.batch import models

from batchyard import defaults
from conftest import Clients, Server, build_flow, pool_settled, wait_for
from test_batch_pools import IMAGE_CHECK, base_pool

RG, ACCOUNT = defaults.RESOURCE_GROUP, defaults.BATCH_ACCOUNT
IMAGE_RG = "mgmtpools"
IDENTITY = "/subscriptions/{sub}/resourceGroups/ids/providers/Microsoft.ManagedIdentity/userAssignedIdentities/pool-id"


@pytest.fixture(scope="module")
def image(clients):
    return build_flow(clients, IMAGE_RG)["image"]


@pytest.fixture(scope="module")
def base_reference(clients) -> tuple[dict, str]:
    image = next(iter(clients.batch_key.list_supported_images()))
    ref = image.image_reference
    return {"publisher": ref.publisher, "offer": ref.offer, "sku": ref.sku, "version": "latest"}, \
        image.node_agent_sku_id


def arm_pool(image_reference: dict, agent: str, dedicated: int = 1, **properties) -> dict:
    return {"properties": {
        "vmSize": "STANDARD_A1_V2",
        "deploymentConfiguration": {"virtualMachineConfiguration": {"imageReference": image_reference,
                                                                    "nodeAgentSkuId": agent}},
        "scaleSettings": {"fixedScale": {"targetDedicatedNodes": dedicated, "targetLowPriorityNodes": 0,
                                         "resizeTimeout": "PT15M"}},
        **properties}}


def settled_arm(clients, name: str, dedicated: int):
    """The pool seen through ARM once it is steady with `dedicated` nodes."""
    def check():
        pool = clients.batch_mgmt.pool.get(RG, ACCOUNT, name)
        return pool.allocation_state == "Steady" and pool.current_dedicated_nodes == dedicated and pool
    return wait_for(check, what=f"pool {name} to be steady with {dedicated} nodes on ARM")


def arm_error(status: int, code: str, call, *args, **kwargs):
    with pytest.raises(HttpResponseError) as e:
        result = call(*args, **kwargs)
        if hasattr(result, "result"):
            result.result()
    assert e.value.status_code == status and e.value.error.code == code, e.value.message
    return e.value


def test_custom_image_pool_made_on_arm_is_the_data_planes_pool(clients, image):
    identity_id = IDENTITY.format(sub=clients.subscription)
    body = arm_pool({"id": image.id}, "batch.node.debian 12", dedicated=2, taskSlotsPerNode=2,
                    interNodeCommunication="Disabled",
                    metadata=[{"name": "owner", "value": "arm"}],
                    startTask={"commandLine": f"/bin/sh -c '{IMAGE_CHECK}'", "waitForSuccess": True,
                               "userIdentity": {"autoUser": {"scope": "Pool", "elevationLevel": "Admin"}}},
                    networkConfiguration={"endpointConfiguration": {"inboundNatPools": [{
                        "name": "ssh", "protocol": "TCP", "backendPort": 22, "frontendPortRangeStart": 41000,
                        "frontendPortRangeEnd": 41099}]}})
    body["identity"] = {"type": "UserAssigned", "userAssignedIdentities": {identity_id: {}}}
    created = clients.batch_mgmt.pool.create(RG, ACCOUNT, "arm-custom", body)
    assert created.name == "arm-custom" and created.type == "Microsoft.Batch/batchAccounts/pools"
    assert created.provisioning_state == "Succeeded" and created.etag.startswith('W/"0x')
    assert created.id.lower().endswith(f"/batchaccounts/{ACCOUNT}/pools/arm-custom")

    pool, nodes = pool_settled(clients.batch, "arm-custom")
    assert pool.virtual_machine_configuration.image_reference.virtual_machine_image_id == image.id
    assert pool.virtual_machine_configuration.node_agent_sku_id == "batch.node.debian 12"
    assert (pool.target_dedicated_nodes, pool.current_dedicated_nodes, len(nodes)) == (2, 2, 2)
    assert pool.task_slots_per_node == 2 and pool.metadata[0].value == "arm"
    assert pool.identity.type == "UserAssigned"
    assert pool.identity.user_assigned_identities[0].resource_id == identity_id
    assert all(n.start_task_info.exit_code == 0 for n in nodes)
    assert sorted(n.endpoint_configuration.inbound_endpoints[0].frontend_port for n in nodes) == [41000, 41001]

    arm = settled_arm(clients, "arm-custom", 2)
    vm = arm.deployment_configuration.virtual_machine_configuration
    assert vm.image_reference.id == image.id and vm.node_agent_sku_id == "batch.node.debian 12"
    assert arm.vm_size == "STANDARD_A1_V2" and arm.inter_node_communication == "Disabled"
    assert arm.scale_settings.fixed_scale.target_dedicated_nodes == 2
    assert arm.network_configuration.endpoint_configuration.inbound_nat_pools[0].protocol == "TCP"
    assert arm.start_task.user_identity.auto_user.elevation_level == "Admin"
    assert arm.task_scheduling_policy.node_fill_type == "Spread"
    assert arm.identity.type == "UserAssigned"
    recorded = arm.identity.user_assigned_identities[identity_id]
    assert recorded["clientId"] and recorded["principalId"]
    assert arm.etag == f'W/"{clients.batch.get_pool("arm-custom").etag}"'
    # the image rules are the data plane's: a shared key may not grow a custom-image pool
    with pytest.raises(HttpResponseError) as e:
        clients.batch_key.begin_resize_pool("arm-custom", {"targetDedicatedNodes": 3}).result()
    assert e.value.status_code == 403


def test_resize_from_either_plane_is_seen_by_the_other(clients, base_reference):
    reference, agent = base_reference
    mgmt = clients.batch_mgmt.pool
    mgmt.create(RG, ACCOUNT, "arm-sizes", arm_pool(reference, agent, dedicated=1))
    settled_arm(clients, "arm-sizes", 1)
    updated = mgmt.update(RG, ACCOUNT, "arm-sizes", {"properties": {"scaleSettings": {"fixedScale": {
        "targetDedicatedNodes": 3, "nodeDeallocationOption": "TaskCompletion"}}}})
    assert updated.allocation_state == "Resizing"
    assert updated.resize_operation_status.target_dedicated_nodes == 3
    assert updated.resize_operation_status.node_deallocation_option == "TaskCompletion"
    pool, nodes = pool_settled(clients.batch_key, "arm-sizes")
    assert (pool.target_dedicated_nodes, pool.current_dedicated_nodes, len(nodes)) == (3, 3, 3)

    clients.batch_key.begin_resize_pool("arm-sizes", {"targetDedicatedNodes": 1, "resizeTimeout": "PT20M"},
                                        polling_interval=0.1).result()
    pool_settled(clients.batch_key, "arm-sizes")
    arm = settled_arm(clients, "arm-sizes", 1)
    assert arm.scale_settings.fixed_scale.target_dedicated_nodes == 1
    assert arm.scale_settings.fixed_scale.resize_timeout.total_seconds() == 20 * 60
    assert arm.resize_operation_status.target_dedicated_nodes == 1
    assert arm.resize_operation_status.start_time is not None


def test_a_data_plane_pool_is_readable_and_changeable_on_arm(clients):
    clients.batch_key.create_pool(base_pool(clients, "dp-made", dedicated=1, metadata=[{"name": "a", "value": "1"}]))
    pool, _ = pool_settled(clients.batch_key, "dp-made")
    arm = settled_arm(clients, "dp-made", 1)
    image = arm.deployment_configuration.virtual_machine_configuration.image_reference
    assert image.publisher == pool.virtual_machine_configuration.image_reference.publisher
    assert arm.metadata[0].name == "a" and arm.etag == f'W/"{pool.etag}"'
    assert arm.identity is None
    changed = clients.batch_mgmt.pool.update(RG, ACCOUNT, "dp-made", models.Pool(
        metadata=[models.MetadataItem(name="b", value="2")], display_name="made on the data plane"))
    assert [m.name for m in changed.metadata] == ["b"] and changed.display_name == "made on the data plane"
    seen = clients.batch_key.get_pool("dp-made")
    assert [m.name for m in seen.metadata] == ["b"] and seen.display_name == "made on the data plane"
    # "startTask": {} removes the start task, as Azure's management plane does
    clients.batch_key.update_pool("dp-made", {"startTask": {"commandLine": "/bin/true"}})
    clients.batch_mgmt.pool.update(RG, ACCOUNT, "dp-made", {"properties": {"startTask": {}}})
    assert clients.batch_key.get_pool("dp-made").start_task is None


def test_list_filter_select_and_paging(clients, base_reference):
    reference, agent = base_reference
    for name in ("list-a", "list-b", "list-c"):
        clients.batch_mgmt.pool.create(RG, ACCOUNT, name, arm_pool(reference, agent, dedicated=0))
    listed = list(clients.batch_mgmt.pool.list_by_batch_account(
        RG, ACCOUNT, maxresults=1, filter="startswith(name, 'list-')"))
    assert [p.name for p in listed] == ["list-a", "list-b", "list-c"]
    steady = wait_for(lambda: len(list(clients.batch_mgmt.pool.list_by_batch_account(
        RG, ACCOUNT, filter="startswith(name, 'list-') and properties/allocationState eq 'Steady'"))) == 3,
        what="the empty pools to be steady")
    assert steady
    selected = list(clients.batch_mgmt.pool.list_by_batch_account(
        RG, ACCOUNT, filter="name eq 'list-b'", select="properties/allocationState,properties/vmSize"))
    assert len(selected) == 1
    assert selected[0].allocation_state == "Steady" and selected[0].vm_size == "STANDARD_A1_V2"
    assert selected[0].deployment_configuration is None and selected[0].name == "list-b"
    arm_error(400, "InvalidQueryParameterValue", lambda: list(clients.batch_mgmt.pool.list_by_batch_account(
        RG, ACCOUNT, filter="name eq")))
    arm_error(400, "InvalidQueryParameterValue", lambda: list(clients.batch_mgmt.pool.list_by_batch_account(
        RG, ACCOUNT, select="vmSize")))


def test_delete_on_arm_removes_the_pool_from_the_data_plane(clients, base_reference):
    reference, agent = base_reference
    clients.batch_mgmt.pool.create(RG, ACCOUNT, "arm-gone", arm_pool(reference, agent, dedicated=2))
    pool_settled(clients.batch_key, "arm-gone")
    clients.batch_mgmt.pool.begin_delete(RG, ACCOUNT, "arm-gone", polling_interval=0.1).result()
    with pytest.raises(ResourceNotFoundError):
        clients.batch_key.get_pool("arm-gone")
    arm_error(404, "PoolNotFound", clients.batch_mgmt.pool.get, RG, ACCOUNT, "arm-gone")
    # deleting what is not there is not an error (204)
    clients.batch_mgmt.pool.begin_delete(RG, ACCOUNT, "arm-gone", polling_interval=0.1).result()


def test_a_pool_deleted_on_the_data_plane_is_gone_from_arm(clients, base_reference):
    reference, agent = base_reference
    clients.batch_mgmt.pool.create(RG, ACCOUNT, "dp-gone", arm_pool(reference, agent, dedicated=1))
    clients.batch_key.begin_delete_pool("dp-gone", polling_interval=0.1).result()
    arm_error(404, "PoolNotFound", clients.batch_mgmt.pool.get, RG, ACCOUNT, "dp-gone")


def test_conditional_requests_and_redeploying_the_same_body(clients, base_reference):
    reference, agent = base_reference
    mgmt = clients.batch_mgmt.pool
    body = arm_pool(reference, agent, dedicated=0)
    first = mgmt.create(RG, ACCOUNT, "etags", body, match_condition=MatchConditions.IfMissing, etag="*")
    with pytest.raises(ResourceExistsError) as e:
        mgmt.create(RG, ACCOUNT, "etags", body, match_condition=MatchConditions.IfMissing, etag="*")
    assert e.value.status_code == 412
    again = mgmt.create(RG, ACCOUNT, "etags", body)  # a template deployed twice
    assert again.etag != first.etag and again.scale_settings.fixed_scale.target_dedicated_nodes == 0
    with pytest.raises(ResourceModifiedError) as e:
        mgmt.update(RG, ACCOUNT, "etags", {"properties": {"metadata": [{"name": "x", "value": "y"}]}},
                    etag=first.etag, match_condition=MatchConditions.IfNotModified)
    assert e.value.status_code == 412
    assert clients.batch_key.get_pool("etags").metadata in (None, [])
    current = settled_arm(clients, "etags", 0)  # the etag changes while the pool settles
    changed = mgmt.update(RG, ACCOUNT, "etags", {"properties": {"metadata": [{"name": "x", "value": "y"}]}},
                          etag=current.etag, match_condition=MatchConditions.IfNotModified)
    assert changed.metadata[0].value == "y"
    with pytest.raises(ResourceNotFoundError) as e:
        mgmt.create(RG, ACCOUNT, "never-made", body, match_condition=MatchConditions.IfPresent, etag="*")
    assert e.value.status_code == 412
    arm_error(404, "PoolNotFound", mgmt.get, RG, ACCOUNT, "never-made")


def test_identity_and_tags_are_recorded_and_can_be_changed(clients, base_reference):
    reference, agent = base_reference
    mgmt = clients.batch_mgmt.pool
    identity_id = IDENTITY.format(sub=clients.subscription)
    body = arm_pool(reference, agent, dedicated=0)
    body["identity"] = {"type": "UserAssigned", "userAssignedIdentities": {identity_id: {}}}
    body["tags"] = {"team": "a"}
    made = mgmt.create(RG, ACCOUNT, "with-id", body)
    assert made.tags == {"team": "a"}
    client_id = made.identity.user_assigned_identities[identity_id]["clientId"]
    assert mgmt.get(RG, ACCOUNT, "with-id").identity.user_assigned_identities[identity_id]["clientId"] == client_id
    same = mgmt.update(RG, ACCOUNT, "with-id", {"identity": body["identity"]})
    assert same.identity.user_assigned_identities[identity_id]["clientId"] == client_id
    assert same.tags == {"team": "a"}
    none = mgmt.update(RG, ACCOUNT, "with-id", {"identity": {"type": "None"}, "tags": {"team": "b"}})
    assert none.tags == {"team": "b"}
    assert none.identity.type == "None" and clients.batch_key.get_pool("with-id").identity.type == "None"
    error = arm_error(400, "InvalidPropertyValue", mgmt.update, RG, ACCOUNT, "with-id",
                      {"identity": {"type": "SystemAssigned"}})
    assert error.error.target == "identity.type"
    error = arm_error(400, "InvalidPropertyValue", mgmt.update, RG, ACCOUNT, "with-id",
                      {"identity": {"type": "UserAssigned", "userAssignedIdentities": {"not-an-id": {}}}})
    assert error.error.target == "identity.userAssignedIdentities"


def test_autoscale_settings_are_the_data_planes_autoscale(clients, base_reference):
    reference, agent = base_reference
    mgmt = clients.batch_mgmt.pool
    body = arm_pool(reference, agent)
    body["properties"]["scaleSettings"] = {"autoScale": {"formula": "$TargetDedicatedNodes = 1 +",
                                                         "evaluationInterval": "PT5M"}}
    error = arm_error(400, "AutoScalingFormulaSyntaxError", mgmt.create, RG, ACCOUNT, "auto", body)
    assert "line 1, column 28" in error.error.message
    arm_error(404, "PoolNotFound", mgmt.get, RG, ACCOUNT, "auto")
    body["properties"]["scaleSettings"]["autoScale"]["formula"] = "$TargetDedicatedNodes=1"
    pool = mgmt.create(RG, ACCOUNT, "auto", body)
    assert pool.scale_settings.auto_scale.formula == "$TargetDedicatedNodes=1"
    assert pool.scale_settings.auto_scale.evaluation_interval.total_seconds() == 300
    assert pool.scale_settings.fixed_scale is None
    assert pool.auto_scale_run.results.startswith("$TargetDedicatedNodes=1;") and pool.auto_scale_run.evaluation_time
    assert clients.batch_key.get_pool("auto").enable_auto_scale
    wait_for(lambda: mgmt.get(RG, ACCOUNT, "auto").allocation_state == "Steady", what="the formula's node")
    fixed = mgmt.update(RG, ACCOUNT, "auto", {"properties": {"scaleSettings": {"fixedScale": {
        "targetDedicatedNodes": 0}}}})
    assert fixed.scale_settings.fixed_scale.target_dedicated_nodes == 0 and fixed.auto_scale_run is None
    assert not clients.batch_key.get_pool("auto").enable_auto_scale
    wait_for(lambda: mgmt.get(RG, ACCOUNT, "auto").allocation_state == "Steady", what="the resize to 0")
    again = mgmt.update(RG, ACCOUNT, "auto", {"properties": {"scaleSettings": {"autoScale": {
        "formula": "$TargetDedicatedNodes=0"}}}})
    assert again.scale_settings.auto_scale.evaluation_interval.total_seconds() == 900  # Azure's default
    pool = mgmt.disable_auto_scale(RG, ACCOUNT, "auto")
    assert pool.scale_settings.fixed_scale.target_dedicated_nodes == 0 and pool.scale_settings.auto_scale is None
    error = arm_error(400, "InvalidPropertyValue", mgmt.update, RG, ACCOUNT, "auto", {"properties": {
        "scaleSettings": {"autoScale": {"formula": "$TargetDedicatedNodes=1", "evaluationInterval": "PT1M"}}}})
    assert error.error.target == "properties.scaleSettings.autoScale.evaluationInterval"


def _without(body: dict, *path: str) -> dict:
    node = body
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    return body


@pytest.mark.parametrize("change, code, target", [
    (lambda b: _without(b, "properties", "vmSize"), "MissingRequiredProperty", "properties.vmSize"),
    (lambda b: _without(b, "properties", "deploymentConfiguration"), "MissingRequiredProperty",
     "properties.deploymentConfiguration.virtualMachineConfiguration"),
    (lambda b: b["properties"].update(vmSize="Standard_Nope"), "InvalidPropertyValue", "properties.vmSize"),
    (lambda b: b["properties"]["deploymentConfiguration"]["virtualMachineConfiguration"].update(
        nodeAgentSkuId="batch.node.windows amd64"), "InvalidPropertyValue",
     "properties.deploymentConfiguration.virtualMachineConfiguration.nodeAgentSkuId"),
    (lambda b: b["properties"]["deploymentConfiguration"]["virtualMachineConfiguration"].update(
        imageReference={"id": "/subscriptions/x/resourceGroups/r/providers/Microsoft.Compute/images/none"}),
     "InvalidPropertyValue", "properties.deploymentConfiguration.virtualMachineConfiguration.imageReference.id"),
    (lambda b: b["properties"]["scaleSettings"]["fixedScale"].update(targetDedicatedNodes=-1),
     "InvalidPropertyValue", "properties.scaleSettings.fixedScale.targetDedicatedNodes"),
    (lambda b: b["properties"]["scaleSettings"]["fixedScale"].update(resizeTimeout="soon"),
     "InvalidPropertyValue", "properties.scaleSettings.fixedScale.resizeTimeout"),
    (lambda b: b["properties"].update(interNodeCommunication="Sometimes"), "InvalidPropertyValue",
     "properties.interNodeCommunication"),
    (lambda b: b["properties"].update(taskSchedulingPolicy={"nodeFillType": "Scatter"}), "InvalidPropertyValue",
     "properties.taskSchedulingPolicy.nodeFillType"),
    (lambda b: b["properties"].update(networkConfiguration={"endpointConfiguration": {"inboundNatPools": [{
        "name": "x", "protocol": "TCP", "backendPort": 22, "frontendPortRangeStart": 50000,
        "frontendPortRangeEnd": 50099}]}}), "InvalidPropertyValue",
     "properties.networkConfiguration.endpointConfiguration.inboundNatPools[0].frontendPortRangeStart"),
    (lambda b: b["properties"].update(startTask={"commandLine": ""}), "InvalidPropertyValue",
     "properties.startTask.commandLine"),
    (lambda b: b.update(properties=[]), "InvalidPropertyValue", "properties"),
])
def test_bad_bodies_get_arm_shaped_400s(clients, base_reference, change, code, target):
    reference, agent = base_reference
    body = arm_pool(reference, agent)
    change(body)
    error = arm_error(400, code, clients.batch_mgmt.pool.create, RG, ACCOUNT, "bad-body", body)
    assert error.error.target == target, error.error.target
    assert {d.code for d in error.error.details} >= {"PropertyName"}
    arm_error(404, "PoolNotFound", clients.batch_mgmt.pool.get, RG, ACCOUNT, "bad-body")


def test_bad_names_bodies_and_fixed_properties(clients, base_reference):
    reference, agent = base_reference
    mgmt = clients.batch_mgmt.pool
    error = arm_error(400, "InvalidPropertyValue", mgmt.create, RG, ACCOUNT, "a.b", arm_pool(reference, agent))
    assert error.error.target == "poolName"
    arm_error(400, "InvalidRequestContent", mgmt.create, RG, ACCOUNT, "raw", b"{not json",
              content_type="application/json")
    arm_error(404, "ResourceNotFound", mgmt.get, RG, "noaccount", "p")
    mgmt.create(RG, ACCOUNT, "fixed-props", arm_pool(reference, agent, dedicated=0))
    error = arm_error(400, "PropertyCannotBeUpdated", mgmt.update, RG, ACCOUNT, "fixed-props",
                      {"properties": {"vmSize": "STANDARD_D2S_V3"}})
    assert error.error.target == "properties.vmSize"
    error = arm_error(400, "PropertyCannotBeUpdated", mgmt.create, RG, ACCOUNT, "fixed-props",
                      arm_pool(reference, agent, dedicated=0, taskSlotsPerNode=2))
    assert error.error.target == "properties.taskSlotsPerNode"
    assert mgmt.get(RG, ACCOUNT, "fixed-props").task_slots_per_node == 1


# A host with room for 4 cores: a 16-core node never fits, so its resize waits. No
# synchronous wait: a delete answers 202 and the SDK polls.
SMALL_HOST = {"BATCHYARD_HOST_CORES": "4", "BATCHYARD_SYNC_WAIT": "0"}


@pytest.fixture(scope="module")
def small_host(tmp_path_factory):
    with Server(tmp_path_factory.mktemp("mgmtpools-small") / "data", extra_env=SMALL_HOST) as srv:
        yield Clients(srv.info)


def test_stop_resize_on_arm_stops_a_resize_the_data_plane_sees_then_delete_polls(small_host):
    clients = small_host
    image = next(iter(clients.batch_key.list_supported_images()))
    ref = image.image_reference
    body = arm_pool({"publisher": ref.publisher, "offer": ref.offer, "sku": ref.sku}, image.node_agent_sku_id,
                    dedicated=1)
    body["properties"]["vmSize"] = "STANDARD_D16S_V3"
    body["properties"]["scaleSettings"]["fixedScale"]["resizeTimeout"] = "PT1H"
    clients.batch_mgmt.pool.create(RG, ACCOUNT, "waits", body)
    assert clients.batch_key.get_pool("waits").allocation_state == "resizing"
    error = arm_error(409, "PoolBeingResized", clients.batch_mgmt.pool.update, RG, ACCOUNT, "waits",
                      {"properties": {"scaleSettings": {"fixedScale": {"targetDedicatedNodes": 2}}}})
    assert "resiz" in error.error.message
    stopped = clients.batch_mgmt.pool.stop_resize(RG, ACCOUNT, "waits")
    assert stopped.allocation_state in ("Stopping", "Steady")
    pool = wait_for(lambda: (p := clients.batch_key.get_pool("waits")).allocation_state == "steady" and p,
                    what="the stopped resize to settle")
    assert pool.current_dedicated_nodes == 0
    arm = clients.batch_mgmt.pool.get(RG, ACCOUNT, "waits")
    assert arm.allocation_state == "Steady" and arm.current_dedicated_nodes == 0
    # stopResize on a steady pool changes nothing
    assert clients.batch_mgmt.pool.stop_resize(RG, ACCOUNT, "waits").allocation_state == "Steady"
    # the same targets again on a pool short of them: a new try
    again = clients.batch_mgmt.pool.update(RG, ACCOUNT, "waits", {"properties": {"scaleSettings": {
        "fixedScale": {"targetDedicatedNodes": 1, "resizeTimeout": "PT1H"}}}})
    assert again.allocation_state == "Resizing" and clients.batch_key.get_pool("waits").allocation_state == "resizing"
    clients.batch_key.begin_stop_pool_resize("waits", polling_interval=0.1).result()
    assert clients.batch_mgmt.pool.get(RG, ACCOUNT, "waits").allocation_state == "Steady"
    # a pool whose nodes take a moment to leave: the SDK polls the delete's Location until it is gone
    body["properties"]["vmSize"] = "STANDARD_A1_V2"
    clients.batch_mgmt.pool.create(RG, ACCOUNT, "leaves", body)
    pool_settled(clients.batch_key, "leaves")
    for name in ("waits", "leaves"):
        poller = clients.batch_mgmt.pool.begin_delete(RG, ACCOUNT, name, polling_interval=0.1)
        poller.result()
        assert poller.status() == "Succeeded"
        with pytest.raises(ResourceNotFoundError):
            clients.batch_key.get_pool(name)


def test_custom_image_container_pool_is_accepted_as_azure_does(clients, image):
    """Azure cannot tell whether a custom image has a container runtime (its owner installs
    one), so a container pool on one is accepted; here every Linux image runs containers."""
    body = arm_pool({"id": image.id}, "batch.node.debian 12", dedicated=0)
    body["properties"]["deploymentConfiguration"]["virtualMachineConfiguration"]["containerConfiguration"] = {
        "type": "CriCompatible"}
    created = clients.batch_mgmt.pool.create(RG, ACCOUNT, "arm-custom-ctr", body)
    assert created.deployment_configuration.virtual_machine_configuration.container_configuration.type == \
        "CriCompatible"
    shown = clients.batch.get_pool("arm-custom-ctr").virtual_machine_configuration
    assert shown.container_configuration.type == "criCompatible" and shown.image_reference.virtual_machine_image_id
