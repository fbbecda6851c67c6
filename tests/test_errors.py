"""Bad input gets Azure's status and error code, never a 500, and changes nothing."""

from __future__ import annotations

import json
import time

import jwt
from batchyard import defaults
import pytest
import requests
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ResourceExistsError, ResourceNotFoundError

from conftest import base_image_reference, vm_body

RG = "errors"


@pytest.fixture(scope="module", autouse=True)
def group(clients):
    clients.resource.resource_groups.create_or_update(RG, {"location": clients.location})


@pytest.fixture(scope="module")
def arm(clients):
    token = clients.credential.get_token("https://management.azure.com/.default").token
    base = f"{clients.info['arm_endpoint']}/subscriptions/{clients.subscription}/resourceGroups/{RG}/providers/Microsoft.Compute"

    def call(method, path, body=None, raw=None, api="2026-04-01", headers=None, token_override=None):
        url = base + path + (f"?api-version={api}" if api else "")
        h = {"Authorization": f"Bearer {token_override or token}", "Content-Type": "application/json", **(headers or {})}
        r = requests.request(method, url, json=body, data=raw, headers=h, verify=clients.info["ca_bundle"])
        return r.status_code, (r.json() if r.content else None)

    return call


def test_unsupported_api_version(arm):
    status, body = arm("GET", "/disks/x", api="2099-01-01")
    assert status == 400 and body["error"]["code"] == "InvalidApiVersionParameter"
    status, body = arm("GET", "/disks/x", api=None)
    assert status == 400 and body["error"]["code"] == "MissingApiVersionParameter"


def test_malformed_json(arm):
    status, body = arm("PUT", "/disks/d-bad", raw=b"{not json", api="2026-03-02")
    assert status == 400 and body["error"]["code"] == "InvalidRequestContent"
    status, _ = arm("GET", "/disks/d-bad", api="2026-03-02")
    assert status == 404
    deep = b"[" * 100_000 + b"]" * 100_000  # valid JSON that overflows a recursive decoder
    status, body = arm("PUT", "/disks/d-bad", raw=deep, api="2026-03-02")
    assert status == 400 and body["error"]["code"] == "InvalidRequestContent"


def test_missing_required_fields(clients):
    c = clients.compute
    with pytest.raises(HttpResponseError) as e:
        c.disks.begin_create_or_update(RG, "nosize", {"location": clients.location,
                                                      "properties": {"creationData": {"createOption": "Empty"}}}).result()
    assert e.value.status_code == 400 and e.value.error.code == "InvalidParameter"
    with pytest.raises(HttpResponseError) as e:
        c.disks.begin_create_or_update(RG, "noloc", {"properties": {"creationData": {"createOption": "Empty"},
                                                                    "diskSizeGB": 1}}).result()
    assert e.value.error.code == "LocationRequired"
    with pytest.raises(HttpResponseError) as e:
        c.virtual_machines.begin_create_or_update(RG, "nosize-vm", {"location": clients.location, "properties": {
            "storageProfile": {"imageReference": base_image_reference(c, clients.location)}}}).result()
    assert e.value.status_code == 400 and e.value.error.target == "hardwareProfile.vmSize"
    with pytest.raises(ResourceNotFoundError):
        c.disks.get(RG, "noloc")


def test_illegal_names(clients):
    with pytest.raises(HttpResponseError) as e:
        clients.compute.disks.begin_create_or_update(RG, "bad-name-", {
            "location": clients.location, "properties": {"creationData": {"createOption": "Empty"}, "diskSizeGB": 1}}).result()
    assert e.value.status_code == 400 and e.value.error.code == "InvalidResourceName"
    with pytest.raises(HttpResponseError) as e:
        clients.resource.resource_groups.create_or_update("bad name!", {"location": clients.location})
    assert e.value.status_code == 400 and e.value.error.code == "InvalidResourceGroupName"
    assert not clients.resource.resource_groups.check_existence("bad name!")


def test_a_name_ending_in_a_newline_is_refused(clients, arm):
    # `$` also matches before a final newline: a name ending in one is refused, not stored
    # (the SDKs strip it from a URL's names; a raw request need not)
    status, body = arm("PUT", "/disks/disk%0A", {"location": clients.location, "properties": {
        "creationData": {"createOption": "Empty"}, "diskSizeGB": 1}})
    assert status == 400 and body["error"]["code"] == "InvalidResourceName"
    assert [d.name for d in clients.compute.disks.list_by_resource_group(RG) if d.name.startswith("disk")] == []
    batch = clients.batch_key
    for create in (lambda: batch.create_job({"id": "job\n", "poolInfo": {"poolId": "p"}}),
                   lambda: batch.create_pool({"id": "pool\n", "vmSize": "standard_a1_v2", "targetDedicatedNodes": 0})):
        with pytest.raises(HttpResponseError) as e:
            create()
        assert e.value.status_code == 400, e.value
    assert "job\n" not in {j.id for j in batch.list_jobs()} and "pool\n" not in {p.id for p in batch.list_pools()}


def test_unknown_and_malformed_resource_ids(clients, arm):
    c = clients.compute
    with pytest.raises(ResourceNotFoundError) as e:
        c.virtual_machines.get(RG, "nope")
    assert e.value.error.code == "ResourceNotFound"
    with pytest.raises(ResourceNotFoundError) as e:
        c.disks.get("no-such-group", "d")
    assert e.value.error.code == "ResourceGroupNotFound"
    status, body = arm("PUT", "/snapshots/s-bad", {"location": clients.location, "properties": {"creationData": {
        "createOption": "Copy", "sourceResourceId": "not-an-id"}}}, api="2026-03-02")
    assert status == 400 and body["error"]["code"] == "LinkedInvalidPropertyId"
    status, body = arm("GET", "/gizmos/x")
    assert status == 404 and body["error"]["code"] == "InvalidResourceType"


def test_snapshot_of_a_missing_disk(clients):
    missing = f"/subscriptions/{clients.subscription}/resourceGroups/{RG}/providers/Microsoft.Compute/disks/ghost"
    with pytest.raises(ResourceNotFoundError):
        clients.compute.snapshots.begin_create_or_update(RG, "snap-ghost", {
            "location": clients.location, "properties": {"creationData": {
                "createOption": "Copy", "sourceResourceId": missing}}}).result()
    with pytest.raises(ResourceNotFoundError):
        clients.compute.snapshots.get(RG, "snap-ghost")


def test_deleting_an_attached_disk_is_refused(clients):
    c = clients.compute
    vm = c.virtual_machines.begin_create_or_update(RG, "holder", vm_body(
        clients.location, base_image_reference(c, clients.location))).result()
    with pytest.raises(ResourceExistsError) as e:
        c.disks.begin_delete(RG, vm.storage_profile.os_disk.name).result()
    assert e.value.status_code == 409 and e.value.error.code == "OperationNotAllowed"
    assert c.disks.get(RG, vm.storage_profile.os_disk.name).disk_state == "Attached"


def test_third_party_and_missing_base_images_are_refused(clients):
    c = clients.compute
    with pytest.raises(HttpResponseError) as e:
        c.virtual_machines.begin_create_or_update(RG, "market", vm_body(clients.location, {
            "publisher": "SomeVendor", "offer": "app", "sku": "pro", "version": "latest"})).result()
    assert e.value.status_code == 400 and e.value.error.code == "VMMarketplaceInvalidInput"
    ref = base_image_reference(c, clients.location)
    with pytest.raises(ResourceNotFoundError) as e:
        c.virtual_machines.begin_create_or_update(RG, "oldver", vm_body(clients.location, {**ref, "version": "0.0.1"})).result()
    assert e.value.error.code == "PlatformImageNotFound"


def test_generalize_running_vm_is_refused(clients):
    c = clients.compute
    c.virtual_machines.begin_create_or_update(RG, "runner", vm_body(clients.location, base_image_reference(c, clients.location))).result()
    with pytest.raises(ResourceExistsError) as e:
        c.virtual_machines.generalize(RG, "runner")
    assert e.value.error.code == "OperationNotAllowed"


def test_wrong_types_in_an_update_and_json_nested_too_deep_are_400(clients, arm):
    """Found by fuzzing: an update of an existing disk or VM read `creationData` as an
    object and `dataDisks` as a list without checking (500, where a create said 400); a VM
    extension's settings nested 950 deep were stored, and every later listing of the
    extensions failed to write them out (500). JSON is now read at most 64 levels deep, as
    Json.NET reads Azure's request bodies."""
    c = clients.compute
    c.disks.begin_create_or_update(RG, "typed", {"location": clients.location, "properties": {
        "creationData": {"createOption": "Empty"}, "diskSizeGB": 1}}).result()
    for wrong in (1, "x", True, [1]):
        status, body = arm("PUT", "/disks/typed", {"location": clients.location, "properties": {"creationData": wrong}},
                           api="2026-03-02")
        assert status == 400 and body["error"]["code"] == "InvalidRequestContent", body
    c.virtual_machines.begin_create_or_update(RG, "typed-vm", vm_body(clients.location, base_image_reference(
        c, clients.location))).result()
    for wrong in (1, True, 1.5, {"lun": 0}):
        status, body = arm("PATCH", "/virtualMachines/typed-vm", {"properties": {"storageProfile": {"dataDisks": wrong}}})
        assert status == 400 and body["error"]["code"] == "InvalidParameter", body
    deep: object = 1
    for _ in range(64):
        deep = [deep]
    extension = {"location": clients.location, "properties": {"publisher": "Microsoft.Azure.Extensions",
                                                              "type": "CustomScript", "typeHandlerVersion": "2.1",
                                                              "settings": {"x": deep}}}
    status, body = arm("PUT", "/virtualMachines/typed-vm/extensions/deep", extension)
    assert status == 400 and body["error"]["code"] == "InvalidRequestContent", body
    for name in ("a%00b", "x" * 5000, "%E2%80%AEevil"):  # a NUL, 5,000 characters, a right-to-left override
        status, body = arm("PUT", f"/virtualMachines/typed-vm/extensions/{name}",
                           {**extension, "properties": {**extension["properties"], "settings": {}}})
        assert status == 400 and body["error"]["code"] == "InvalidResourceName", body
    status, body = arm("GET", "/virtualMachines/typed-vm/extensions")
    assert status == 200 and not body["value"]


def test_instance_discovery_of_what_is_not_a_url_is_an_oauth_error(clients):
    response = requests.get(f"{clients.info['authority']}/common/discovery/instance",
                            params={"authorization_endpoint": "https://[::1/x", "api-version": "1.1"},
                            verify=clients.info["ca_bundle"])
    assert response.status_code == 400 and response.json()["error"] == "invalid_instance"


@pytest.mark.parametrize("claim", ["tid", "iss", "oid"])
def test_a_token_whose_names_are_not_text_is_refused(arm, server, claim):
    from cryptography.hazmat.primitives import serialization
    key = serialization.load_pem_private_key((server.data_dir / "keys" / "token-signing.pem").read_bytes(), None)
    now = int(time.time())
    claims = {"aud": "https://management.azure.com/", "iat": now, "nbf": now, "exp": now + 600,
              "iss": f"{server.info['authority']}/{server.info['tenant_id']}/v2.0", "tid": server.info["tenant_id"],
              "oid": defaults.PRINCIPAL_OBJECT_ID, "sub": defaults.PRINCIPAL_OBJECT_ID}
    # signed as a JWS of any payload: PyJWT's encode would refuse an `iss` that is not text
    token = jwt.PyJWS().encode(json.dumps({**claims, claim: [claims[claim]]}).encode(), key, algorithm="RS256")
    status, body = arm("GET", "/disks", token_override=token)
    assert status == 401 and body["error"]["code"] == "InvalidAuthenticationToken", body


def test_missing_token(arm):
    status, body = arm("GET", "/disks", headers={"Authorization": ""})
    assert status == 401 and body["error"]["code"] == "AuthenticationFailed"


def test_bad_signature(arm, clients):
    token = clients.credential.get_token("https://management.azure.com/.default").token
    header, payload, sig = token.split(".")
    forged = f"{header}.{payload}.{sig[:-4]}AAAA"
    status, body = arm("GET", "/disks", token_override=forged)
    assert status == 401 and body["error"]["code"] == "InvalidAuthenticationToken"
    home_made = jwt.encode({"aud": "https://management.azure.com/", "exp": time.time() + 600}, "k" * 32, algorithm="HS256")
    status, body = arm("GET", "/disks", token_override=home_made)
    assert status == 401 and body["error"]["code"] == "InvalidAuthenticationToken"


def test_wrong_audience(arm, clients):
    batch_token = clients.credential.get_token("https://batch.core.windows.net//.default").token
    status, body = arm("GET", "/disks", token_override=batch_token)
    assert status == 401 and body["error"]["code"] == "InvalidAuthenticationTokenAudience"


def test_expired_token(arm, server):
    from cryptography.hazmat.primitives import serialization
    key = serialization.load_pem_private_key((server.data_dir / "keys" / "token-signing.pem").read_bytes(), None)
    now = int(time.time())
    expired = jwt.encode({"aud": "https://management.azure.com/", "iss": "x", "iat": now - 7200, "nbf": now - 7200,
                          "exp": now - 3600, "tid": server.info["tenant_id"], "oid": "o", "sub": "o"}, key, algorithm="RS256")
    status, body = arm("GET", "/disks", token_override=expired)
    assert status == 401 and body["error"]["code"] == "ExpiredAuthenticationToken"


@pytest.mark.parametrize("audience, status", [
    (["https://batch.core.windows.net/", "https://management.azure.com/"], 200),  # a list naming ARM
    (["https://batch.core.windows.net/"], 401), ([], 401), ({"aud": 1}, 401), (7, 401)])
def test_token_audience_may_be_a_list(arm, server, audience, status):
    from cryptography.hazmat.primitives import serialization
    key = serialization.load_pem_private_key((server.data_dir / "keys" / "token-signing.pem").read_bytes(), None)
    now = int(time.time())
    issuer = f"{server.info['authority']}/{server.info['tenant_id']}/v2.0"
    token = jwt.encode({"aud": audience, "iss": issuer, "iat": now, "nbf": now, "exp": now + 600,
                        "tid": server.info["tenant_id"], "oid": defaults.PRINCIPAL_OBJECT_ID,
                        "sub": defaults.PRINCIPAL_OBJECT_ID}, key, algorithm="RS256")
    got, body = arm("GET", "/disks", token_override=token)
    assert got == status
    if status == 401:
        assert body["error"]["code"] == "InvalidAuthenticationTokenAudience"


def test_sdk_raises_client_authentication_error_for_bad_secret(clients):
    from azure.identity import ClientSecretCredential
    from azure.mgmt.compute import ComputeManagementClient
    info = clients.info
    bad = ClientSecretCredential(info["tenant_id"], info["client_id"], "wrong-secret", authority=info["authority"],
                                 disable_instance_discovery=True, connection_verify=info["ca_bundle"])
    client = ComputeManagementClient(bad, info["subscription_id"], base_url=info["arm_endpoint"],
                                     connection_verify=info["ca_bundle"])
    with pytest.raises(ClientAuthenticationError):
        list(client.disks.list())
