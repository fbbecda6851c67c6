"""Principals, role assignments and permission on the image, through the real SDKs
(azure-identity, azure-mgmt-authorization, azure-mgmt-resource, azure-mgmt-compute,
azure-batch) and `batchyard principal`, against a server of this module's own."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta

import jwt
import pytest
import requests
from azure.batch import BatchClient
from azure.core.credentials import AzureNamedKeyCredential
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ResourceNotFoundError
from azure.identity import ClientSecretCredential
from azure.mgmt.authorization import AuthorizationManagementClient
from azure.mgmt.resource.subscriptions import SubscriptionClient
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from batchyard import defaults
from batchyard.api import metadata, principals, tokens, uploads
from batchyard.api.app import build_arm_router, build_batch_router
from conftest import Clients, Server, base_image_reference, image_of_vm, pool_settled, vm_body, wait_for

ARM_SCOPE = "https://management.azure.com/.default"
OWNER = "8e3af657-a8ff-443c-a75c-2fe8c4bcb635"
CONTRIBUTOR = "b24988ac-6180-42a0-ab88-20f7382dd24c"
READER = "acdd72a7-3385-48ef-bd42-f606fba81ae7"
BUILT_IN = {
    "Owner": OWNER, "Contributor": CONTRIBUTOR, "Reader": READER,
    "User Access Administrator": "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9",
    "Virtual Machine Contributor": "9980e02c-c2be-4d73-94e8-173b1dc7cf3c",
    "Azure Batch Account Contributor": "29fe4964-1e60-436b-bd3a-77fd4c178b3c",
    "Azure Batch Account Reader": "11076f67-66f6-4be0-8f6b-f0609fd05cc9",
    "Azure Batch Data Contributor": "6aaa78f1-f7de-44ca-8722-c64a23943cae",
    "Azure Batch Job Submitter": "48e5e92e-a480-4e71-aa9c-2778f4c13781",
}
RG = "rbac"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with Server(tmp_path_factory.mktemp("rbac") / "data") as srv:
        yield srv


@pytest.fixture(scope="module")
def admin(server) -> Clients:
    """The development principal: Owner of the default subscription."""
    clients = Clients(server.info)
    clients.resource.resource_groups.create_or_update(RG, {"location": clients.location})
    return clients


@pytest.fixture(scope="module")
def authz(server, admin) -> AuthorizationManagementClient:
    return auth_client(admin)


def auth_client(clients: Clients) -> AuthorizationManagementClient:
    return AuthorizationManagementClient(clients.credential, clients.subscription,
                                         base_url=clients.info["arm_endpoint"],
                                         connection_verify=clients.info["ca_bundle"])


def principal_cli(server: Server, *args: str):
    """`batchyard principal ARGS --data-dir DIR`; its JSON output (None when it prints none)."""
    done = subprocess.run([sys.executable, "-m", "batchyard.cli", "principal", *args,
                           "--data-dir", str(server.data_dir)],
                          env=server.env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout) if done.stdout.strip() else None


def credential(info: dict, client_id: str, secret: str, tenant: str | None = None) -> ClientSecretCredential:
    return ClientSecretCredential(tenant or info["tenant_id"], client_id, secret, authority=info["authority"],
                                  disable_instance_discovery=True, connection_verify=info["ca_bundle"])


def clients_as(info: dict, made: dict) -> Clients:
    return Clients({**info, "client_id": made["clientId"], "client_secret": made["clientSecret"]})


def assign(authz: AuthorizationManagementClient, scope: str, role: str, principal_id: str):
    return authz.role_assignments.create(scope, str(uuid.uuid4()), {
        "role_definition_id": f"/subscriptions/{defaults.SUBSCRIPTION_ID}/providers/Microsoft.Authorization/"
                              f"roleDefinitions/{role}",
        "principal_id": principal_id, "principal_type": "ServicePrincipal"})


def subscriptions_of(info: dict, made: dict):
    """The subscriptions a principal sees (azure-mgmt-resource-subscriptions, as `az login` lists them)."""
    return SubscriptionClient(credential(info, made["clientId"], made["clientSecret"]), base_url=info["arm_endpoint"],
                              connection_verify=info["ca_bundle"]).subscriptions.list()


def sub_scope() -> str:
    return f"/subscriptions/{defaults.SUBSCRIPTION_ID}"


def group_scope(group: str) -> str:
    return f"{sub_scope()}/resourceGroups/{group}"


def account_id() -> str:
    return f"{group_scope(defaults.RESOURCE_GROUP)}/providers/Microsoft.Batch/batchAccounts/{defaults.BATCH_ACCOUNT}"


def refused(call, *args, status: int = 403, **kwargs) -> HttpResponseError:
    with pytest.raises(HttpResponseError) as excinfo:
        result = call(*args, **kwargs)
        if hasattr(result, "__next__"):
            next(result)
    assert excinfo.value.status_code == status, excinfo.value
    return excinfo.value


def batch_values(error: HttpResponseError) -> dict:
    return {d.code: d.message for d in error.error.details}


@pytest.fixture(scope="module")
def image(admin):
    """A managed image made from a snapshot of a VM's OS disk."""
    c = admin.compute
    vm = c.virtual_machines.begin_create_or_update(RG, "imgsrc", vm_body(
        admin.location, base_image_reference(c, admin.location))).result()
    return image_of_vm(c, admin.location, RG, vm, "guarded")


def custom_pool(pool_id: str, image_id: str, dedicated: int = 1) -> dict:
    return {"id": pool_id, "vmSize": "standard_a1_v2",
            "virtualMachineConfiguration": {"imageReference": {"virtualMachineImageId": image_id},
                                            "nodeAgentSKUId": "batch.node.debian 12"},
            "targetDedicatedNodes": dedicated}


# principals and tokens --------------------------------------------------------------------------


def test_principals_are_created_listed_and_deleted_with_the_command_line(server, admin):
    made = principal_cli(server, "create", "--name", "cli-made")
    assert {"clientId", "clientSecret", "objectId", "tenantId"} <= set(made)
    assert made["tenantId"] == defaults.TENANT_ID
    token = credential(server.info, made["clientId"], made["clientSecret"]).get_token(ARM_SCOPE).token
    claims = jwt.decode(token, options={"verify_signature": False})
    assert (claims["oid"], claims["appid"], claims["tid"]) == (made["objectId"], made["clientId"], made["tenantId"])

    listed = principal_cli(server, "list")
    entry = next(p for p in listed if p["clientId"] == made["clientId"])
    assert entry["objectId"] == made["objectId"] and entry["displayName"] == "cli-made"
    assert entry["passwordCredentials"][0]["hint"] == made["clientSecret"][:3]
    assert made["clientSecret"] not in json.dumps(listed)  # shown once, at creation

    principal_cli(server, "delete", "--client-id", made["clientId"])
    assert made["clientId"] not in {p["clientId"] for p in principal_cli(server, "list")}
    with pytest.raises(ClientAuthenticationError, match="AADSTS700016"):
        credential(server.info, made["clientId"], made["clientSecret"]).get_token(ARM_SCOPE)
    assert made["clientSecret"] not in server.log.read_text()
    assert made["clientSecret"].encode() not in (server.data_dir / "batchyard.db").read_bytes()


def test_the_principals_route_refuses_bad_requests_and_non_administrators(server, admin, authz):
    base, ca = f"{server.info['arm_endpoint']}/batchyard/principals", server.info["ca_bundle"]

    def call(method: str, path: str = "", token: str | None = None, **kwargs) -> requests.Response:
        token = token or admin.credential.get_token(ARM_SCOPE).token
        return requests.request(method, base + path, verify=ca, timeout=30,
                                headers={"Authorization": f"Bearer {token}"}, **kwargs)

    made = call("POST", json={"displayName": "route-made"})
    assert made.status_code == 201 and made.headers["Cache-Control"] == "no-store"
    client_id = made.json()["clientId"]
    shown = call("GET", f"/{client_id}").json()
    assert shown["displayName"] == "route-made" and "clientSecret" not in shown
    assert call("GET", f"/{uuid.uuid4()}").status_code == 404
    assert call("POST", json={"displayName": ""}).status_code == 400
    assert call("POST", data=b"{not json").status_code == 400
    assert call("POST", json={"displayName": "x", "endDateTime": "someday"}).status_code == 400
    refusal = call("DELETE", f"/{defaults.CLIENT_ID}")
    assert refusal.status_code == 400 and "development principal" in refusal.json()["error"]["message"]
    assert call("DELETE", f"/{client_id}/secrets/{uuid.uuid4()}").status_code == 404

    # Contributor may do everything but grant access, and so may not make principals either
    contributor = principal_cli(server, "create", "--name", "contributor")
    assign(authz, sub_scope(), CONTRIBUTOR, contributor["objectId"])
    token = credential(server.info, contributor["clientId"], contributor["clientSecret"]).get_token(ARM_SCOPE).token
    assert call("POST", token=token, json={"displayName": "nope"}).status_code == 403
    assert call("DELETE", f"/{client_id}", token=token).status_code == 403
    assert call("DELETE", f"/{client_id}").status_code == 204


def test_secrets_expire_and_the_token_endpoint_answers_as_entra_id(server):
    made = principal_cli(server, "create", "--name", "secrets")
    ends = datetime.now(UTC) + timedelta(seconds=2)
    short = principal_cli(server, "secret", "add", "--client-id", made["clientId"],
                          "--end-date", ends.isoformat())
    assert short["keyId"] and short["secretText"] != made["clientSecret"]
    wait_for(lambda: datetime.now(UTC) > datetime.fromisoformat(short["endDateTime"].replace("Z", "+00:00")),
             timeout=10, what="the short secret's end")
    with pytest.raises(ClientAuthenticationError, match="AADSTS7000222"):
        credential(server.info, made["clientId"], short["secretText"]).get_token(ARM_SCOPE)
    # the other secret still works: a principal has several
    assert credential(server.info, made["clientId"], made["clientSecret"]).get_token(ARM_SCOPE).token
    with pytest.raises(ClientAuthenticationError, match="AADSTS7000215"):
        credential(server.info, made["clientId"], "not-the-secret").get_token(ARM_SCOPE)
    # an unknown tenant has no discovery document (Entra ID's AADSTS90002), which MSAL reports so
    stranger = str(uuid.uuid4())
    with pytest.raises(ClientAuthenticationError, match=f"Unable to get authority configuration for .*/{stranger}"):
        credential(server.info, made["clientId"], made["clientSecret"], tenant=stranger).get_token(ARM_SCOPE)
    discovery = requests.get(f"{server.info['authority']}/{stranger}/v2.0/.well-known/openid-configuration",
                             verify=server.info["ca_bundle"], timeout=30)
    assert discovery.status_code == 400 and discovery.json()["error_codes"] == [90002]

    # the bodies MSAL reads: error, error_description, error_codes
    url = f"{server.info['authority']}/{defaults.TENANT_ID}/oauth2/v2.0/token"
    form = {"grant_type": "client_credentials", "client_id": made["clientId"], "client_secret": short["secretText"],
            "scope": ARM_SCOPE}
    answer = requests.post(url, data=form, verify=server.info["ca_bundle"], timeout=30)
    assert answer.status_code == 401 and answer.json()["error"] == "invalid_client"
    assert answer.json()["error_codes"] == [7000222]
    answer = requests.post(url, data={**form, "client_id": str(uuid.uuid4())}, verify=server.info["ca_bundle"],
                           timeout=30)
    assert answer.status_code == 400 and answer.json()["error"] == "unauthorized_client"
    assert answer.json()["error_codes"] == [700016]
    answer = requests.post(url.replace(defaults.TENANT_ID, str(uuid.uuid4())), data=form,
                           verify=server.info["ca_bundle"], timeout=30)
    assert answer.status_code == 400 and answer.json()["error_codes"] == [90002]

    key_id = made_key_id(server, made["clientId"], made["clientSecret"])
    principal_cli(server, "secret", "delete", "--client-id", made["clientId"], "--key-id", key_id)
    with pytest.raises(ClientAuthenticationError, match="AADSTS7000215"):
        credential(server.info, made["clientId"], made["clientSecret"]).get_token(ARM_SCOPE)
    assert short["secretText"] not in server.log.read_text()


def made_key_id(server: Server, client_id: str, secret: str) -> str:
    entry = next(p for p in principal_cli(server, "list") if p["clientId"] == client_id)
    return next(c["keyId"] for c in entry["passwordCredentials"] if c["hint"] == secret[:3])


# role definitions and assignments ----------------------------------------------------------------


def test_built_in_role_definitions_have_azures_ids_and_permissions(authz):
    found = {d.role_name: d for d in authz.role_definitions.list(sub_scope())}
    assert {name: found[name].name for name in BUILT_IN} == BUILT_IN
    reader = authz.role_definitions.get(sub_scope(), READER)
    assert reader.permissions[0].actions == ["*/read"] and reader.role_type == "BuiltInRole"
    assert reader.id == f"{sub_scope()}/providers/Microsoft.Authorization/roleDefinitions/{READER}"
    contributor = authz.role_definitions.get_by_id(f"/providers/Microsoft.Authorization/roleDefinitions/{CONTRIBUTOR}")
    assert "Microsoft.Authorization/*/Write" in contributor.permissions[0].not_actions
    batch_data = found["Azure Batch Data Contributor"].permissions[0]
    assert "Microsoft.Batch/batchAccounts/jobs/*" in batch_data.data_actions
    named = list(authz.role_definitions.list(group_scope(RG), filter="roleName eq 'Virtual Machine Contributor'"))
    assert [d.name for d in named] == [BUILT_IN["Virtual Machine Contributor"]]
    with pytest.raises(ResourceNotFoundError):
        authz.role_definitions.get(sub_scope(), str(uuid.uuid4()))


def test_role_assignments_at_every_scope_and_their_filters(server, admin, authz):
    made = principal_cli(server, "create", "--name", "assigned")
    oid = made["objectId"]
    disk = admin.compute.disks.begin_create_or_update(RG, "assigned-disk", {
        "location": admin.location, "properties": {"creationData": {"createOption": "Empty"},
                                                   "diskSizeGB": 1}}).result()
    at_sub = assign(authz, sub_scope(), READER, oid)
    at_group = assign(authz, group_scope(RG), CONTRIBUTOR, oid)
    at_disk = assign(authz, disk.id, OWNER, oid)
    assert at_disk.scope == disk.id and at_disk.principal_id == oid and at_disk.role_definition_id.endswith(OWNER)
    assert authz.role_assignments.get(disk.id, at_disk.name).id == at_disk.id
    assert authz.role_assignments.get_by_id(at_group.id).scope == group_scope(RG)

    mine = f"principalId eq '{oid}'"
    assert {a.name for a in authz.role_assignments.list_for_subscription(filter=mine)} == \
        {at_sub.name, at_group.name, at_disk.name}
    # at a resource group: what applies there (from above) and what is below it
    assert {a.name for a in authz.role_assignments.list_for_resource_group(RG, filter=mine)} == \
        {at_sub.name, at_group.name, at_disk.name}
    assert {a.name for a in authz.role_assignments.list_for_scope(group_scope(RG), filter=f"atScope() and {mine}")} \
        == {at_sub.name, at_group.name}
    assert {a.name for a in authz.role_assignments.list_for_resource(
        RG, "Microsoft.Compute", "disks", "assigned-disk", filter=mine)} == {at_sub.name, at_group.name, at_disk.name}
    dev = list(authz.role_assignments.list_for_subscription(filter=f"principalId eq '{defaults.PRINCIPAL_OBJECT_ID}'"))
    assert OWNER in {a.role_definition_id.rsplit("/", 1)[1] for a in dev if a.scope == sub_scope()}

    duplicate = refused(assign, authz, group_scope(RG), CONTRIBUTOR, oid, status=409)
    assert duplicate.error.code == "RoleAssignmentExists"
    assert refused(assign, authz, group_scope(RG), str(uuid.uuid4()), oid, status=400).error.code == \
        "RoleDefinitionDoesNotExist"
    assert refused(assign, authz, group_scope(RG), READER, str(uuid.uuid4()), status=400).error.code == \
        "PrincipalNotFound"
    bad_name = refused(authz.role_assignments.create, group_scope(RG), "not-a-guid", {
        "role_definition_id": READER, "principal_id": oid}, status=400)
    assert bad_name.error.code == "InvalidRoleAssignmentId"

    assert authz.role_assignments.delete(disk.id, at_disk.name).name == at_disk.name
    with pytest.raises(ResourceNotFoundError):
        authz.role_assignments.get(disk.id, at_disk.name)
    assert authz.role_assignments.delete(disk.id, at_disk.name) is None  # already gone: 204
    principal_cli(server, "delete", "--client-id", made["clientId"])
    assert not list(authz.role_assignments.list_for_subscription(filter=mine))  # they go with the principal


# enforcement ------------------------------------------------------------------------------------


def test_a_principal_without_a_role_can_do_nothing(server, admin):
    made = principal_cli(server, "create", "--name", "nobody")
    nobody = clients_as(server.info, made)
    error = refused(nobody.resource.resource_groups.get, RG)
    assert error.error.code == "AuthorizationFailed"
    assert (f"The client '{made['clientId']}' with object id '{made['objectId']}' does not have authorization to "
            f"perform action 'Microsoft.Resources/subscriptions/resourceGroups/read' over scope "
            f"'{group_scope(RG)}' or the scope is invalid.") in error.message
    refused(nobody.compute.images.list_by_resource_group, RG)
    assert list(subscriptions_of(server.info, made)) == []  # ARM lists only where it has a role
    refused(nobody.resource.resource_groups.get, "no-such-group")  # 403 before 404: nothing learnt
    error = refused(nobody.compute.disks.begin_create_or_update, RG, "sneaky", {
        "location": admin.location, "properties": {"creationData": {"createOption": "Empty"}, "diskSizeGB": 1}})
    assert "'Microsoft.Compute/disks/write'" in error.message
    assert f"'{group_scope(RG)}/providers/Microsoft.Compute/disks/sneaky'" in error.message
    refused(assign, auth_client(nobody), sub_scope(), OWNER, made["objectId"])  # no granting itself a role

    error = refused(nobody.batch.list_pools)
    assert error.error.code == "AuthorizationFailure"
    assert "Microsoft.Batch/batchAccounts/pools/read" in batch_values(error)["Reason"]
    refused(nobody.batch.create_job, {"id": "j", "poolInfo": {"poolId": "p"}})

    answer = requests.get(f"{server.info['arm_endpoint']}/batchyard/principals", verify=server.info["ca_bundle"],
                          headers={"Authorization": "Bearer " + nobody.credential.get_token(ARM_SCOPE).token},
                          timeout=30)
    assert answer.status_code == 403 and answer.json()["error"]["code"] == "AuthorizationFailed"


def test_reader_on_a_resource_group_reads_but_does_not_write(server, admin, authz):
    admin.resource.resource_groups.create_or_update("readable", {"location": admin.location})
    admin.compute.disks.begin_create_or_update("readable", "d1", {
        "location": admin.location, "properties": {"creationData": {"createOption": "Empty"},
                                                   "diskSizeGB": 1}}).result()
    made = principal_cli(server, "create", "--name", "reader")
    assign(authz, group_scope("readable"), READER, made["objectId"])
    reader = clients_as(server.info, made)
    assert reader.resource.resource_groups.get("readable").name == "readable"
    assert [s.subscription_id for s in subscriptions_of(server.info, made)] == [defaults.SUBSCRIPTION_ID]
    assert reader.compute.disks.get("readable", "d1").name == "d1"
    assert [d.name for d in reader.compute.disks.list_by_resource_group("readable")] == ["d1"]
    error = refused(reader.compute.disks.begin_create_or_update, "readable", "d2", {
        "location": admin.location, "properties": {"creationData": {"createOption": "Empty"}, "diskSizeGB": 1}})
    assert "'Microsoft.Compute/disks/write'" in error.message
    refused(reader.compute.disks.begin_delete, "readable", "d1")
    refused(reader.resource.resource_groups.get, RG)  # another group
    refused(assign, auth_client(reader), group_scope("readable"), OWNER, made["objectId"])

    # a deleted principal's token still parses, but its roles went with it
    principal_cli(server, "delete", "--client-id", made["clientId"])
    refused(reader.resource.resource_groups.get, "readable")


def test_long_running_operations_are_polled_by_whoever_started_them(tmp_path_factory):
    # no waiting for work to finish within the request: every long-running operation is polled
    with Server(tmp_path_factory.mktemp("lro") / "data", extra_env={"BATCHYARD_SYNC_WAIT": "0"}) as server:
        admin = Clients(server.info)
        authz = auth_client(admin)
        admin.resource.resource_groups.create_or_update("lro", {"location": admin.location})
        made = principal_cli(server, "create", "--name", "lro-writer")
        assign(authz, group_scope("lro"), CONTRIBUTOR, made["objectId"])
        writer = clients_as(server.info, made)
        body = {"location": admin.location,
                "properties": {"creationData": {"createOption": "Empty"}, "diskSizeGB": 1}}
        # a role on the group only, and the operation is polled at the subscription: it is the writer's
        assert writer.compute.disks.begin_create_or_update("lro", "d1", body).result().name == "d1"

        info, ca = server.info, server.info["ca_bundle"]
        started = requests.put(f"{info['arm_endpoint']}{group_scope('lro')}/providers/Microsoft.Compute/disks/d2"
                               "?api-version=2024-03-02", json=body, verify=ca, timeout=30, headers={
                                   "Authorization": "Bearer " + writer.credential.get_token(ARM_SCOPE).token})
        assert started.status_code == 202
        status_url = started.headers["Azure-AsyncOperation"]
        other = principal_cli(server, "create", "--name", "lro-other")
        assign(authz, group_scope("lro"), READER, other["objectId"])
        as_other = clients_as(server.info, other).credential.get_token(ARM_SCOPE).token
        answer = requests.get(status_url, verify=ca, timeout=30, headers={"Authorization": f"Bearer {as_other}"})
        assert answer.status_code == 403 and answer.json()["error"]["code"] == "AuthorizationFailed"
        as_writer = {"Authorization": "Bearer " + writer.credential.get_token(ARM_SCOPE).token}
        wait_for(lambda: requests.get(status_url, verify=ca, timeout=30, headers=as_writer).json()["status"]
                 == "Succeeded", what="the writer's operation")
        assert admin.compute.disks.get("lro", "d2").name == "d2"


def test_batch_roles_separate_reading_from_writing_on_the_data_plane(server, authz):
    made = principal_cli(server, "create", "--name", "batch-reader")
    assign(authz, account_id(), BUILT_IN["Azure Batch Account Reader"], made["objectId"])
    reader = clients_as(server.info, made)
    assert isinstance(list(reader.batch.list_pools()), list)  # pools: an action (batchAccounts/*/read)
    assert isinstance(list(reader.batch.list_jobs()), list)  # jobs: a data action (batchAccounts/*/read)
    error = refused(reader.batch.create_job, {"id": "not-mine", "poolInfo": {"poolId": "p"}})
    assert "data action 'Microsoft.Batch/batchAccounts/jobs/write'" in batch_values(error)["Reason"]
    error = refused(reader.batch.create_pool, custom_pool("not-mine", "/subscriptions/x/resourceGroups/y/providers/"
                                                                      "Microsoft.Compute/images/z"))
    assert "action 'Microsoft.Batch/batchAccounts/pools/write'" in batch_values(error)["Reason"]


def test_the_image_must_be_readable_to_make_and_grow_a_pool(server, admin, authz, image):
    made = principal_cli(server, "create", "--name", "pooler")
    assign(authz, account_id(), CONTRIBUTOR, made["objectId"])
    pooler = clients_as(server.info, made)
    assert list(pooler.batch.list_pools()) == []  # Contributor on the account: the data plane is open

    error = refused(pooler.batch.create_pool, custom_pool("guarded", image.id))
    assert error.error.code == "InsufficientPermissions"
    assert batch_values(error)["Reason"] == ("The user identity used for this operation does not have the required "
                                             f"privelege Microsoft.Compute/images/read on the specified resource "
                                             f"{image.id}")
    with pytest.raises(ResourceNotFoundError):
        admin.batch.get_pool("guarded")
    # an image that does not exist is refused the same way: nothing is learnt of it
    assert refused(pooler.batch.create_pool, custom_pool("guarded", image.id + "x")).error.code == \
        "InsufficientPermissions"

    on_image = assign(authz, image.id, READER, made["objectId"])
    pooler.batch.create_pool(custom_pool("guarded", image.id))
    pool, nodes = pool_settled(pooler.batch, "guarded")
    assert pool.current_dedicated_nodes == 1 and not pool.resize_errors

    authz.role_assignments.delete(image.id, on_image.name)
    pooler.batch.begin_resize_pool("guarded", {"targetDedicatedNodes": 2}, polling_interval=0.1).result()
    pool = wait_for(lambda: (p := pooler.batch.get_pool("guarded")).allocation_state == "steady" and p,
                    what="the resize to end")
    assert pool.current_dedicated_nodes == 1
    assert pool.resize_errors[0].code == "InsufficientPermissions"
    assert f"Microsoft.Compute/images/read on the specified resource {image.id}" in pool.resize_errors[0].message
    assert [n.id for n in pooler.batch.list_nodes("guarded")] == [nodes[0].id]  # its node stays
    admin.batch.begin_delete_pool("guarded", polling_interval=0.1).result()


def test_a_regenerated_key_stops_the_old_one_at_once(server, admin):
    account = admin.batch_mgmt.batch_account.begin_create(RG, "rbackeys", {"location": admin.location}).result()
    endpoint = f"{server.info['arm_endpoint']}/batch/rbackeys"

    def keyed(key: str) -> BatchClient:
        return BatchClient(endpoint, AzureNamedKeyCredential(account.name, key),
                           connection_verify=server.info["ca_bundle"])

    old = admin.batch_mgmt.batch_account.get_keys(RG, "rbackeys").primary
    assert list(keyed(old).list_pools()) == []
    new = admin.batch_mgmt.batch_account.regenerate_key(RG, "rbackeys", {"keyName": "Primary"}).primary
    assert refused(keyed(old).list_pools, status=401).error.code == "AuthenticationFailed"
    assert list(keyed(new).list_pools()) == []


# every route, and bad tokens --------------------------------------------------------------------


def _filled(template: str) -> str:
    import re
    return re.sub(r"\{(\w+)(:\w+)?\}", lambda m: "devbatch" if m[1] == "account" else f"x{m[1].lower()}", template)


def _batch_templates() -> list[tuple[str, str]]:
    import re
    out = []
    for route in build_batch_router().routes:
        path = re.sub(r"\(\?P<(\w+)>\[\^/\]\+\)", r"{\1}", route.pattern.pattern.strip("^$").removesuffix("/?"))
        out.append((route.method, "/batch/devbatch" + path))
    return out


def all_routes() -> list[tuple[str, str]]:
    routes = [(r.method, r.template) for r in build_arm_router().routes] + _batch_templates()
    for route in principals.routes:
        routes += [(m, route.path) for m in route.methods if m != "HEAD"]
    return routes


PUBLIC = [("GET", "/metadata/endpoints"), ("GET", "/_health"),
          ("GET", f"/{defaults.TENANT_ID}/v2.0/.well-known/openid-configuration"),
          ("GET", f"/{defaults.TENANT_ID}/discovery/v2.0/keys"),
          ("GET", "/common/discovery/instance?api-version=1.1&authorization_endpoint="
                  f"https://login.microsoftonline.com/{defaults.TENANT_ID}/oauth2/v2.0/authorize")]


def test_no_route_answers_without_credentials(server):
    base, ca = server.info["arm_endpoint"], server.info["ca_bundle"]
    routes = all_routes()
    assert len(routes) > 150  # ARM, Batch and the principals, as registered
    for method, template in routes:
        url = base + _filled(template) + "?api-version=2024-07-01"
        answer = requests.request(method, url, verify=ca, timeout=30, data=b"{}" if method in ("PUT", "POST",
                                                                                                "PATCH") else None)
        assert answer.status_code == 401, (method, template, answer.status_code, answer.text[:300])
    # the host-style account endpoint too
    host = requests.get(f"{base}/pools?api-version=2024-07-01", verify=ca, timeout=30,
                        headers={"Host": f"devbatch.{server.info['batch_host_suffix']}"})
    assert host.status_code == 401
    # an upload address is worth nothing without its signature
    assert requests.put(f"{base}/_upload/anything", data=b"x", verify=ca, timeout=30).status_code == 403
    # token endpoints are the one place credentials are given, and give nothing without them
    token_url = f"{base}/{defaults.TENANT_ID}/oauth2/v2.0/token"
    assert requests.post(token_url, data={"grant_type": "client_credentials"}, verify=ca, timeout=30).status_code \
        == 400
    for method, path in PUBLIC:
        assert requests.request(method, base + path, verify=ca, timeout=30).status_code == 200, path
    assert {r.path for r in tokens.routes} | {r.path for r in metadata.routes} | {r.path for r in uploads.routes} \
        >= {"/{tenant}/discovery/v2.0/keys", "/metadata/endpoints", "/_upload/{disk}"}


def _claims(info: dict, **changes) -> dict:
    now = int(time.time())
    claims = {"aud": "https://management.azure.com/", "iss": f"{info['authority']}/{info['tenant_id']}/v2.0",
              "iat": now, "nbf": now, "exp": now + 600, "oid": defaults.PRINCIPAL_OBJECT_ID,
              "tid": info["tenant_id"], "appid": info["client_id"]}
    claims.update(changes)
    return claims


def _hs256(claims: dict, secret: bytes) -> str:
    """The algorithm-confusion forgery (PyJWT will not make it): an HMAC keyed with the public key."""
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()) + "." + b64(json.dumps(claims).encode())
    return head + "." + b64(hmac.new(secret, head.encode(), hashlib.sha256).digest())


def bad_tokens(info: dict, key, audience: str) -> tuple[str, dict[str, str]]:
    """A well-made token for `audience`, and tokens that are wrong in one way each."""
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    signed = jwt.encode(_claims(info, aud=audience), key, algorithm="RS256")
    header, payload, _ = signed.split(".")
    now = int(time.time())
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    return signed, {
        "unsigned": f"{header}.{payload}.",
        "alg none": jwt.encode(_claims(info, aud=audience), None, algorithm="none"),
        "HS256 with the public key": _hs256(_claims(info, aud=audience), public_pem),
        "wrong key": jwt.encode(_claims(info, aud=audience), other, algorithm="RS256"),
        "wrong audience": jwt.encode(_claims(info, aud="https://vault.azure.net/"), key, algorithm="RS256"),
        "wrong issuer": jwt.encode(_claims(info, aud=audience, iss="https://login.microsoftonline.com/"
                                                                   f"{info['tenant_id']}/v2.0"), key, algorithm="RS256"),
        "expired": jwt.encode(_claims(info, aud=audience, iat=now - 7200, nbf=now - 7200, exp=now - 3600), key,
                              algorithm="RS256"),
        "not yet valid": jwt.encode(_claims(info, aud=audience, nbf=now + 3600, exp=now + 7200), key,
                                    algorithm="RS256"),
        "garbage": "not-a-token",
    }


def test_bad_tokens_are_refused(server, admin):
    info = server.info
    key = serialization.load_pem_private_key((server.data_dir / "keys" / "token-signing.pem").read_bytes(), None)
    arm = f"{info['arm_endpoint']}/subscriptions/{info['subscription_id']}/resourcegroups?api-version=2024-07-01"
    batch = f"{info['batch_endpoint']}/pools?api-version=2024-07-01.20.0"
    for url, audience in ((arm, "https://management.azure.com/"), (batch, defaults.BATCH_AUDIENCE)):
        good, bad = bad_tokens(info, key, audience)
        # the same token, well made, is accepted: what is refused is what is wrong with each
        assert requests.get(url, headers={"Authorization": f"Bearer {good}"}, verify=info["ca_bundle"],
                            timeout=30).status_code == 200
        for name, token in bad.items():
            answer = requests.get(url, headers={"Authorization": f"Bearer {token}"}, verify=info["ca_bundle"],
                                  timeout=30)
            assert answer.status_code == 401, (name, url, answer.text[:300])
