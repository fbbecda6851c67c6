"""Batch accounts on ARM through azure-mgmt-batch: the published default account, the
account lifecycle, shared keys (regenerated keys survive a restart), and Azure's errors."""

from __future__ import annotations

import base64
import threading
import time

import pytest
import requests
from azure.batch import BatchClient
from azure.core.credentials import AzureNamedKeyCredential
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from conftest import Clients, Server, wait_for
from test_batch_pools import base_pool

from batchyard import defaults
from batchyard.services.batch import accounts as accounts_module
from batchyard.services.batch.accounts import BatchAccounts, account_id
from batchyard.services.batch.pools import POOL_TYPE
from batchyard.services.errors import Conflict
from batchyard.services.resource_groups import ResourceGroups
from batchyard.services.secrets import SecretBox
from batchyard.store.db import Database
from batchyard.store.resources import Resource, ResourceStore

RG = "batchaccts"
OTHER_RG = "batchaccts2"
KEY_VAULT = {"id": "/subscriptions/x/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv",
             "url": "https://kv.vault.azure.net/"}


@pytest.fixture(scope="module", autouse=True)
def groups(clients):
    for name in (RG, OTHER_RG):
        clients.resource.resource_groups.create_or_update(name, {"location": clients.location})


@pytest.fixture(scope="module")
def batch(clients):
    return clients.batch_mgmt


def create(clients, rg: str, name: str, **properties):
    body = {"location": clients.location, "properties": properties}
    return clients.batch_mgmt.batch_account.begin_create(rg, name, body).result()


def assert_key(key: str) -> None:
    assert len(base64.b64decode(key, validate=True)) == 64


def expect_error(status: int, code: str, call, *args):
    with pytest.raises(HttpResponseError) as e:
        result = call(*args)
        if hasattr(result, "result"):
            result.result()
    assert e.value.status_code == status and e.value.error.code == code, e.value.message
    return e.value.error


def arm_get(clients, path: str, api: str) -> requests.Response:
    token = clients.credential.get_token("https://management.azure.com/.default").token
    return requests.get(f"{clients.info['arm_endpoint']}/subscriptions/{clients.subscription}{path}",
                        params={"api-version": api}, headers={"Authorization": f"Bearer {token}"},
                        verify=clients.info["ca_bundle"])


def test_the_default_account_exists_with_the_key_of_connection_json(clients, batch):
    account = batch.batch_account.get(defaults.RESOURCE_GROUP, defaults.BATCH_ACCOUNT)
    assert account.name == defaults.BATCH_ACCOUNT and account.location == defaults.LOCATION
    assert account.type == "Microsoft.Batch/batchAccounts"
    assert account.provisioning_state == "Succeeded" and account.pool_allocation_mode == "BatchService"
    assert sorted(account.allowed_authentication_modes) == ["AAD", "SharedKey", "TaskAuthenticationToken"]
    # usable as "https://" + accountEndpoint: the data plane's address in connection.json
    assert "https://" + account.account_endpoint == clients.info["batch_endpoint"]
    keys = batch.batch_account.get_keys(defaults.RESOURCE_GROUP, defaults.BATCH_ACCOUNT)
    assert keys.account_name == defaults.BATCH_ACCOUNT
    assert keys.primary == clients.info["batch_account_key"] != defaults.BATCH_ACCOUNT_KEY  # random per data dir
    assert_key(keys.primary)
    assert_key(keys.secondary)
    assert keys.secondary != keys.primary


def test_create_in_both_allocation_modes_get_and_list(clients, batch):
    service = batch.batch_account.begin_create(RG, "acctservice", {
        "location": clients.location, "tags": {"team": "a"}}).result()
    props = service.properties
    assert service.id.endswith(f"/resourceGroups/{RG}/providers/Microsoft.Batch/batchAccounts/acctservice")
    assert service.tags == {"team": "a"} and service.identity.type == "None"
    assert props.provisioning_state == "Succeeded" and props.pool_allocation_mode == "BatchService"
    assert (props.dedicated_core_quota, props.low_priority_core_quota, props.pool_quota,
            props.active_job_and_job_schedule_quota) == (900, 100, 100, 300)
    assert props.dedicated_core_quota_per_vm_family_enforced is False
    assert props.public_network_access == "Enabled"
    assert props.account_endpoint == clients.info["batch_endpoint"][len("https://"):].replace(
        defaults.BATCH_ACCOUNT, "acctservice")

    user = create(clients, RG, "acctuser", poolAllocationMode="UserSubscription", keyVaultReference=KEY_VAULT,
                  allowedAuthenticationModes=["SharedKey", "AAD"])
    assert user.pool_allocation_mode == "UserSubscription"
    assert user.key_vault_reference.id == KEY_VAULT["id"] and user.key_vault_reference.url == KEY_VAULT["url"]
    assert user.allowed_authentication_modes == ["SharedKey", "AAD"]

    got = batch.batch_account.get(RG, "acctuser")
    assert got.as_dict() == user.as_dict()
    assert {a.name for a in batch.batch_account.list_by_resource_group(RG)} == {"acctservice", "acctuser"}
    everywhere = {a.name for a in batch.batch_account.list()}
    assert {"acctservice", "acctuser", defaults.BATCH_ACCOUNT} <= everywhere

    keys = [batch.batch_account.get_keys(RG, n) for n in ("acctservice", "acctuser")]
    for k in keys:
        assert_key(k.primary)
        assert_key(k.secondary)
    assert len({k.primary for k in keys} | {k.secondary for k in keys}) == 4


def test_keys_never_appear_in_the_account_body_and_old_api_versions_work(clients, batch):
    keys = batch.batch_account.get_keys(defaults.RESOURCE_GROUP, defaults.BATCH_ACCOUNT)
    path = f"/resourceGroups/{defaults.RESOURCE_GROUP}/providers/Microsoft.Batch/batchAccounts/{defaults.BATCH_ACCOUNT}"
    for api in ("2025-06-01", "2017-09-01", "2015-12-01"):
        response = arm_get(clients, path, api)
        assert response.status_code == 200 and response.json()["name"] == defaults.BATCH_ACCOUNT
        assert keys.primary not in response.text and keys.secondary not in response.text
    response = arm_get(clients, path, "2099-01-01")
    assert response.status_code == 400 and response.json()["error"]["code"] == "InvalidApiVersionParameter"


def test_update_tags_and_authentication_modes(clients, batch):
    create(clients, RG, "acctpatch", poolAllocationMode="UserSubscription")
    keys = batch.batch_account.get_keys(RG, "acctpatch")
    updated = batch.batch_account.update(RG, "acctpatch", {
        "tags": {"stage": "two"}, "properties": {"allowedAuthenticationModes": ["AAD"]}})
    assert updated.tags == {"stage": "two"} and updated.allowed_authentication_modes == ["AAD"]
    assert updated.pool_allocation_mode == "UserSubscription"
    again = batch.batch_account.update(RG, "acctpatch", {"tags": {"stage": "three"}})
    assert again.tags == {"stage": "three"} and again.allowed_authentication_modes == ["AAD"]
    got = batch.batch_account.get(RG, "acctpatch")
    assert got.tags == {"stage": "three"} and got.allowed_authentication_modes == ["AAD"]
    assert batch.batch_account.get_keys(RG, "acctpatch").primary == keys.primary


def test_put_on_the_same_id_updates_and_keeps_the_keys(clients, batch):
    create(clients, RG, "acctreput")
    keys = batch.batch_account.get_keys(RG, "acctreput")
    again = batch.batch_account.begin_create(RG, "acctreput", {
        "location": clients.location, "tags": {"v": "2"}, "properties": {"publicNetworkAccess": "Disabled"}}).result()
    assert again.tags == {"v": "2"} and again.public_network_access == "Disabled"
    assert batch.batch_account.get_keys(RG, "acctreput").primary == keys.primary
    expect_error(409, "PropertyChangeNotAllowed", batch.batch_account.begin_create, RG, "acctreput", {
        "location": clients.location, "properties": {"poolAllocationMode": "UserSubscription"}})
    assert batch.batch_account.get(RG, "acctreput").pool_allocation_mode == "BatchService"


def test_delete_then_get_is_not_found(clients, batch):
    create(clients, RG, "acctdelete")
    batch.batch_account.begin_delete(RG, "acctdelete").result()
    with pytest.raises(ResourceNotFoundError) as e:
        batch.batch_account.get(RG, "acctdelete")
    assert e.value.error.code == "ResourceNotFound"
    with pytest.raises(ResourceNotFoundError):
        batch.batch_account.get_keys(RG, "acctdelete")
    assert "acctdelete" not in {a.name for a in batch.batch_account.list_by_resource_group(RG)}
    batch.batch_account.begin_delete(RG, "acctdelete").result()  # already gone: 204, as ARM answers


def data_plane(clients, rg: str, name: str) -> BatchClient:
    """A shared-key client of the account `name`, at its path on this server."""
    key = clients.batch_mgmt.batch_account.get_keys(rg, name).primary
    endpoint = clients.info["batch_endpoint"].rsplit("/", 1)[0] + "/" + name
    return BatchClient(endpoint, AzureNamedKeyCredential(name, key), connection_verify=clients.info["ca_bundle"])


def test_deleting_an_account_deletes_what_it_holds_and_a_new_one_of_its_name_starts_empty(clients, batch):
    """An account's jobs (with their tasks), job schedules, pools and applications go with
    it, as in Azure. They outlived it: a new account of the same name in the same group had
    them all, and the schedule went on making jobs for an account that did not exist."""
    create(clients, RG, "acctcontents")
    data = data_plane(clients, RG, "acctcontents")
    data.create_job({"id": "job", "poolInfo": {"poolId": "pool"}})
    data.create_task("job", {"id": "task", "commandLine": "true"})
    data.create_job_schedule({"id": "schedule", "schedule": {"recurrenceInterval": "PT1H"},
                              "jobSpecification": {"poolInfo": {"poolId": "pool"}}})
    wait_for(lambda: [j.id for j in data.list_jobs()] == ["job", "schedule:job-1"], what="the schedule's job")
    data.create_pool(base_pool(clients, "pool", dedicated=0))
    batch.application.create(RG, "acctcontents", "app", {"properties": {"displayName": "an app"}})

    batch.batch_account.begin_delete(RG, "acctcontents").result()  # ends once all of it is gone
    create(clients, RG, "acctcontents")
    data = data_plane(clients, RG, "acctcontents")
    assert not list(data.list_jobs()) and not list(data.list_job_schedules()) and not list(data.list_pools())
    assert not list(batch.application.list(RG, "acctcontents"))
    with pytest.raises(ResourceNotFoundError):
        data.get_task("job", "task")
    batch.batch_account.begin_delete(RG, "acctcontents").result()


def _accounts(tmp_path) -> tuple[ResourceStore, BatchAccounts]:
    store = ResourceStore(Database(tmp_path / "batchyard.db"))
    groups = ResourceGroups(store.db, store)
    groups.ensure_subscription(defaults.SUBSCRIPTION_ID, defaults.TENANT_ID, "test")
    groups.create_or_update(defaults.SUBSCRIPTION_ID, RG, {"location": defaults.LOCATION})
    accounts = BatchAccounts(store, groups, SecretBox(tmp_path / "secrets.key"))
    accounts.create_or_update(account_id(defaults.SUBSCRIPTION_ID, RG, "acctrace"), {"location": defaults.LOCATION})
    return store, accounts


def test_an_account_being_deleted_takes_nothing_new_and_waits_for_what_was_being_made(tmp_path):
    """A pool, job or schedule made while its account's delete ran was stored after the
    account's contents went, and outlived it (a pool with its nodes). Now what makes them
    runs inside accounts.writing(account): refused (409 AccountBeingDeleted) once the delete
    is asked for, and a delete waits for those let in before. On a real SQLite store, with
    threads: a client cannot time this."""
    store, accounts = _accounts(tmp_path)
    rid = account_id(defaults.SUBSCRIPTION_ID, RG, "acctrace")
    account = accounts.get(rid)
    cascaded, inside, release = [], threading.Event(), threading.Event()

    def delete_pools(deleted) -> None:  # as pools.delete_all does, in short
        cascaded.append(deleted.name)
        for pool in store.list(type=POOL_TYPE):
            store.delete(pool.id)
    accounts.on_delete(delete_pools)

    def making() -> None:
        with accounts.writing(account):
            inside.set()
            release.wait(30)
            store.put(Resource(id=f"{account.id}/pools/late", type=POOL_TYPE,
                               subscription=account.subscription, resource_group=account.resource_group,
                               name="late", body={}))

    maker = threading.Thread(target=making)
    maker.start()
    assert inside.wait(30)
    deleted = []
    deleter = threading.Thread(target=lambda: deleted.append(accounts.delete(rid)))
    deleter.start()
    wait_for(lambda: accounts.get(rid).properties["provisioningState"] == "Deleting", what="the account's mark")
    with pytest.raises(Conflict) as refused:
        with accounts.writing(account):
            pass
    assert refused.value.code == "AccountBeingDeleted"  # a Conflict: 409 on both planes
    with pytest.raises(Conflict):
        accounts.regenerate_key(rid, {"keyName": "Primary"})
    with pytest.raises(Conflict):
        accounts.record_key_sync(rid)  # syncAutoStorageKeys wrote back a copy read before the mark
    assert cascaded == []  # the delete waits for the pool let in before its mark
    release.set()
    maker.join(30)
    deleter.join(30)
    assert deleted == [True] and cascaded == ["acctrace"]
    assert store.get(account.id) is None and not store.list(type=POOL_TYPE)  # the late pool went too


def test_an_account_delete_ends_once_what_it_holds_is_gone_or_fails_and_reopens(tmp_path, monkeypatch):
    """Pools and jobs go in the background (nodes deleted, tasks ended): the account's row
    went first, and a new account of the same id found them. The delete now goes over the
    account again until nothing is left in it; one that cannot end fails, the account open."""
    store, accounts = _accounts(tmp_path)
    rid = account_id(defaults.SUBSCRIPTION_ID, RG, "acctrace")
    account = accounts.get(rid)
    pool = Resource(id=f"{account.id}/pools/slow", type=POOL_TYPE, subscription=account.subscription,
                    resource_group=account.resource_group, name="slow", body={})
    store.put(pool)
    marked = threading.Event()
    accounts.on_delete(lambda deleted: marked.set())  # marks it, as pools.delete_all does

    def reclaim() -> None:  # as the allocator deletes a pool once its nodes are gone
        marked.wait(30)
        time.sleep(0.3)
        store.delete(pool.id)
    reclaimer = threading.Thread(target=reclaim)
    reclaimer.start()
    assert accounts.delete(rid)
    assert store.get(pool.id) is None and store.get(account.id) is None  # the pool first
    reclaimer.join(30)

    monkeypatch.setattr(accounts_module, "CONTENTS_WAIT_SECONDS", 0.3)
    accounts.create_or_update(rid, {"location": defaults.LOCATION})
    store.put(pool)  # one that no pass takes
    with pytest.raises(Conflict) as blocked:
        accounts.delete(rid)
    assert blocked.value.code == "AccountDeletionBlocked" and "pools/slow" in blocked.value.message
    assert accounts.get(rid).properties["provisioningState"] == "Succeeded"


def test_an_account_delete_a_crash_cut_short_leaves_the_account_open(tmp_path):
    store, accounts = _accounts(tmp_path)
    rid = account_id(defaults.SUBSCRIPTION_ID, RG, "acctrace")
    account = accounts.get(rid)
    account.properties["provisioningState"] = "Deleting"  # as a delete left it, when the service died
    store.put(account)
    accounts = BatchAccounts(store, accounts.groups, accounts.box)
    assert accounts.get(rid).properties["provisioningState"] == "Succeeded"
    with accounts.writing(accounts.get(rid)):
        pass


def test_regenerate_keys(clients, batch):
    create(clients, RG, "acctkeys")
    before = batch.batch_account.get_keys(RG, "acctkeys")
    primary = batch.batch_account.regenerate_key(RG, "acctkeys", {"keyName": "Primary"})
    assert primary.account_name == "acctkeys"
    assert primary.primary != before.primary and primary.secondary == before.secondary
    assert_key(primary.primary)
    secondary = batch.batch_account.regenerate_key(RG, "acctkeys", {"keyName": "Secondary"})
    assert secondary.primary == primary.primary and secondary.secondary != before.secondary
    now = batch.batch_account.get_keys(RG, "acctkeys")
    assert (now.primary, now.secondary) == (secondary.primary, secondary.secondary)


@pytest.mark.parametrize("name", ["Upper1", "ab", "a" * 25, "bad-name", "under_score"])
def test_illegal_account_names(clients, batch, name):
    error = expect_error(400, "AccountNameInvalid", batch.batch_account.begin_create, RG, name,
                         {"location": clients.location})
    assert "between 3 and 24 characters" in error.message
    assert name.lower() not in {a.name for a in batch.batch_account.list()}


def test_bad_input_creates_nothing(clients, batch):
    error = expect_error(400, "InvalidParameter", batch.batch_account.begin_create, RG, "acctbadmode", {
        "location": clients.location, "properties": {"poolAllocationMode": "Dedicated"}})
    assert error.target == "properties.poolAllocationMode" and "BatchService, UserSubscription" in error.message
    error = expect_error(400, "InvalidParameter", batch.batch_account.begin_create, RG, "acctbadauth", {
        "location": clients.location, "properties": {"allowedAuthenticationModes": ["SharedKey", "Password"]}})
    assert error.target == "properties.allowedAuthenticationModes"
    expect_error(400, "LocationRequired", batch.batch_account.begin_create, RG, "acctnoloc", {"properties": {}})
    for name in ("acctbadmode", "acctbadauth", "acctnoloc"):
        with pytest.raises(ResourceNotFoundError):
            batch.batch_account.get(RG, name)


def test_bad_key_name(clients, batch):
    create(clients, RG, "acctbadkey")
    before = batch.batch_account.get_keys(RG, "acctbadkey")
    error = expect_error(400, "InvalidParameter", batch.batch_account.regenerate_key, RG, "acctbadkey",
                         {"keyName": "Tertiary"})
    assert error.target == "keyName"
    after = batch.batch_account.get_keys(RG, "acctbadkey")
    assert (after.primary, after.secondary) == (before.primary, before.secondary)


def test_names_are_unique_across_groups(clients, batch):
    create(clients, RG, "acctunique", poolAllocationMode="UserSubscription")
    for rg, name in ((OTHER_RG, "acctunique"), (OTHER_RG, defaults.BATCH_ACCOUNT)):
        with pytest.raises(ResourceExistsError) as e:
            batch.batch_account.begin_create(rg, name, {"location": clients.location}).result()
        assert e.value.status_code == 409 and e.value.error.code == "AccountAlreadyExists"
        with pytest.raises(ResourceNotFoundError):
            batch.batch_account.get(rg, name)
    assert batch.batch_account.get(RG, "acctunique").pool_allocation_mode == "UserSubscription"


def test_deleting_a_group_deletes_its_accounts_and_frees_their_names(clients, batch):
    clients.resource.resource_groups.create_or_update("batchacctsdoomed", {"location": clients.location})
    create(clients, "batchacctsdoomed", "acctdoomed")
    clients.resource.resource_groups.begin_delete("batchacctsdoomed").result()
    assert "acctdoomed" not in {a.name for a in batch.batch_account.list()}
    reborn = create(clients, OTHER_RG, "acctdoomed")
    assert reborn.id.lower().endswith(f"/resourcegroups/{OTHER_RG}/providers/microsoft.batch/batchaccounts/acctdoomed")


def test_regenerated_keys_survive_a_restart(tmp_path_factory):
    server = Server(tmp_path_factory.mktemp("batchaccounts") / "data")
    try:
        clients = Clients(server.start())
        accounts = clients.batch_mgmt.batch_account
        first = clients.info["batch_account_key"]
        new = accounts.regenerate_key(defaults.RESOURCE_GROUP, defaults.BATCH_ACCOUNT, {"keyName": "Primary"})
        assert new.primary != first
        created = create(clients, defaults.RESOURCE_GROUP, "acctpersist")
        persisted = accounts.get_keys(defaults.RESOURCE_GROUP, "acctpersist")

        clients = Clients(server.restart())
        accounts = clients.batch_mgmt.batch_account
        assert clients.info["batch_account_key"] == new.primary
        assert accounts.get_keys(defaults.RESOURCE_GROUP, defaults.BATCH_ACCOUNT).primary == new.primary
        assert accounts.get(defaults.RESOURCE_GROUP, "acctpersist").as_dict() == created.as_dict()
        assert created.account_endpoint == f"127.0.0.1:{server.port}/batch/acctpersist"
        again = accounts.get_keys(defaults.RESOURCE_GROUP, "acctpersist")
        assert (again.primary, again.secondary) == (persisted.primary, persisted.secondary)
    finally:
        server.stop()
