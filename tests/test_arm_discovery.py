"""ARM discovery and tenancy through the real SDKs: cloud metadata, subscriptions, tenants,
locations, providers, resource listing, Compute SKUs/sizes/usages/operations and Batch's
location APIs; ARM's path rules (collapsed slashes, child-type 404s, error shapes); and
numbers and booleans sent as JSON strings, as the Azure CLI sends them."""

from __future__ import annotations

from urllib.parse import parse_qs, urlparse

import pytest
import requests
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.core.rest import HttpRequest
from azure.mgmt.resource.subscriptions import SubscriptionClient

from conftest import base_image_reference, vm_body

RG = "discovery"


@pytest.fixture(scope="module")
def subscriptions(clients) -> SubscriptionClient:
    return SubscriptionClient(clients.credential, base_url=clients.info["arm_endpoint"],
                              connection_verify=clients.info["ca_bundle"])


@pytest.fixture(scope="module")
def arm_get(clients):
    """A raw ARM request with a bearer token, for what the SDKs never send (odd paths)."""
    token = clients.credential.get_token("https://management.azure.com/.default").token

    def call(method: str, path: str, token_: str | None = token):
        headers = {"Authorization": f"Bearer {token_}"} if token_ else {}
        r = requests.request(method, clients.info["arm_endpoint"] + path, headers=headers,
                             verify=clients.info["ca_bundle"])
        return r.status_code, r.json()

    return call


def test_cloud_metadata_in_each_shape(clients):
    base, ca = clients.info["arm_endpoint"], clients.info["ca_bundle"]

    def metadata(version):
        r = requests.get(f"{base}/metadata/endpoints", params={"api-version": version}, verify=ca)  # no token
        assert r.status_code == 200
        return r.json()

    cloud = metadata("2022-09-01")  # what `az cloud register` asks for: this cloud alone
    assert cloud["resourceManager"] == base + "/"
    assert cloud["authentication"]["loginEndpoint"] == clients.info["authority"]
    assert cloud["authentication"]["audiences"][0] == "https://management.core.windows.net/"
    assert "https://management.azure.com/" in cloud["authentication"]["audiences"]
    assert cloud["batch"] == "https://batch.core.windows.net/"
    assert isinstance(cloud["suffixes"], dict)
    assert metadata("2019-05-01") == [cloud]  # ARM_CLOUD_METADATA_URL's array of clouds
    legacy = metadata("2015-01-01")
    assert legacy["authentication"]["loginEndpoint"] == base + "/"
    assert legacy["galleryEndpoint"] == base + "/"


def test_subscriptions_tenants_and_locations(clients, subscriptions):
    listed = list(subscriptions.subscriptions.list())
    assert [s.subscription_id for s in listed] == [clients.subscription]
    assert listed[0].tenant_id == clients.info["tenant_id"] and listed[0].state == "Enabled"
    one = subscriptions.subscriptions.get(clients.subscription)
    assert one.id == f"/subscriptions/{clients.subscription}" and one.display_name == listed[0].display_name
    assert [t.tenant_id for t in subscriptions.tenants.list()] == [clients.info["tenant_id"]]
    regions = {loc.name: loc for loc in subscriptions.subscriptions.list_locations(clients.subscription)}
    assert clients.location in regions
    west = regions[clients.location]
    assert west.display_name == "West US" and west.metadata.paired_region[0].name == "eastus"
    with pytest.raises(ResourceNotFoundError) as e:
        subscriptions.subscriptions.get("00000000-0000-0000-0000-00000000dead")
    assert e.value.error.code == "SubscriptionNotFound"


def test_providers_advertise_what_is_served(clients):
    providers = clients.resource.providers
    sent: list[str] = []
    record = {"raw_request_hook": lambda request: sent.append(request.http_request.url)}
    list(clients.compute.virtual_machines.list_all(**record))
    list(clients.compute.disks.list(**record))
    list(clients.batch_mgmt.batch_account.list(**record))

    compute = providers.get("Microsoft.Compute")
    assert compute.registration_state == "Registered"
    types = {t.resource_type: t for t in compute.resource_types}
    for served in ("virtualMachines", "virtualMachines/extensions", "disks", "snapshots", "images",
                   "locations/vmSizes", "locations/usages", "locations/publishers", "skus", "operations"):
        assert served in types, served
    assert "virtualMachineScaleSets" not in types and "virtualMachines/instanceView" not in types
    batch_types = {t.resource_type: t for t in providers.get("Microsoft.Batch").resource_types}
    assert {"batchAccounts", "locations/quotas", "locations/virtualMachineSkus"} <= set(batch_types)
    # the api-versions the SDKs send are among those advertised for the type they use
    versions = {url.split("/providers/")[1].split("/")[0]: parse_qs(urlparse(url).query)["api-version"][0]
                for url in sent}
    assert versions["Microsoft.Compute"] in types["virtualMachines"].api_versions
    assert versions["Microsoft.Compute"] in types["disks"].api_versions
    assert versions["Microsoft.Batch"] in batch_types["batchAccounts"].api_versions
    assert clients.location in [loc.replace(" ", "").lower() for loc in types["virtualMachines"].locations]

    assert {p.namespace for p in providers.list()} >= {"Microsoft.Compute", "Microsoft.Batch", "Microsoft.Resources"}
    assert providers.register("microsoft.batch").registration_state == "Registered"
    with pytest.raises(ResourceNotFoundError) as e:
        providers.get("Microsoft.Nothing")
    assert e.value.error.code == "InvalidResourceNamespace"


def test_subscription_resources_with_filter(clients):
    resources = clients.resource.resources
    accounts = list(resources.list(filter="resourceType eq 'Microsoft.Batch/batchAccounts'"))
    assert clients.info["batch_account"] in [a.name for a in accounts]
    assert {a.type for a in accounts} == {"Microsoft.Batch/batchAccounts"}
    # ARM compares without regard to case, and `and` narrows further
    same = list(resources.list(filter=f"resourcetype eq 'microsoft.batch/batchaccounts' and "
                                      f"resourceGroup eq '{clients.info['resource_group'].upper()}'"))
    assert clients.info["batch_account"] in [a.name for a in same]
    assert list(resources.list(filter="resourceType eq 'Microsoft.Compute/virtualMachineScaleSets'")) == []
    with pytest.raises(HttpResponseError) as e:
        list(resources.list(filter="resourceType eq"))
    assert e.value.status_code == 400


def test_compute_sizes_skus_and_operations(clients):
    compute = clients.compute
    sizes = {s.name: s for s in compute.virtual_machine_sizes.list(clients.location)}
    assert sizes["Standard_D2s_v3"].number_of_cores == 2 and sizes["Standard_D2s_v3"].memory_in_mb == 8192
    skus = list(compute.resource_skus.list(filter=f"location eq '{clients.location}'"))
    d2 = next(s for s in skus if s.name == "Standard_D2s_v3")
    assert d2.resource_type == "virtualMachines" and d2.locations == [clients.location]
    assert d2.family == "standardDSv3Family"
    capabilities = {c.name: c.value for c in d2.capabilities}
    assert capabilities["vCPUs"] == "2" and capabilities["MemoryGB"] == "8"
    assert {s.name for s in skus} == set(sizes)  # both from the one catalogue
    names = {op.name for op in compute.operations.list()}
    assert {"Microsoft.Compute/virtualMachines/write", "Microsoft.Compute/virtualMachines/read",
            "Microsoft.Compute/virtualMachines/runCommand/action", "Microsoft.Compute/disks/delete"} <= names


def test_usages_count_the_vms_of_a_region(clients):
    compute = clients.compute

    def usage() -> dict:
        return {u.name.value: u for u in compute.usage.list(clients.location)}

    before = usage()
    clients.resource.resource_groups.create_or_update(RG, {"location": clients.location})
    compute.virtual_machines.begin_create_or_update(
        RG, "counted", vm_body(clients.location, base_image_reference(compute, clients.location))).result()
    after = usage()
    assert after["cores"].current_value == before["cores"].current_value + 2
    assert after["virtualMachines"].current_value == before["virtualMachines"].current_value + 1
    assert after["standardDSv3Family"].current_value == before["standardDSv3Family"].current_value + 2
    assert after["cores"].limit >= after["cores"].current_value
    elsewhere = {u.name.value: u for u in compute.usage.list("japaneast")}
    assert elsewhere["standardDSv3Family"].current_value == 0


def test_batch_location_apis(clients):
    location = clients.batch_mgmt.location
    assert location.get_quotas(clients.location).account_quota >= 1
    taken = location.check_name_availability(clients.location, {"name": clients.info["batch_account"],
                                                                "type": "Microsoft.Batch/batchAccounts"})
    assert not taken.name_available and taken.reason == "AlreadyExists"
    invalid = location.check_name_availability(clients.location, {"name": "Not-Valid",
                                                                  "type": "Microsoft.Batch/batchAccounts"})
    assert not invalid.name_available and invalid.reason == "Invalid"
    free = location.check_name_availability(clients.location, {"name": "freshname42",
                                                               "type": "Microsoft.Batch/batchAccounts"})
    assert free.name_available
    operations = {op.name for op in clients.batch_mgmt.operations.list()}
    assert {"Microsoft.Batch/batchAccounts/write", "Microsoft.Batch/batchAccounts/listKeys/action"} <= operations
    skus = {s.name: s for s in location.list_supported_virtual_machine_skus(clients.location)}
    assert skus["Standard_D2s_v3"].family_name == "standardDSv3Family"
    assert {c.name: c.value for c in skus["Standard_D2s_v3"].capabilities}["vCPUs"] == "2"


def test_arm_path_rules_and_error_shapes(clients, arm_get):
    sub = clients.subscription
    status, body = arm_get("GET", f"//subscriptions//{sub}//resourceGroups?api-version=2024-11-01")
    assert status == 200 and clients.info["resource_group"] in [g["name"] for g in body["value"]]
    status, body = arm_get("GET", f"/subscriptions/{sub}/resourceGroups/{clients.info['resource_group']}/providers/"
                                  "Microsoft.Compute/virtualMachines/vm/gizmos?api-version=2026-04-01")
    assert status == 404 and body["error"]["code"] == "InvalidResourceType"
    assert "'virtualMachines/gizmos'" in body["error"]["message"]
    status, body = arm_get("GET", f"/subscriptions/{sub}/providers/Microsoft.Nothing/things?api-version=2024-11-01")
    assert status == 404 and body["error"]["code"] == "InvalidResourceNamespace"
    status, body = arm_get("GET", "/no/such/path", token_=None)
    assert status == 404 and body["error"]["code"] == "NotFound"
    status, body = arm_get("DELETE", "/metadata/endpoints", token_=None)
    assert status == 405 and body["error"]["code"] == "UnsupportedHttpMethod"
    status, body = arm_get("GET", "/subscriptions?api-version=2022-12-01", token_=None)
    assert status == 401 and body["error"]["code"] == "AuthenticationFailed"


def test_numbers_and_booleans_as_strings(clients):
    batch = clients.batch

    def create_job(body: dict):
        return batch.send_request(HttpRequest("POST", "/jobs", params={"api-version": "2025-06-01"}, json=body,
                                              headers={"Content-Type": "application/json; odata=minimalmetadata"}))

    response = create_job({"id": "strings", "poolInfo": {"poolId": "nowhere"}, "priority": "7",
                           "maxParallelTasks": " 3", "usesTaskDependencies": "True",
                           "constraints": {"maxTaskRetryCount": "-1"}})
    assert response.status_code == 201
    job = batch.get_job("strings")
    assert (job.priority, job.max_parallel_tasks, job.uses_task_dependencies) == (7, 3, True)
    assert job.constraints.max_task_retry_count == -1
    for field, value in (("priority", "high"), ("priority", "1.5"), ("usesTaskDependencies", "yes")):
        with pytest.raises(HttpResponseError) as e:
            create_job({"id": "refused", "poolInfo": {"poolId": "nowhere"}, field: value})
        assert e.value.status_code == 400 and e.value.error.code == "InvalidPropertyValue"
        assert {"key": "PropertyName", "value": field} in e.value.response.json()["values"]
    batch.begin_delete_job("strings", polling_interval=0.1).result()
