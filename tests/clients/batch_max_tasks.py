"""azure-batch 6.0 (api-version 2018-12-01.8.0, before `taskSlotsPerNode`): a pool with
`max_tasks_per_node`, a job with a task, the job's task counts (then a flat object) and
the node agent SKUs (then the way to find images), the nodes. Leaves the pool for the caller to read
with a current SDK.

Usage: python batch_max_tasks.py CONFIG_JSON  (account, key, url, pool, job). Prints one
JSON object with what the old SDK read back.
"""

import json
import sys
import time

import azure.batch.models as batchmodels
from azure.batch import BatchServiceClient
from azure.batch.batch_auth import SharedKeyCredentials


def main():
    config = json.loads(sys.argv[1])
    client = BatchServiceClient(SharedKeyCredentials(config["account"], config["key"]), batch_url=config["url"])
    skus = client.account.list_node_agent_skus()
    agent = next(s for s in skus if s.id == "batch.node.ubuntu 22.04")
    client.pool.add(batchmodels.PoolAddParameter(
        id=config["pool"], vm_size="standard_d2s_v3", target_dedicated_nodes=1, max_tasks_per_node=3,
        virtual_machine_configuration=batchmodels.VirtualMachineConfiguration(
            image_reference=agent.verified_image_references[0], node_agent_sku_id=agent.id)))
    client.job.add(batchmodels.JobAddParameter(id=config["job"],
                                               pool_info=batchmodels.PoolInformation(pool_id=config["pool"])))
    client.task.add(config["job"], batchmodels.TaskAddParameter(id="t1", command_line="/bin/sh -c 'echo old'"))
    deadline = time.monotonic() + 120
    while client.task.get(config["job"], "t1").state != batchmodels.TaskState.completed:
        if time.monotonic() > deadline:
            raise RuntimeError("task t1 did not complete")
        time.sleep(0.5)
    counts = client.job.get_task_counts(config["job"])
    selected = client.pool.get(config["pool"], pool_get_options=batchmodels.PoolGetOptions(
        select="id,maxTasksPerNode"))
    listed = [p for p in client.pool.list() if p.id == config["pool"]]
    nodes = [(getattr(n.state, "value", n.state), n.total_tasks_run) for n in client.compute_node.list(config["pool"])]
    try:
        client.pool.add(batchmodels.PoolAddParameter(
            id=config["pool"] + "-big", vm_size="standard_d2s_v3", max_tasks_per_node=9,
            virtual_machine_configuration=batchmodels.VirtualMachineConfiguration(
                image_reference=agent.verified_image_references[0], node_agent_sku_id=agent.id)))
        refusal = None
    except batchmodels.BatchErrorException as err:
        refusal = {"code": err.error.code, "values": {v.key: v.value for v in err.error.values or []}}
    print(json.dumps({
        "api_version": client.api_version,
        "agent_images": [(r.publisher, r.offer, r.sku) for r in agent.verified_image_references],
        "max_tasks_per_node": client.pool.get(config["pool"]).max_tasks_per_node,
        "selected": {"id": selected.id, "max_tasks_per_node": selected.max_tasks_per_node,
                     "vm_size": selected.vm_size},
        "listed": [p.max_tasks_per_node for p in listed],
        "nodes": nodes,
        "task_counts": {"completed": counts.completed, "succeeded": counts.succeeded, "active": counts.active},
        "refusal": refusal,
    }))


if __name__ == "__main__":
    main()
