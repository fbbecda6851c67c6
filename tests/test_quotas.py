"""Account quotas: shown on batch_account.get as Azure shows them, set by the operator with
`batchyard quota set`, and enforced with Azure's codes: core quotas as resize errors of a
pool that stays steady with what fits, pool and active-job quotas as 409 at create."""

from __future__ import annotations

import json

import pytest
from azure.core.exceptions import HttpResponseError
from conftest import Clients, Server, pool_settled

from batchyard import defaults


@pytest.fixture(scope="module")
def quota_server(tmp_path_factory):
    # its own server: the quotas set here must not reach other modules' pools and jobs
    with Server(tmp_path_factory.mktemp("quotas") / "data") as srv:
        yield srv


@pytest.fixture(scope="module")
def qclients(quota_server) -> Clients:
    return Clients(quota_server.info)


def base_pool(clients: Clients, pool_id: str, vm_size: str = "standard_a1_v2", dedicated: int = 0,
              low_priority: int = 0) -> dict:
    image = next(iter(clients.batch.list_supported_images()))
    ref = image.image_reference
    return {"id": pool_id, "vmSize": vm_size,
            "virtualMachineConfiguration": {"imageReference": {"publisher": ref.publisher, "offer": ref.offer,
                                                               "sku": ref.sku, "version": "latest"},
                                            "nodeAgentSKUId": image.node_agent_sku_id},
            "targetDedicatedNodes": dedicated, "targetLowPriorityNodes": low_priority}


def delete_pools(clients: Clients) -> None:
    for pool in list(clients.batch.list_pools()):
        clients.batch.begin_delete_pool(pool.id, polling_interval=0.1).result()


def test_quotas_are_shown_and_set_by_the_operator(quota_server, qclients):
    accounts = qclients.batch_mgmt.batch_account
    account = accounts.get(defaults.RESOURCE_GROUP, defaults.BATCH_ACCOUNT)
    assert (account.dedicated_core_quota, account.low_priority_core_quota, account.pool_quota,
            account.active_job_and_job_schedule_quota) == (900, 100, 100, 300)
    assert account.dedicated_core_quota_per_vm_family_enforced is False
    families = {f.name: f.core_quota for f in account.dedicated_core_quota_per_vm_family}
    assert families["standardAv2Family"] == 900 and families["standardDSv3Family"] == 900

    out = quota_server.set_quotas(defaults.BATCH_ACCOUNT, "--dedicated-cores", "40", "--low-priority-cores", "20",
                                  "--pools", "50", "--active-jobs", "60", "--family", "standardDSv3Family=8",
                                  "--enforce-families")
    assert json.loads(out)["dedicatedCoreQuota"] == 40
    account = accounts.get(defaults.RESOURCE_GROUP, defaults.BATCH_ACCOUNT)
    assert (account.dedicated_core_quota, account.low_priority_core_quota, account.pool_quota,
            account.active_job_and_job_schedule_quota) == (40, 20, 50, 60)
    assert account.dedicated_core_quota_per_vm_family_enforced is True
    families = {f.name: f.core_quota for f in account.dedicated_core_quota_per_vm_family}
    assert families["standardDSv3Family"] == 8 and families["standardAv2Family"] == 40

    # a UserSubscription account's cores count against its subscription: Azure shows none
    qclients.resource.resource_groups.create_or_update("quotas", {"location": qclients.location})
    user = accounts.begin_create("quotas", "acctusersub", {"location": qclients.location, "properties": {
        "poolAllocationMode": "UserSubscription"}}).result()
    assert user.dedicated_core_quota is None and user.dedicated_core_quota_per_vm_family is None
    assert (user.pool_quota, user.active_job_and_job_schedule_quota) == (100, 300)

    with pytest.raises(RuntimeError) as e:
        quota_server.set_quotas(defaults.BATCH_ACCOUNT, "--family", "standardNoSuchFamily=4")
    assert "standardNoSuchFamily" in str(e.value)


def test_pools_beyond_the_core_quotas_stop_with_azures_resize_errors(quota_server, qclients):
    quota_server.set_quotas(defaults.BATCH_ACCOUNT, "--dedicated-cores", "3", "--low-priority-cores", "2",
                            "--pools", "100", "--family", "standardDSv3Family=2", "--enforce-families")
    batch = qclients.batch
    try:
        # standard_a1_v2 has 1 vCPU: 3 of 5 dedicated nodes fit
        batch.create_pool(base_pool(qclients, "overcores", dedicated=5))
        pool, nodes = pool_settled(batch, "overcores")
        assert pool.current_dedicated_nodes == 3 and len(nodes) == 3 and pool.target_dedicated_nodes == 5
        assert [e.code for e in pool.resize_errors] == ["AccountCoreQuotaReached"]
        assert "core quota" in pool.resize_errors[0].message

        # counted across the account's pools: nothing is left for another pool
        batch.create_pool(base_pool(qclients, "nocores", dedicated=1))
        pool, nodes = pool_settled(batch, "nocores")
        assert pool.current_dedicated_nodes == 0 and nodes == []
        assert [e.code for e in pool.resize_errors] == ["AccountCoreQuotaReached"]

        # low-priority cores have their own quota
        batch.create_pool(base_pool(qclients, "overspot", low_priority=3))
        pool, _ = pool_settled(batch, "overspot")
        assert pool.current_low_priority_nodes == 2
        assert [e.code for e in pool.resize_errors] == ["AccountLowPriorityCoreQuotaReached"]

        # the enforced family quota: one 2-vCPU Standard_D2s_v3 fits in 2 cores, not two
        quota_server.set_quotas(defaults.BATCH_ACCOUNT, "--dedicated-cores", "100")
        batch.create_pool(base_pool(qclients, "overfamily", vm_size="standard_d2s_v3", dedicated=2))
        pool, _ = pool_settled(batch, "overfamily")
        assert pool.current_dedicated_nodes == 1
        assert [e.code for e in pool.resize_errors] == ["AccountVMSeriesCoreQuotaReached"]

        # a resize past the quota ends the same way, and a raised quota lets it grow
        batch.begin_resize_pool("overcores", {"targetDedicatedNodes": 200}, polling_interval=0.1).result()
        pool, _ = pool_settled(batch, "overcores")
        assert pool.current_dedicated_nodes == 98 and pool.resize_errors[0].code == "AccountCoreQuotaReached"
        quota_server.set_quotas(defaults.BATCH_ACCOUNT, "--dedicated-cores", "102")
        batch.begin_resize_pool("overcores", {"targetDedicatedNodes": 100}, polling_interval=0.1).result()
        pool, _ = pool_settled(batch, "overcores")
        assert pool.current_dedicated_nodes == 100 and pool.resize_errors in (None, [])
    finally:
        delete_pools(qclients)


def test_the_pool_quota_refuses_one_pool_more(quota_server, qclients):
    quota_server.set_quotas(defaults.BATCH_ACCOUNT, "--pools", "2")
    batch = qclients.batch
    try:
        for name in ("first", "second"):
            batch.create_pool(base_pool(qclients, name))
        with pytest.raises(HttpResponseError) as e:
            batch.create_pool(base_pool(qclients, "third"))
        assert e.value.status_code == 409 and e.value.error.code == "PoolQuotaReached"
        assert {p.id for p in batch.list_pools()} == {"first", "second"}
        batch.begin_delete_pool("second", polling_interval=0.1).result()
        batch.create_pool(base_pool(qclients, "third"))
    finally:
        delete_pools(qclients)


def test_the_active_job_quota_counts_jobs_until_they_complete(quota_server, qclients):
    quota_server.set_quotas(defaults.BATCH_ACCOUNT, "--active-jobs", "2")
    batch = qclients.batch
    for name in ("job1", "job2"):
        batch.create_job({"id": name, "poolInfo": {"poolId": "nopool"}})
    with pytest.raises(HttpResponseError) as e:
        batch.create_job({"id": "job3", "poolInfo": {"poolId": "nopool"}})
    assert e.value.status_code == 409 and e.value.error.code == "ActiveJobAndScheduleQuotaReached"
    batch.begin_terminate_job("job1", {"terminateReason": "done"}, polling_interval=0.1).result()
    batch.create_job({"id": "job3", "poolInfo": {"poolId": "nopool"}})
    assert {j.id for j in batch.list_jobs()} == {"job1", "job2", "job3"}
