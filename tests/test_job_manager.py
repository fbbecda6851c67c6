"""Job manager tasks and auto pools through the real azure-batch client: a job that starts
with its manager task (killJobOnCompletion, runExclusive, allowLowPriorityNode) and a job
that brings its own pool, deleted with the job."""

from __future__ import annotations

import pytest
from azure.core.exceptions import HttpResponseError

from conftest import pool_settled, wait_for
from test_batch_pools import base_pool, error_values

POOL = "managed"


@pytest.fixture(scope="module")
def batch(clients):
    clients.batch_key.create_pool(base_pool(clients, POOL, dedicated=1, taskSlotsPerNode=3))
    pool_settled(clients.batch_key, POOL)
    return clients.batch_key


def completed(batch, job_id: str):
    return wait_for(lambda: (j := batch.get_job(job_id)).state == "completed" and j, timeout=60,
                    what=f"job {job_id} to complete")


def test_job_manager_ends_its_job(batch):
    batch.create_job({"id": "jm-kill", "poolInfo": {"poolId": POOL},
                      "jobManagerTask": {"id": "manager", "commandLine": "/bin/sh -c 'echo managing $AZ_BATCH_TASK_ID'"}})
    job = completed(batch, "jm-kill")
    assert job.execution_info.termination_reason == "JMComplete"
    spec = job.job_manager_task
    assert spec.kill_job_on_completion and spec.run_exclusive and spec.allow_low_priority_node
    manager = batch.get_task("jm-kill", "manager")
    assert manager.state == "completed" and manager.execution_info.result == "success"
    assert manager.required_slots == 3  # runExclusive: every slot of its node
    assert b"".join(batch.download_task_file("jm-kill", "manager", "stdout.txt")) == b"managing manager\n"


def test_job_manager_without_kill_leaves_the_job_active(batch):
    batch.create_job({"id": "jm-stay", "poolInfo": {"poolId": POOL},
                      "jobManagerTask": {"id": "manager", "commandLine": "true", "killJobOnCompletion": False,
                                         "runExclusive": False, "requiredSlots": 2, "allowLowPriorityNode": False}})
    wait_for(lambda: batch.get_task("jm-stay", "manager").state == "completed", what="the manager task")
    job = batch.get_job("jm-stay")
    assert job.state == "active" and job.job_manager_task.required_slots == 2
    assert batch.get_task("jm-stay", "manager").required_slots == 2
    batch.create_task("jm-stay", {"id": "after", "commandLine": "true"})
    wait_for(lambda: batch.get_task("jm-stay", "after").state == "completed", what="a task after the manager")
    with pytest.raises(HttpResponseError) as caught:
        batch.create_job({"id": "jm-bad", "poolInfo": {"poolId": POOL}, "jobManagerTask": {"commandLine": "true"}})
    assert error_values(caught)["PropertyName"] == "jobManagerTask.id"


def test_auto_pool_goes_with_its_job(clients, batch):
    pool_spec = {k: v for k, v in base_pool(clients, "unused", dedicated=1).items() if k != "id"}
    # the manager's output outlives the auto pool (and its node) in the service's own store
    outputs = f"{clients.info['batch_endpoint']}/outputs/managers"
    batch.create_job({"id": "brings-pool", "poolInfo": {"autoPoolSpecification": {
        "autoPoolIdPrefix": "mine", "poolLifetimeOption": "job", "pool": pool_spec}},
        "jobManagerTask": {"id": "manager", "commandLine": "/bin/sh -c 'echo $AZ_BATCH_POOL_ID'",
                           "outputFiles": [{"filePattern": "../stdout.txt", "destination": {"container": {
                               "containerUrl": outputs, "path": "brings-pool.txt"}},
                               "uploadOptions": {"uploadCondition": "taskcompletion"}}]}})
    job = batch.get_job("brings-pool")
    pool_id = job.execution_info.pool_id
    assert pool_id.startswith("mine_") and len(pool_id) == len("mine_") + 36
    assert job.pool_info.auto_pool_specification.pool_lifetime_option == "job"
    assert batch.get_pool(pool_id).vm_size == pool_spec["vmSize"]
    completed(batch, "brings-pool")
    from azure.core.rest import HttpRequest
    output = batch.send_request(HttpRequest("GET", "/outputs/managers/files/brings-pool.txt",
                                            params={"api-version": "2025-06-01"}), stream=True).read()
    assert output == f"{pool_id}\n".encode()
    wait_for(lambda: pool_id not in [p.id for p in batch.list_pools()], timeout=60, what="the auto pool to go")

    batch.create_job({"id": "keeps-pool", "poolInfo": {"autoPoolSpecification": {
        "poolLifetimeOption": "job", "keepAlive": True, "pool": {**pool_spec, "targetDedicatedNodes": 0}}}})
    kept = batch.get_job("keeps-pool").execution_info.pool_id
    batch.begin_delete_job("keeps-pool", polling_interval=1).result()
    assert batch.get_pool(kept).state == "active"

    with pytest.raises(HttpResponseError) as caught:
        batch.create_job({"id": "bad-pool", "poolInfo": {"autoPoolSpecification": {
            "poolLifetimeOption": "job", "pool": {**pool_spec, "vmSize": "no_such_size"}}}})
    assert error_values(caught)["PropertyName"] == "poolInfo.autoPoolSpecification.pool.vmSize"
    with pytest.raises(HttpResponseError) as caught:
        batch.create_job({"id": "bad-life", "poolInfo": {"autoPoolSpecification": {"pool": pool_spec}}})
    assert error_values(caught)["PropertyName"] == "poolInfo.autoPoolSpecification.poolLifetimeOption"


MANAGER_CALLS = """printf '%s\\n' "$CA_PEM" > ca.pem
call() { curl -s --cacert ca.pem -o /dev/null -w '%{http_code} ' -H "Authorization: Bearer $AZ_BATCH_AUTHENTICATION_TOKEN" "$@"; }
call -X POST -H 'Content-Type: application/json; odata=minimalmetadata' -d '{"id":"from-manager","commandLine":"echo added"}' "$AZ_BATCH_ACCOUNT_URL/jobs/$AZ_BATCH_JOB_ID/tasks?api-version=2025-06-01"
call "$AZ_BATCH_ACCOUNT_URL/pools?api-version=2025-06-01"
call "$AZ_BATCH_ACCOUNT_URL/jobs/other-job?api-version=2025-06-01"
echo
echo "$AZ_BATCH_ACCOUNT_URL"
echo "$AZ_BATCH_AUTHENTICATION_TOKEN"
"""


def test_job_manager_token_reaches_its_own_job_only(clients, batch):
    from azure.core.credentials import AccessToken
    from azure.batch import BatchClient

    ca_pem = open(clients.info["ca_bundle"]).read()
    batch.create_job({"id": "other-job", "poolInfo": {"poolId": POOL}})
    batch.create_job({"id": "jm-token", "poolInfo": {"poolId": POOL}, "jobManagerTask": {
        "id": "manager", "commandLine": f"/bin/sh -c '{MANAGER_CALLS.replace(chr(39), chr(39) + chr(92) + chr(39) + chr(39))}'",
        "killJobOnCompletion": False, "authenticationTokenSettings": {"access": ["job"]},
        "environmentSettings": [{"name": "CA_PEM", "value": ca_pem}]}})
    wait_for(lambda: batch.get_task("jm-token", "manager").state == "completed", what="the manager task")
    lines = b"".join(batch.download_task_file("jm-token", "manager", "stdout.txt")).decode().splitlines()
    assert lines[0].split() == ["201", "403", "403"]  # its own job; not the pools, not another job
    assert lines[1].startswith("https://100.64.0.1:")  # the service's gateway on the node's network
    # azure-batch 15 dropped the property from its models; the wire still carries it
    assert batch.get_task("jm-token", "manager")["authenticationTokenSettings"] == {"access": ["job"]}
    added = wait_for(lambda: (t := batch.get_task("jm-token", "from-manager")).state == "completed" and t,
                     what="the task the manager added")
    assert added.execution_info.result == "success"

    class Token:
        def __init__(self, value):
            self.value = value

        def get_token(self, *scopes, **kwargs):
            return AccessToken(self.value, 2**31)

    token = lines[2]
    as_task = BatchClient(clients.info["batch_endpoint"], Token(token), connection_verify=clients.info["ca_bundle"])
    assert as_task.get_job("jm-token").id == "jm-token"
    with pytest.raises(HttpResponseError) as caught:
        as_task.get_job("other-job")
    assert caught.value.status_code == 403 and caught.value.error.code == "AuthorizationFailure"
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    with pytest.raises(HttpResponseError) as caught:
        BatchClient(clients.info["batch_endpoint"], Token(forged),
                    connection_verify=clients.info["ca_bundle"]).get_job("jm-token")
    assert caught.value.status_code == 401
    batch.begin_delete_job("jm-token", polling_interval=1).result()
    with pytest.raises(HttpResponseError) as caught:
        as_task.get_job("jm-token")
    assert caught.value.status_code == 401  # the token's job is gone


def test_a_plain_task_gets_a_token_for_its_job_when_it_asks(batch):
    """authenticationTokenSettings on any task, not only a job manager: its command gets
    AZ_BATCH_AUTHENTICATION_TOKEN (it was accepted, dropped, and the variable never came)."""
    batch.create_job({"id": "token-task", "poolInfo": {"poolId": POOL}})
    batch.create_task("token-task", {"id": "asks", "commandLine": "/bin/sh -c 'test -n \"$AZ_BATCH_AUTHENTICATION_TOKEN\"'",
                                     "authenticationTokenSettings": {"access": ["job"]}})
    batch.create_task("token-task", {"id": "not", "commandLine": "/bin/sh -c 'test -z \"$AZ_BATCH_AUTHENTICATION_TOKEN\"'"})
    for task_id in ("asks", "not"):
        task = wait_for(lambda: (t := batch.get_task("token-task", task_id)).state == "completed" and t,
                        what=f"task {task_id}")
        assert task.execution_info.exit_code == 0, task_id
    assert batch.get_task("token-task", "asks")["authenticationTokenSettings"] == {"access": ["job"]}
    with pytest.raises(HttpResponseError) as caught:
        batch.create_task("token-task", {"id": "pools", "commandLine": "true",
                                         "authenticationTokenSettings": {"access": ["pool"]}})
    assert error_values(caught)["PropertyName"] == "authenticationTokenSettings.access"


def test_job_settings_not_honoured_are_refused_and_a_manager_s_packages_checked(batch):
    """A job's own virtual network and task preemption are refused, on create and on
    update, not accepted and ignored (false and null, what every job has, pass); a job
    manager's applicationPackageReferences are checked before the job is made, as any
    task's are."""
    for change, prop in (({"allowTaskPreemption": True}, "allowTaskPreemption"),
                         ({"networkConfiguration": {"subnetId": "/subscriptions/s/resourceGroups/g/providers/"
                                                                "Microsoft.Network/virtualNetworks/v/subnets/s"}},
                          "networkConfiguration")):
        with pytest.raises(HttpResponseError) as caught:
            batch.create_job({"id": "refused", "poolInfo": {"poolId": POOL}, **change})
        assert caught.value.status_code == 400 and error_values(caught)["PropertyName"] == prop
    batch.create_job({"id": "unpreempted", "poolInfo": {"poolId": POOL}, "allowTaskPreemption": False})
    with pytest.raises(HttpResponseError) as caught:
        batch.update_job("unpreempted", {"allowTaskPreemption": True})
    assert error_values(caught)["PropertyName"] == "allowTaskPreemption"
    batch.replace_job("unpreempted", batch.get_job("unpreempted"))  # what it has, sent back
    with pytest.raises(HttpResponseError) as caught:
        batch.create_job({"id": "packaged", "poolInfo": {"poolId": POOL}, "jobManagerTask": {
            "id": "manager", "commandLine": "true", "applicationPackageReferences": [{"applicationId": "blender"}]}})
    assert caught.value.status_code == 409 and caught.value.error.code == "InvalidApplicationPackageReferences"
    with pytest.raises(HttpResponseError):
        batch.get_job("packaged")
