"""Multi-instance tasks through the real azure-batch client: a 3-instance task runs its
coordination command on three distinct nodes, each seeing all three hosts, then its
command line on the primary; listsubtasks shows the two subtasks."""

from __future__ import annotations

import pytest
from azure.core.exceptions import HttpResponseError

from conftest import pool_settled, wait_for
from test_batch_pools import base_pool, error_values
from test_batch_tasks import web_files  # noqa: F401 (a fixture)

POOL = "mpi"
REPORT = "/bin/sh -c 'echo $AZ_BATCH_HOST_LIST $AZ_BATCH_MASTER_NODE $AZ_BATCH_IS_CURRENT_NODE_MASTER " \
         "$AZ_BATCH_TASK_SHARED_DIR $AZ_BATCH_NODE_ID; cat $AZ_BATCH_TASK_SHARED_DIR/common.txt'"


@pytest.fixture(scope="module")
def batch(clients):
    clients.batch_key.create_pool(base_pool(clients, POOL, dedicated=3, enableInterNodeCommunication=True))
    pool_settled(clients.batch_key, POOL)
    return clients.batch_key


def test_three_instances_on_three_nodes(batch, web_files):
    batch.create_job({"id": "mpi-job", "poolInfo": {"poolId": POOL}})
    batch.create_task("mpi-job", {"id": "mpi", "commandLine": REPORT, "multiInstanceSettings": {
        "numberOfInstances": 3, "coordinationCommandLine": REPORT,
        "commonResourceFiles": [{"httpUrl": f"{web_files}/input.txt", "filePath": "common.txt"}]}})
    task = wait_for(lambda: (t := batch.get_task("mpi-job", "mpi")).state == "completed" and t, timeout=60,
                    what="the multi-instance task")
    assert task.execution_info.result == "success" and task.multi_instance_settings.number_of_instances == 3
    addresses = {n.id: n.ip_address for n in batch.list_nodes(POOL)}
    primary = task.node_info.node_id
    task_dir = "/mnt/batch/tasks/workitems/mpi-job/job-1/mpi"

    main = b"".join(batch.download_task_file("mpi-job", "mpi", "stdout.txt")).decode().splitlines()
    hosts, master, is_master, shared, node_id = main[0].split()
    assert sorted(hosts.split(",")) == sorted(addresses.values()) and hosts.split(",")[0] == addresses[primary]
    assert (master, is_master, shared, node_id) == (f"{addresses[primary]}:6000", "true", task_dir, primary)
    assert main[1] == "downloaded-input"

    subtasks = list(batch.list_subtasks("mpi-job", "mpi"))
    assert [s.id for s in subtasks] == [1, 2]
    assert {s.node_info.node_id for s in subtasks} | {primary} == set(addresses)  # three distinct nodes
    for sub in subtasks:
        assert sub.state == "completed" and sub.exit_code == 0 and sub.result == "success"
        assert sub.node_info.task_root_directory == "workitems/mpi-job/job-1/mpi"
        out = b"".join(batch.download_node_file(POOL, sub.node_info.node_id,
                                                "workitems/mpi-job/job-1/mpi/stdout.txt")).decode().splitlines()
        assert out[0] == f"{hosts} {master} false {task_dir} {sub.node_info.node_id}"
        assert out[1] == "downloaded-input"


def test_failed_coordination_fails_the_task_and_more_instances_than_nodes_wait(batch):
    batch.create_job({"id": "mpi-fail", "poolInfo": {"poolId": POOL}})
    batch.create_task("mpi-fail", {"id": "bad", "commandLine": "echo never", "multiInstanceSettings": {
        "numberOfInstances": 2, "coordinationCommandLine": "/bin/sh -c 'exit 3'"}})
    task = wait_for(lambda: (t := batch.get_task("mpi-fail", "bad")).state == "completed" and t, timeout=60,
                    what="the failing task")
    assert task.execution_info.result == "failure" and task.execution_info.exit_code == 3
    assert [s.exit_code for s in batch.list_subtasks("mpi-fail", "bad")] == [3]

    batch.create_task("mpi-fail", {"id": "too-many", "commandLine": "true",
                                   "multiInstanceSettings": {"numberOfInstances": 4}})
    batch.create_task("mpi-fail", {"id": "single", "commandLine": "true"})
    wait_for(lambda: batch.get_task("mpi-fail", "single").state == "completed", what="a task beside it")
    assert batch.get_task("mpi-fail", "too-many").state == "active"
    assert list(batch.list_subtasks("mpi-fail", "too-many")) == []
    with pytest.raises(HttpResponseError) as caught:
        batch.create_task("mpi-fail", {"id": "zero", "commandLine": "true",
                                       "multiInstanceSettings": {"numberOfInstances": 0}})
    assert error_values(caught)["PropertyName"] == "multiInstanceSettings.numberOfInstances"
