"""Resource files, output files and application packages through Azure Storage: Azurite's
blob service as the storage account (a real process on a free loopback port), azure-storage-blob
to put inputs there and read outputs back, and the real Batch SDKs (azure-batch,
azure-mgmt-batch) against a live server whose auto-storage account is that Azurite."""

from __future__ import annotations

import hashlib
import io
import zipfile
from datetime import datetime, timedelta, timezone

import pytest
from azure.core.exceptions import HttpResponseError
from azure.storage.blob import (BlobClient, BlobServiceClient, ContainerSasPermissions, generate_blob_sas,
                                generate_container_sas)

from azurite import ACCOUNT, KEY, STORAGE_ID, Azurite
from conftest import Clients, Server, pool_settled, wait_for
from test_batch_pools import base_pool

POOL = "storage"
IDENTITY = "/subscriptions/x/resourceGroups/y/providers/Microsoft.ManagedIdentity/userAssignedIdentities/z"


@pytest.fixture(scope="module")
def azurite(tmp_path_factory):
    with Azurite(tmp_path_factory.mktemp("azurite") / "workspace") as running:
        yield running


@pytest.fixture(scope="module")
def live(tmp_path_factory, azurite):
    env = {"BATCHYARD_STORAGE_BLOB_ENDPOINT": azurite.endpoint}
    with Server(tmp_path_factory.mktemp("storage-server") / "data", extra_env=env) as srv:
        yield srv


@pytest.fixture(scope="module")
def clients(live) -> Clients:
    clients = Clients(live.info)
    clients.batch_mgmt.batch_account.update(live.info["resource_group"], live.info["batch_account"], {
        "properties": {"autoStorage": {"storageAccountId": STORAGE_ID}}})
    return clients


@pytest.fixture(scope="module")
def blobs(azurite) -> BlobServiceClient:
    return BlobServiceClient.from_connection_string(azurite.connection_string)


def container_sas(blobs: BlobServiceClient, name: str, permission: str = "rl", create: bool = True) -> str:
    if create:
        blobs.create_container(name)
    token = generate_container_sas(ACCOUNT, name, account_key=KEY,
                                   permission=ContainerSasPermissions.from_string(permission),
                                   expiry=datetime.now(timezone.utc) + timedelta(hours=1))
    return f"{blobs.url.rstrip('/')}/{name}?{token}"


@pytest.fixture(scope="module")
def inputs(blobs):
    """Inputs put there with azure-storage-blob, including the start task's."""
    container = blobs.get_container_client("inputs")
    container.create_container()
    files = {"data/a.txt": b"alpha\n", "data/sub/b.txt": b"beta\n", "other/c.txt": b"gamma\n",
             "setup/prepare.sh": b"echo prepared-from-storage > $AZ_BATCH_NODE_SHARED_DIR/from-storage\n"}
    for name, content in files.items():
        container.upload_blob(name, content)
    return container_sas(blobs, "inputs", create=False)


@pytest.fixture(scope="module")
def pool(clients, inputs):
    clients.batch_key.create_pool(base_pool(clients, POOL, dedicated=2, taskSlotsPerNode=4, startTask={
        "commandLine": "/bin/sh -c 'sh setup/prepare.sh && ls -l setup/prepare.sh > $AZ_BATCH_NODE_SHARED_DIR/mode'",
        "resourceFiles": [{"storageContainerUrl": inputs, "blobPrefix": "setup/", "fileMode": "0750"}],
        "waitForSuccess": True}))
    pool_settled(clients.batch_key, POOL)
    return POOL


def finished(batch, job: str, task: str):
    return wait_for(lambda: (t := batch.get_task(job, task)).state == "completed" and t, timeout=120,
                    what=f"task {task}")


def stdout(batch, job: str, task: str) -> str:
    return b"".join(batch.download_task_file(job, task, "stdout.txt")).decode()


def details(info) -> dict:
    return {d.name: d.value for d in info.details}


def test_start_task_gets_its_resource_files(clients, pool):
    batch = clients.batch_key
    batch.create_job({"id": "start", "poolInfo": {"poolId": pool}})
    batch.create_task("start", {"id": "look", "commandLine": "/bin/sh -c 'cat $AZ_BATCH_NODE_SHARED_DIR/from-storage "
                                                             "$AZ_BATCH_NODE_SHARED_DIR/mode'"})
    assert finished(batch, "start", "look").execution_info.result == "success"
    lines = stdout(batch, "start", "look").splitlines()
    assert lines[0] == "prepared-from-storage"
    assert lines[1].startswith("-rwxr-x---")  # fileMode 0750
    for node in batch.list_nodes(pool):
        assert node.start_task_info.result == "success"


def test_inputs_by_container_sas_prefix_auto_storage_and_url(clients, pool, inputs, blobs):
    batch = clients.batch_key
    auto = blobs.get_container_client("auto-inputs")
    auto.create_container()
    auto.upload_blob("ref/genome.txt", b"ACGT\n")
    blob_sas = generate_blob_sas(ACCOUNT, "inputs", "other/c.txt", account_key=KEY, permission="r",
                                 expiry=datetime.now(timezone.utc) + timedelta(hours=1))
    batch.create_job({"id": "inputs", "poolInfo": {"poolId": pool}})
    batch.create_task("inputs", {"id": "all", "commandLine": "/bin/sh -c 'find . -type f | sort; "
                                                             "cat all/data/sub/b.txt prefixed/data/a.txt "
                                                             "genome/ref/genome.txt single.txt; "
                                                             "stat -c %a single.txt all/other/c.txt'",
                                 "resourceFiles": [
                                     {"storageContainerUrl": inputs, "filePath": "all"},
                                     {"storageContainerUrl": inputs, "blobPrefix": "data/", "filePath": "prefixed"},
                                     {"autoStorageContainerName": "auto-inputs", "filePath": "genome"},
                                     {"httpUrl": f"{blobs.url.rstrip('/')}/inputs/other/c.txt?{blob_sas}",
                                      "filePath": "single.txt", "fileMode": "0600"}]})
    task = finished(batch, "inputs", "all")
    assert task.execution_info.result == "success", task.execution_info.failure_info
    lines = stdout(batch, "inputs", "all").splitlines()
    assert lines[:9] == ["./all/data/a.txt", "./all/data/sub/b.txt", "./all/other/c.txt", "./all/setup/prepare.sh",
                         "./genome/ref/genome.txt", "./prefixed/data/a.txt", "./prefixed/data/sub/b.txt",
                         "./single.txt", "beta"]
    assert lines[9:] == ["alpha", "ACGT", "gamma", "600", "770"]  # Azure's default mode is 0770


def test_download_failures_name_the_blob_and_status(clients, pool, inputs, blobs):
    batch = clients.batch_key
    batch.create_job({"id": "badinputs", "poolInfo": {"poolId": pool}})
    base = inputs.split("?", 1)[0]
    batch.create_task("badinputs", {"id": "missing", "commandLine": "true", "resourceFiles": [
        {"httpUrl": f"{base}/nope.txt?{inputs.split('?', 1)[1]}", "filePath": "nope.txt"}]})
    failure = finished(batch, "badinputs", "missing").execution_info.failure_info
    assert failure.code == "BlobNotFound" and failure.category == "usererror"
    assert details(failure)["HttpStatusCode"] == "404" and details(failure)["BlobUrl"] == f"{base}/nope.txt"
    no_list = container_sas(blobs, "inputs", "r", create=False)  # listing needs 'l'
    batch.create_task("badinputs", {"id": "unlisted", "commandLine": "true",
                                    "resourceFiles": [{"storageContainerUrl": no_list}]})
    failure = finished(batch, "badinputs", "unlisted").execution_info.failure_info
    assert failure.code == "ResourceContainerAccessDenied" and details(failure)["HttpStatusCode"] == "403"
    assert "sig=" not in str(failure.details)  # never the SAS
    batch.create_task("badinputs", {"id": "noauto", "commandLine": "true",
                                    "resourceFiles": [{"autoStorageContainerName": "does-not-exist"}]})
    failure = finished(batch, "badinputs", "noauto").execution_info.failure_info
    assert failure.code == "ResourceContainerListMiscError" and details(failure)["HttpStatusCode"] == "404"
    for bad in ({"httpUrl": f"{base}/x"}, {"httpUrl": f"{base}/x", "storageContainerUrl": inputs, "filePath": "x"},
                {"storageContainerUrl": inputs, "filePath": "../up"}, {"autoStorageContainerName": "Bad_Name"}):
        with pytest.raises(HttpResponseError) as e:
            batch.create_task("badinputs", {"id": "refused", "commandLine": "true", "resourceFiles": [bad]})
        assert e.value.status_code == 400 and e.value.error.code in ("InvalidPropertyValue", "MissingRequiredProperty")


def test_outputs_of_100_tasks_by_pattern_to_a_container_sas(clients, pool, blobs):
    batch = clients.batch_key
    results = container_sas(blobs, "results", "rwl")
    batch.create_job({"id": "outputs", "poolInfo": {"poolId": pool}})
    tasks = [{"id": f"t{i}", "commandLine": f"/bin/sh -c 'mkdir -p out/sub && printf result-{i}-%0{i % 7 + 1}d {i} "
                                            f"> out/r{i}.txt && echo nested-{i} > out/sub/n{i}.txt && "
                                            f"echo hidden > out/.h{i}.txt && echo skip > out/x{i}.dat'",
              "outputFiles": [{"filePattern": "out/**/*.txt",
                               "destination": {"container": {"containerUrl": results, "path": f"run/t{i}",
                                                             "uploadHeaders": [
                                                                 {"name": "Content-Type", "value": "text/plain"}]}},
                               "uploadOptions": {"uploadCondition": "taskSuccess"}}]} for i in range(100)]
    batch.create_tasks("outputs", tasks)
    wait_for(lambda: batch.get_job_task_counts("outputs").task_counts.completed == 100, timeout=300,
             what="100 tasks")
    failed = [t.execution_info.failure_info for t in batch.list_tasks("outputs")
              if t.execution_info.result != "success"]
    assert not failed, failed[0]
    container = blobs.get_container_client("results")
    names = sorted(b.name for b in container.list_blobs(name_starts_with="run/"))
    assert names == sorted([f"run/t{i}/r{i}.txt" for i in range(100)] + [f"run/t{i}/sub/n{i}.txt" for i in range(100)])
    for i in range(100):
        assert container.download_blob(f"run/t{i}/r{i}.txt").readall() == f"result-{i}-{i:0{i % 7 + 1}d}".encode()
        assert container.download_blob(f"run/t{i}/sub/n{i}.txt").readall() == f"nested-{i}\n".encode()
    assert container.get_blob_client("run/t5/r5.txt").get_blob_properties().content_settings.content_type == \
        "text/plain"


def test_upload_condition_task_failure(clients, pool, blobs):
    batch = clients.batch_key
    results = container_sas(blobs, "conditions", "rwl")
    batch.create_job({"id": "conditions", "poolInfo": {"poolId": pool}})
    outputs = [{"filePattern": pattern, "destination": {"container": {"containerUrl": results, "path": name}},
                "uploadOptions": {"uploadCondition": condition}}
               for pattern, name, condition in (("log.txt", "on-failure.txt", "taskFailure"),
                                                ("log.txt", "on-success.txt", "taskSuccess"),
                                                ("../std*.txt", "std", "taskCompletion"))]
    batch.create_task("conditions", {"id": "fails", "commandLine": "/bin/sh -c 'echo went-wrong > log.txt; "
                                                                   "echo to-stdout; exit 3'", "outputFiles": outputs})
    task = finished(batch, "conditions", "fails")
    assert task.execution_info.exit_code == 3 and task.execution_info.failure_info.code == "FailureExitCode"
    container = blobs.get_container_client("conditions")
    assert sorted(b.name for b in container.list_blobs()) == ["on-failure.txt", "std/stderr.txt", "std/stdout.txt"]
    assert container.download_blob("on-failure.txt").readall() == b"went-wrong\n"
    assert container.download_blob("std/stdout.txt").readall() == b"to-stdout\n"


def test_a_sas_without_write_permission_gives_file_upload_error(clients, pool, blobs):
    batch = clients.batch_key
    read_only = container_sas(blobs, "readonly", "rl")
    batch.create_job({"id": "denied", "poolInfo": {"poolId": pool}, "onTaskFailure": "performExitOptionsJobAction"})
    batch.create_task("denied", {"id": "upload", "commandLine": "/bin/sh -c 'echo data > out.txt'", "outputFiles": [
        {"filePattern": "out.txt", "destination": {"container": {"containerUrl": read_only}},
         "uploadOptions": {"uploadCondition": "taskCompletion"}}],
        "exitConditions": {"fileUploadError": {"jobAction": "terminate"}}})
    task = finished(batch, "denied", "upload")
    info = task.execution_info
    assert info.exit_code == 0 and info.result == "failure"
    assert info.failure_info.code == "FileUploadAccessDenied" and info.failure_info.category == "usererror"
    assert details(info.failure_info)["HttpStatusCode"] == "403"
    assert details(info.failure_info)["BlobUrl"] == f"{read_only.split('?', 1)[0]}/out.txt"
    assert info.retry_count == 0
    wait_for(lambda: batch.get_job("denied").state == "completed", what="the job to end by fileUploadError")
    assert not list(blobs.get_container_client("readonly").list_blobs())


def _package_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        tool = zipfile.ZipInfo("bin/tool.sh")
        tool.external_attr = 0o100755 << 16
        archive.writestr(tool, "#!/bin/sh\necho tool-from-package $1\n")
        archive.writestr("share/data.txt", "package-data\n")
    return buffer.getvalue()


def test_application_package_uploaded_activated_and_used_by_a_pool(clients, live):
    mgmt, batch = clients.batch_mgmt, clients.batch_key
    group, account = live.info["resource_group"], live.info["batch_account"]
    mgmt.application.create(group, account, "Tool-linux", {"properties": {"displayName": "A tool"}})
    package = mgmt.application_package.create(group, account, "Tool-linux", "1.0")
    assert package.properties.state == "Pending" and package.properties.storage_url.startswith("http://127.0.0.1")
    BlobClient.from_blob_url(package.properties.storage_url).upload_blob(b"not a zip", overwrite=True)
    with pytest.raises(HttpResponseError) as e:
        mgmt.application_package.activate(group, account, "Tool-linux", "1.0", {"format": "zip"})
    assert e.value.status_code == 409
    BlobClient.from_blob_url(package.properties.storage_url).upload_blob(_package_zip(), overwrite=True)
    active = mgmt.application_package.activate(group, account, "Tool-linux", "1.0", {"format": "zip"})
    assert active.properties.state == "Active" and active.properties.format == "zip"
    mgmt.application.update(group, account, "Tool-linux", {"properties": {"defaultVersion": "1.0"}})
    assert mgmt.application.get(group, account, "Tool-linux").properties.default_version == "1.0"
    assert [a.name for a in mgmt.application.list(group, account)] == ["Tool-linux"]
    assert [p.name for p in mgmt.application_package.list(group, account, "Tool-linux")] == ["1.0"]
    listed = list(batch.list_applications())
    assert [(a.id, a.display_name, a.versions) for a in listed] == [("Tool-linux", "A tool", ["1.0"])]
    assert batch.get_application("Tool-linux").versions == ["1.0"]

    account_id = mgmt.batch_account.get(group, account).id
    with pytest.raises(HttpResponseError) as e:
        batch.create_pool(base_pool(clients, "nopkg", dedicated=1, applicationPackageReferences=[
            {"applicationId": f"{account_id}/applications/Tool-linux", "version": "9.9"}]))
    assert e.value.status_code == 409 and e.value.error.code == "InvalidApplicationPackageReferences"
    batch.create_pool(base_pool(clients, "apps", dedicated=1, applicationPackageReferences=[
        {"applicationId": f"{account_id}/applications/Tool-linux"}]))
    pool_settled(batch, "apps")
    batch.create_job({"id": "apps", "poolInfo": {"poolId": "apps"}})
    batch.create_task("apps", {"id": "use", "commandLine": "/bin/sh -c '$AZ_BATCH_APP_PACKAGE_tool_linux/bin/tool.sh x "
                                                           "&& cat $AZ_BATCH_APP_PACKAGE_tool_linux_1_0/share/data.txt "
                                                           "&& echo $AZ_BATCH_APP_PACKAGE_tool_linux_1_0'"})
    task = finished(batch, "apps", "use")
    assert task.execution_info.result == "success", b"".join(batch.download_task_file("apps", "use", "stderr.txt"))
    assert stdout(batch, "apps", "use").splitlines() == [
        "tool-from-package x", "package-data", "/mnt/batch/tasks/applications/tool-linux1.0"]
    with pytest.raises(HttpResponseError) as e:
        batch.create_task("apps", {"id": "bad", "commandLine": "true",
                                   "applicationPackageReferences": [{"applicationId": "missing"}]})
    assert e.value.status_code == 409 and e.value.error.code == "InvalidApplicationPackageReferences"


def _rss_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":"))


def test_a_large_output_streams_in_blocks(clients, live, pool, blobs):
    """256 MiB here (bench/storage_bench.py uploads 1 GiB): the server's peak memory grows
    by far less than the file, since it is read and sent a block at a time."""
    batch = clients.batch_key
    results = container_sas(blobs, "large", "rwl")
    pid = live.proc.pid
    with open(f"/proc/{pid}/clear_refs", "w") as clear:
        clear.write("5")  # resets the peak (VmHWM) to the current resident size
    before = _rss_kib(pid, "VmRSS")
    batch.create_job({"id": "large", "poolInfo": {"poolId": pool}})
    batch.create_task("large", {"id": "big", "commandLine": "/bin/sh -c 'head -c 268435456 /dev/urandom > big.bin && "
                                                            "sha256sum big.bin'",
                                "outputFiles": [{"filePattern": "big.bin", "destination": {"container": {
                                    "containerUrl": results}}, "uploadOptions": {"uploadCondition": "taskSuccess"}}]})
    task = finished(batch, "large", "big")
    assert task.execution_info.result == "success", task.execution_info.failure_info
    peak = _rss_kib(pid, "VmHWM")
    digest = hashlib.sha256()
    blob = blobs.get_blob_client("large", "big.bin")
    for chunk in blob.download_blob().chunks():
        digest.update(chunk)
    assert stdout(batch, "large", "big").split()[0] == digest.hexdigest()
    assert blob.get_blob_properties().blob_type == "BlockBlob"
    assert peak - before < 64 * 1024, f"server memory grew by {(peak - before) // 1024} MiB"


def test_job_preparation_and_release_tasks_get_resource_files(clients, pool, inputs, blobs):
    batch = clients.batch_key
    auto = blobs.get_container_client("prep-inputs")
    auto.create_container()
    auto.upload_blob("tables/lookup.txt", b"lookup-table\n")
    plain_url = f"{blobs.url.rstrip('/')}/inputs/other/c.txt"  # no SAS: the auto-storage account's key is used
    batch.create_job({"id": "prepared", "poolInfo": {"poolId": pool},
                      "jobPreparationTask": {"commandLine": "/bin/sh -c 'cat tables/lookup.txt'", "resourceFiles": [
                          {"autoStorageContainerName": "prep-inputs"}]},
                      "jobReleaseTask": {"commandLine": "/bin/sh -c 'cat c.txt'", "resourceFiles": [
                          {"httpUrl": plain_url, "filePath": "c.txt",
                           "identityReference": {"resourceId": IDENTITY}}]}})
    batch.create_task("prepared", {"id": "uses", "commandLine":
                                   "/bin/sh -c 'cat $AZ_BATCH_JOB_PREP_WORKING_DIR/tables/lookup.txt'"})
    task = finished(batch, "prepared", "uses")
    assert task.execution_info.result == "success" and stdout(batch, "prepared", "uses") == "lookup-table\n"
    batch.begin_terminate_job("prepared", {"terminateReason": "done"}, polling_interval=0.1).result()
    wait_for(lambda: batch.get_job("prepared").state == "completed", what="the release tasks")
    statuses = list(batch.list_job_preparation_and_release_task_status("prepared"))
    assert statuses and all(s.job_preparation_task_execution_info.result == "success" for s in statuses)
    assert all(s.job_release_task_execution_info.result == "success" for s in statuses)


def test_transient_failures_are_retried(clients, pool):
    """A server that answers 503 twice before the file: the download is retried, not failed."""
    import http.server
    import threading
    answers = []

    class Flaky(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            answers.append(self.path)
            body = b"third-time-lucky\n" if len(answers) > 2 else b"busy"
            self.send_response(200 if len(answers) > 2 else 503)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        batch = clients.batch_key
        batch.create_job({"id": "flaky", "poolInfo": {"poolId": pool}})
        batch.create_task("flaky", {"id": "retry", "commandLine": "cat got.txt", "resourceFiles": [
            {"httpUrl": f"http://127.0.0.1:{httpd.server_address[1]}/file", "filePath": "got.txt"}]})
        task = finished(batch, "flaky", "retry")
        assert task.execution_info.result == "success", task.execution_info.failure_info
        assert stdout(batch, "flaky", "retry") == "third-time-lucky\n" and len(answers) == 3
    finally:
        httpd.shutdown()


def test_application_lifecycle_and_refusals(clients, live):
    mgmt = clients.batch_mgmt
    group, account = live.info["resource_group"], live.info["batch_account"]
    before = mgmt.batch_account.get(group, account).auto_storage.last_key_sync
    mgmt.batch_account.synchronize_auto_storage_keys(group, account)
    assert mgmt.batch_account.get(group, account).auto_storage.last_key_sync >= before
    mgmt.application.create(group, account, "fixed", {"properties": {"allowUpdates": False}})
    package = mgmt.application_package.create(group, account, "fixed", "2.0.1")
    BlobClient.from_blob_url(package.properties.storage_url).upload_blob(_package_zip(), overwrite=True)
    mgmt.application_package.activate(group, account, "fixed", "2.0.1", {"format": "zip"})
    with pytest.raises(HttpResponseError) as e:  # allowUpdates false: an existing version stays as it is
        mgmt.application_package.create(group, account, "fixed", "2.0.1")
    assert e.value.status_code == 409
    with pytest.raises(HttpResponseError) as e:
        mgmt.application.update(group, account, "fixed", {"properties": {"defaultVersion": "9"}})
    assert e.value.status_code == 409
    with pytest.raises(HttpResponseError) as e:
        mgmt.application_package.activate(group, account, "fixed", "2.0.1", {"format": "tar"})
    assert e.value.status_code == 400
    # on the management plane, a pool's applicationPackages are checked the same way
    image = next(iter(clients.batch_key.list_supported_images()))
    ref = image.image_reference
    arm_pool = {"properties": {"vmSize": "STANDARD_A1_V2", "deploymentConfiguration": {
        "virtualMachineConfiguration": {"imageReference": {"publisher": ref.publisher, "offer": ref.offer,
                                                           "sku": ref.sku, "version": "latest"},
                                        "nodeAgentSkuId": image.node_agent_sku_id}},
        "applicationPackages": [{"id": "fixed"}]}}  # no version and no default version
    with pytest.raises(HttpResponseError) as e:
        mgmt.pool.create(group, account, "armapps", arm_pool)
    assert e.value.status_code == 409
    arm_pool["properties"]["applicationPackages"] = [{"id": "fixed", "version": "2.0.1"}]
    created = mgmt.pool.create(group, account, "armapps", arm_pool)
    assert [(p.id, p.version) for p in created.application_packages] == [("fixed", "2.0.1")]
    mgmt.pool.begin_delete(group, account, "armapps").result()
    mgmt.application_package.delete(group, account, "fixed", "2.0.1")
    assert list(mgmt.application_package.list(group, account, "fixed")) == []
    assert clients.batch_key.get_application("fixed").versions == []
    mgmt.application.delete(group, account, "fixed")
    with pytest.raises(HttpResponseError) as e:
        mgmt.application.get(group, account, "fixed")
    assert e.value.status_code == 404
    # an account without auto-storage has nowhere to keep packages
    mgmt.batch_account.begin_create(group, "noauto", {"location": live.info["location"]}).result()
    mgmt.application.create(group, "noauto", "app")  # no body: the SDK may send none
    with pytest.raises(HttpResponseError) as e:
        mgmt.application_package.create(group, "noauto", "app", "1")
    assert e.value.status_code == 409 and e.value.error.code == "AutoStorageNotConfigured"
