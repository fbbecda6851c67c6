"""Azure's Batch Python quickstart (Azure-Samples/batch-python-quickstart,
src/python_quickstart_client.py) as published, run by an old azure-batch (msrest
generation) in its own virtual environment. Only the input step differs: the quickstart
uploads its task files to Azure Storage and hands the tasks SAS URLs; here the files are
already served at `http_url`s given on the command line.

Usage: python batch_quickstart.py CONFIG_JSON  (account, key, url, pool, job, inputs:
[{"url": ..., "name": ...}]). Prints one JSON object: the api-version sent and each task's
node and stdout. TLS: REQUESTS_CA_BUNDLE names the CA bundle, as for any requests client.
"""

import datetime
import io
import json
import sys
import time

import azure.batch.models as batchmodels
from azure.batch import BatchServiceClient
from azure.batch.batch_auth import SharedKeyCredentials

STANDARD_OUT_FILE_NAME = "stdout.txt"
POOL_NODE_COUNT = 2
POOL_VM_SIZE = "STANDARD_DS1_V2"


def create_pool(batch_service_client, pool_id):
    new_pool = batchmodels.PoolAddParameter(
        id=pool_id,
        virtual_machine_configuration=batchmodels.VirtualMachineConfiguration(
            image_reference=batchmodels.ImageReference(
                publisher="canonical",
                offer="0001-com-ubuntu-server-focal",
                sku="20_04-lts",
                version="latest"
            ),
            node_agent_sku_id="batch.node.ubuntu 20.04"),
        vm_size=POOL_VM_SIZE,
        target_dedicated_nodes=POOL_NODE_COUNT
    )
    batch_service_client.pool.add(new_pool)


def create_job(batch_service_client, job_id, pool_id):
    job = batchmodels.JobAddParameter(
        id=job_id,
        pool_info=batchmodels.PoolInformation(pool_id=pool_id))
    batch_service_client.job.add(job)


def add_tasks(batch_service_client, job_id, resource_input_files):
    tasks = []
    for idx, input_file in enumerate(resource_input_files):
        command = f"/bin/bash -c \"cat {input_file.file_path}\""
        tasks.append(batchmodels.TaskAddParameter(
            id=f'Task{idx}',
            command_line=command,
            resource_files=[input_file]
        ))
    batch_service_client.task.add_collection(job_id, tasks)


def wait_for_tasks_to_complete(batch_service_client, job_id, timeout):
    timeout_expiration = datetime.datetime.now() + timeout
    while datetime.datetime.now() < timeout_expiration:
        tasks = batch_service_client.task.list(job_id)
        incomplete_tasks = [task for task in tasks if task.state != batchmodels.TaskState.completed]
        if not incomplete_tasks:
            return True
        time.sleep(1)
    raise RuntimeError("ERROR: Tasks did not reach 'Completed' state within timeout period of " + str(timeout))


def task_outputs(batch_service_client, job_id):
    outputs = {}
    for task in batch_service_client.task.list(job_id):
        node_id = batch_service_client.task.get(job_id, task.id).node_info.node_id
        stream = batch_service_client.file.get_from_task(job_id, task.id, STANDARD_OUT_FILE_NAME)
        output = io.BytesIO()
        for data in stream:
            output.write(data)
        outputs[task.id] = {"node": node_id, "stdout": output.getvalue().decode("utf-8"),
                            "exit_code": task.execution_info.exit_code}
    return outputs


def main():
    config = json.loads(sys.argv[1])
    input_files = [batchmodels.ResourceFile(http_url=item["url"], file_path=item["name"])
                   for item in config["inputs"]]
    credentials = SharedKeyCredentials(config["account"], config["key"])
    batch_client = BatchServiceClient(credentials, batch_url=config["url"])
    try:
        create_pool(batch_client, config["pool"])
        create_job(batch_client, config["job"], config["pool"])
        add_tasks(batch_client, config["job"], input_files)
        wait_for_tasks_to_complete(batch_client, config["job"], datetime.timedelta(minutes=5))
        outputs = task_outputs(batch_client, config["job"])
        pool = batch_client.pool.get(config["pool"])
        images = [(i.image_reference.publisher, i.image_reference.offer, i.image_reference.sku, i.node_agent_sku_id)
                  for i in batch_client.account.list_supported_images()]
    except batchmodels.BatchErrorException as err:
        print(json.dumps({"error": err.error.code, "message": err.error.message.value}))
        raise
    finally:
        # The quickstart asks before deleting; its default answer is yes.
        batch_client.job.delete(config["job"])
        batch_client.pool.delete(config["pool"])
    print(json.dumps({"api_version": batch_client.api_version, "outputs": outputs,
                      "pool": {"vm_size": pool.vm_size, "task_slots_per_node": pool.task_slots_per_node,
                               "image": pool.virtual_machine_configuration.image_reference.offer},
                      "supported_images": images}))


if __name__ == "__main__":
    main()
