"""Container pools and container tasks through the real azure-batch client, with images
pulled from real registries (Debian's docker-registry on loopback: anonymous, with
htpasswd (basic) authentication, and with bearer tokens from a token service the test
runs) that the tests fill with images they build themselves."""

from __future__ import annotations

import threading

import pytest
from azure.core.exceptions import HttpResponseError

from conftest import Clients, Server, pool_settled, wait_for
from oci_registry import HoldingProxy, Registry, TokenService, busybox_files, layer_digests, tls_files, write_layout
from test_batch_pools import base_pool, error_values

from batchyard import defaults
from batchyard.runtime.container_images import ImageStore
from batchyard.runtime.layers import LayerStore

USERS = {"alice": "wonder-land-7"}


@pytest.fixture(scope="module")
def registries(tmp_path_factory):
    root = tmp_path_factory.mktemp("registries")
    tokens = TokenService(root, USERS)
    ca, certificate, key = tls_files(root)
    public, private, tokened = Registry(root / "public"), Registry(root / "private", USERS), \
        Registry(root / "tokened", tokens=tokens)
    secure = Registry(root / "secure", tls=(certificate, key))
    try:
        alpha = write_layout(root / "alpha", [(busybox_files({"etc/which": b"alpha\n"}), "gzip")],
                             {"Env": ["PATH=/bin", "FOO=alpha"], "WorkingDir": "/srv"})
        # two layers, the upper one zstd-compressed, deleting a file of the lower one and
        # making a directory opaque: OCI whiteouts, seen as overlay's
        beta = write_layout(root / "beta", [
            (busybox_files({"etc/which": b"beta-base\n", "etc/gone": b"x\n", "data/old": b"old\n"}), "gzip"),
            ({"etc/which": b"beta\n", "etc/.wh.gone": b"", "data/.wh..wh..opq": b"", "data/new": b"new\n"}, "zstd")],
            {"Env": ["PATH=/bin"], "Entrypoint": ["/bin/sh", "-c"], "Cmd": ["echo beta-default"]})
        tampered = write_layout(root / "tampered", [(busybox_files({"etc/which": b"tampered\n"}), "gzip")])
        images = {"alpha": public.push(alpha, "tools/alpha:1"), "tampered": public.push(tampered, "tools/bad:1"),
                  "tampered-layer": layer_digests(tampered)[0],
                  "beta": private.push(beta, "private/beta:2", "alice"),
                  "gamma": private.push(alpha, "private/gamma:1", "alice"),
                  "delta": tokened.push(alpha, "team/delta:4", "alice"), "tokened": tokened.address,
                  "epsilon": secure.push(alpha, "tls/epsilon:5"), "ca": str(ca),
                  "private": private.address, "push": public.push}
        public.corrupt(images["tampered-layer"])
        yield images
    finally:
        for running in (public, private, tokened, secure, tokens):
            running.stop()


def container_pool(clients, pool_id: str, images: list[str], dedicated: int = 1, registries=(), **extra) -> dict:
    body = base_pool(clients, pool_id, dedicated, **extra)
    body["virtualMachineConfiguration"]["containerConfiguration"] = {
        "type": "dockerCompatible", "containerImageNames": images, "containerRegistries": list(registries)}
    return body


@pytest.fixture(scope="module")
def pool(clients, registries):
    """Four nodes prefetching two images (one private), a start task in a container."""
    login = {"registryServer": registries["private"], "username": "alice", "password": USERS["alice"]}
    clients.batch.create_pool(container_pool(
        clients, "ctr", [registries["alpha"], registries["beta"]], dedicated=4, registries=[login],
        taskSlotsPerNode=4, startTask={
            "commandLine": "sh -c 'cat /etc/which > $AZ_BATCH_NODE_SHARED_DIR/started-by'",
            "containerSettings": {"imageName": registries["alpha"]}, "waitForSuccess": True,
            "userIdentity": {"autoUser": {"elevationLevel": "admin"}}}))
    pool_settled(clients.batch, "ctr")
    return "ctr"


def test_registry_passwords_are_never_shown(clients, pool, registries):
    shown = clients.batch.get_pool(pool).virtual_machine_configuration.container_configuration
    assert [r.registry_server for r in shown.container_registries] == [registries["private"]]
    assert shown.container_registries[0].username == "alice" and shown.container_registries[0].password is None
    assert shown.container_image_names == [registries["alpha"], registries["beta"]]
    clients.batch.create_job({"id": "ctr-secret", "poolInfo": {"poolId": pool}})
    login = {"registryServer": registries["private"], "username": "alice", "password": USERS["alice"]}
    clients.batch.create_task("ctr-secret", {"id": "t", "commandLine": "true", "containerSettings": {
        "imageName": registries["gamma"], "registry": login}})
    task = finished(clients.batch, "ctr-secret", "t")
    assert task.execution_info.exit_code == 0  # the password kept and used
    assert task.container_settings.registry.username == "alice" and task.container_settings.registry.password is None


def read(batch, job: str, task: str, name: str = "stdout.txt") -> str:
    return b"".join(batch.download_task_file(job, task, name)).decode()


def finished(batch, job: str, task: str):
    return wait_for(lambda: (t := batch.get_task(job, task)).state == "completed" and t, timeout=60,
                    what=f"task {task}")


def test_tasks_run_in_their_images_with_the_batch_directories(clients, pool, registries):
    batch = clients.batch
    # idle once the node has taken the exit of the previous test's task
    def all_idle():
        nodes = list(batch.list_nodes(pool))
        return nodes if all(n.state == "idle" for n in nodes) else None
    nodes = wait_for(all_idle, what="the pool's nodes idle")
    assert len(nodes) == 4
    batch.create_job({"id": "ctr-images", "poolInfo": {"poolId": pool}})
    show = ("'cat /etc/which; ls /etc; pwd; echo $AZ_BATCH_TASK_ID $AZ_BATCH_JOB_ID $FOO; "
            "cat $AZ_BATCH_NODE_SHARED_DIR/started-by; test -e /usr/bin/python3 || echo no-host-files; "
            "ls /data; echo made > made.txt'")
    for name, command in (("alpha", f"sh -c {show}"), ("beta", show)):  # beta's ENTRYPOINT is sh -c
        batch.create_task("ctr-images", {"id": name, "commandLine": command,
                                         "containerSettings": {"imageName": registries[name]}})
    alpha, beta = finished(batch, "ctr-images", "alpha"), finished(batch, "ctr-images", "beta")
    assert alpha.execution_info.exit_code == 0, read(batch, "ctr-images", "alpha", "stderr.txt")
    wd = "/mnt/batch/tasks/workitems/ctr-images/job-1/alpha/wd"
    assert read(batch, "ctr-images", "alpha").splitlines() == [
        "alpha", "group", "passwd", "which", wd, "alpha ctr-images alpha", "alpha", "no-host-files"]
    assert alpha.execution_info.container_info.container_id
    assert read(batch, "ctr-images", "alpha", "wd/made.txt") == "made\n"  # the task directory is the host's
    # beta's ENTRYPOINT is sh -c: the command line follows it; its upper layer's whiteouts hold
    assert beta.execution_info.exit_code == 0, read(batch, "ctr-images", "beta", "stderr.txt")
    out = read(batch, "ctr-images", "beta").splitlines()
    assert out[0] == "beta" and "gone" not in out[1:4] and out[-1] == "new"
    batch.create_task("ctr-images", {"id": "default-cmd", "commandLine": "",
                                     "containerSettings": {"imageName": registries["beta"]}})
    assert finished(batch, "ctr-images", "default-cmd").execution_info.exit_code == 0
    assert read(batch, "ctr-images", "default-cmd") == "beta-default\n"


def test_container_run_options_are_honoured(clients, pool, registries):
    batch = clients.batch
    alpha = registries["alpha"]
    prep_wd = "/mnt/batch/tasks/workitems/ctr-options/job-1/jobpreparation/wd"
    batch.create_job({"id": "ctr-options", "poolInfo": {"poolId": pool}, "jobPreparationTask": {
        "commandLine": "sh -c 'echo FROMFILE=yes > env.list; echo \"# note\" >> env.list; s=0123456789abcdef; "
                       "for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17; do s=$s$s; done; echo X=$s > big.list'",
        "containerSettings": {"imageName": alpha}}})
    tasks = {
        "options": ("sh -c 'echo $GREETING $OWN $FROMFILE $FOO; pwd; id -u; id -g'",
                    f"--rm -e GREETING=hi -e OWN --workdir /work --user worker --env-file {prep_wd}/env.list"),
        "entrypoint": ("first second", "--entrypoint /bin/echo"),
        "readonly": ("sh -c 'touch /x 2>/dev/null || echo read-only; echo w > $AZ_BATCH_TASK_WORKING_DIR/f && "
                     "echo wd-writable'", "--read-only"),
        "image-dir": ("pwd", None),
        "big-env": ("true", f"--env-file {prep_wd}/big.list"),  # 2 MiB: refused, never read whole
        "task-only": ("sh -c 'ls $AZ_BATCH_NODE_ROOT_DIR; ls $AZ_BATCH_NODE_ROOT_DIR/workitems/ctr-options/job-1'",
                      None),
    }
    for task_id, (command, options) in tasks.items():
        settings = {"imageName": alpha, **({"containerRunOptions": options} if options else {})}
        if task_id == "image-dir":
            settings["workingDirectory"] = "containerImageDefault"
        if task_id == "task-only":
            settings["containerHostBatchBindMounts"] = [{"source": "Task", "isReadOnly": False}]
        batch.create_task("ctr-options", {"id": task_id, "commandLine": command, "containerSettings": settings,
                                          "environmentSettings": [{"name": "OWN", "value": "mine"}]})
    for task_id in tasks:
        task = finished(batch, "ctr-options", task_id)
        if task_id == "big-env":
            assert task.execution_info.failure_info.code == "ContainerInvalidSettings"
            assert "larger than 1048576 bytes" in task.execution_info.failure_info.details[0].value
            continue
        assert task.execution_info.exit_code == 0, (task_id, read(batch, "ctr-options", task_id, "stderr.txt"))
    assert read(batch, "ctr-options", "options").splitlines() == ["hi mine yes alpha", "/work", "1234", "2345"]
    assert read(batch, "ctr-options", "entrypoint") == "first second\n"
    assert read(batch, "ctr-options", "readonly").splitlines() == ["read-only", "wd-writable"]
    assert read(batch, "ctr-options", "image-dir") == "/srv\n"
    assert read(batch, "ctr-options", "task-only").splitlines() == ["workitems", "task-only"]
    batch.create_job({"id": "ctr-manager", "poolInfo": {"poolId": pool}, "jobManagerTask": {
        "id": "manager", "commandLine": "sh -c 'cat /etc/which; echo $AZ_BATCH_TASK_ID'",
        "containerSettings": {"imageName": alpha}}})
    assert finished(batch, "ctr-manager", "manager").execution_info.exit_code == 0
    assert read(batch, "ctr-manager", "manager") == "alpha\nmanager\n"
    with pytest.raises(HttpResponseError) as refused:
        batch.create_task("ctr-options", {"id": "privileged", "commandLine": "true", "containerSettings": {
            "imageName": alpha, "containerRunOptions": "--privileged"}})
    assert refused.value.status_code == 400 and "--privileged" in str(error_values(refused))


def test_exit_codes_retries_and_timeouts_as_for_other_tasks(clients, pool, registries):
    batch = clients.batch
    batch.create_job({"id": "ctr-exits", "poolInfo": {"poolId": pool}})
    image = {"imageName": registries["alpha"]}
    batch.create_task("ctr-exits", {"id": "fails", "commandLine": "sh -c 'echo try >&2; exit 3'",
                                    "containerSettings": image, "constraints": {"maxTaskRetryCount": 1}})
    batch.create_task("ctr-exits", {"id": "slow", "commandLine": "sleep 60", "containerSettings": image,
                                    "constraints": {"maxWallClockTime": "PT2S"}})
    # a release task in a container: /etc/which is the image's, not the node's
    batch.create_job({"id": "ctr-release", "poolInfo": {"poolId": pool},
                      "jobPreparationTask": {"commandLine": "test -f /etc/which", "containerSettings": image},
                      "jobReleaseTask": {"commandLine": "test -f /etc/which", "containerSettings": image}})
    batch.create_task("ctr-release", {"id": "t", "commandLine": "true", "containerSettings": image})
    node = finished(batch, "ctr-release", "t").node_info.node_id
    batch.begin_terminate_job("ctr-release", {"terminateReason": "done"}, polling_interval=0.1).result()
    status = next(s for s in batch.list_job_preparation_and_release_task_status("ctr-release") if s.node_id == node)
    assert status.job_preparation_task_execution_info.exit_code == 0
    assert (status.job_release_task_execution_info.state, status.job_release_task_execution_info.exit_code) == \
        ("completed", 0)
    fails = finished(batch, "ctr-exits", "fails")
    assert (fails.execution_info.exit_code, fails.execution_info.retry_count) == (3, 1)
    assert fails.execution_info.failure_info.code == "FailureExitCode"
    assert read(batch, "ctr-exits", "fails", "stderr.txt") == "try\ntry\n"  # both attempts, as for any task
    slow = finished(batch, "ctr-exits", "slow")
    assert slow.execution_info.failure_info.code == "MaxWallClockTimeExpiry"


def test_private_registry_needs_its_credentials_and_missing_images_fail(clients, server, pool, registries):
    batch = clients.batch
    batch.create_job({"id": "ctr-private", "poolInfo": {"poolId": pool}})
    good = {"registryServer": registries["private"], "username": "alice", "password": USERS["alice"]}
    cases = {
        "pool-login": {"imageName": registries["gamma"]},  # the pool's login for that registry
        "task-login": {"imageName": registries["gamma"], "registry": good},
        "wrong-login": {"imageName": registries["gamma"], "registry": {**good, "password": "not-it"}},
        "bearer": {"imageName": registries["delta"], "registry": {**good, "registryServer": registries["tokened"]}},
        "no-token": {"imageName": registries["delta"]},
        "missing": {"imageName": registries["alpha"].replace("alpha:1", "nothing:1")},
        "tampered": {"imageName": registries["tampered"]},  # a layer that does not hash to its digest
    }
    for task_id, settings in cases.items():
        batch.create_task("ctr-private", {"id": task_id, "commandLine": "cat /etc/which",
                                          "containerSettings": settings})
    for task_id in ("pool-login", "task-login", "bearer"):
        assert finished(batch, "ctr-private", task_id).execution_info.exit_code == 0
        assert read(batch, "ctr-private", task_id) == "alpha\n"
    for task_id, reason in (("wrong-login", "credentials"), ("missing", "not found"), ("no-token", "refused"),
                            ("tampered", "arrived with digest")):
        task = finished(batch, "ctr-private", task_id)
        failure = task.execution_info.failure_info
        assert task.execution_info.result == "failure" and task.execution_info.exit_code is None
        assert (failure.category.lower(), failure.code) == ("usererror", "ContainerInvalidImage")
        assert reason in failure.details[0].value and "not-it" not in failure.details[0].value
    # nothing half-made: no layer recorded for the bad blob, no scratch left in the layer store
    layers = server.data_dir / "runtime" / "layers"
    assert not (layers / "oci-layers" / registries["tampered-layer"].replace(":", "-")).exists()
    assert list((layers / "tmp").iterdir()) == []


def test_pool_without_credentials_and_pool_whose_prefetch_fails(clients, registries):
    batch = clients.batch
    batch.create_pool(container_pool(clients, "ctr-anon", [registries["alpha"]]))
    batch.create_pool(container_pool(clients, "ctr-broken", [registries["alpha"], registries["beta"]]))
    pool_settled(batch, "ctr-anon")
    broken = pool_settled(batch, "ctr-broken", states=("unusable",))[1][0]
    assert broken.errors[0].code == "ContainerInvalidImage"
    assert "credentials" in broken.errors[0].error_details[0].value
    batch.create_job({"id": "ctr-anon", "poolInfo": {"poolId": "ctr-anon"}})
    batch.create_task("ctr-anon", {"id": "private", "commandLine": "true",
                                   "containerSettings": {"imageName": registries["gamma"]}})
    failure = finished(batch, "ctr-anon", "private").execution_info.failure_info
    assert failure.code == "ContainerInvalidImage" and "credentials" in failure.details[0].value


def test_container_settings_are_validated_as_azure_does(clients, registries):
    batch = clients.batch
    for bad, field in (({"type": "rkt"}, "type"), ({"type": "dockerCompatible", "containerImageNames": ["UPPER/x"]},
                                                    "containerImageNames[0]"),
                       ({"type": "criCompatible", "containerRegistries": [{"username": "u"}]},
                        "containerRegistries[0].password")):
        body = base_pool(clients, "ctr-bad", 0)
        body["virtualMachineConfiguration"]["containerConfiguration"] = bad
        with pytest.raises(HttpResponseError) as refused:
            batch.create_pool(body)
        assert refused.value.status_code == 400
        assert error_values(refused).get("PropertyName", "").endswith(field)
    plain = base_pool(clients, "ctr-plain", 1)
    batch.create_pool(plain)
    pool_settled(batch, "ctr-plain")
    batch.create_job({"id": "ctr-plain", "poolInfo": {"poolId": "ctr-plain"}})
    batch.create_task("ctr-plain", {"id": "t", "commandLine": "true",
                                    "containerSettings": {"imageName": registries["alpha"]}})
    assert finished(batch, "ctr-plain", "t").execution_info.failure_info.code == "ContainerInvalidSettings"


def test_two_hundred_container_tasks_on_four_nodes(clients, pool, registries):
    batch = clients.batch
    batch.create_job({"id": "ctr-many", "poolInfo": {"poolId": pool}})
    for start in (0, 100):
        batch.create_task_collection("ctr-many", {"value": [
            {"id": f"t{i}", "commandLine": ("sh -c " if i % 2 else "") + f"'echo task-{i} $(cat /etc/which) "
                                           "$AZ_BATCH_NODE_ID'",
             "containerSettings": {"imageName": registries["alpha" if i % 2 else "beta"]}}
            for i in range(start, start + 100)]})
    wait_for(lambda: batch.get_job_task_counts("ctr-many").task_counts.completed == 200, timeout=240,
             interval=0.5, what="200 container tasks")
    tasks = {t.id: t for t in batch.list_tasks("ctr-many")}
    assert all(t.execution_info.exit_code == 0 for t in tasks.values())
    for i in range(200):
        task = tasks[f"t{i}"]
        assert read(batch, "ctr-many", f"t{i}") == \
            f"task-{i} {'alpha' if i % 2 else 'beta'} {task.node_info.node_id}\n"
    assert len({t.node_info.node_id for t in tasks.values()}) == 4


def test_https_registries_are_trusted_through_the_ca_bundle_setting(clients, registries, tmp_path):
    """The TLS registry's CA is unknown to the session's server (its nodes are unusable with
    the reason) and given to another server by BATCHYARD_REGISTRY_CA_BUNDLE."""
    clients.batch.create_pool(container_pool(clients, "ctr-untrusted", [registries["epsilon"]]))
    node = pool_settled(clients.batch, "ctr-untrusted", states=("unusable",))[1][0]
    assert node.errors[0].code == "ContainerInvalidImage" and "TLS" in node.errors[0].error_details[0].value
    with Server(tmp_path / "data", extra_env={"BATCHYARD_REGISTRY_CA_BUNDLE": registries["ca"]}) as server:
        trusting = Clients(server.info)
        trusting.batch.create_pool(container_pool(trusting, "ctr-tls", [registries["epsilon"]]))
        pool_settled(trusting.batch, "ctr-tls")
        trusting.batch.create_job({"id": "tls", "poolInfo": {"poolId": "ctr-tls"}})
        trusting.batch.create_task("tls", {"id": "t", "commandLine": "cat /etc/which",
                                          "containerSettings": {"imageName": registries["epsilon"]}})
        assert finished(trusting.batch, "tls", "t").execution_info.exit_code == 0
        assert read(trusting.batch, "tls", "t") == "alpha\n"


def test_supported_images_say_which_run_containers_and_pools_follow(clients, registries):
    """DockerCompatible where the machines here run containers (every base image) and where
    the Azure image an alias names has it (microsoft-azure-batch's container offer, not
    Canonical's plain Ubuntu); a container pool on an image without it is refused on both
    planes, as Azure refuses it."""
    images = {(i.image_reference.publisher, i.image_reference.offer): i
              for i in clients.batch.list_supported_images()}
    host = next(i for (publisher, _), i in images.items() if publisher == "batchyard")
    plain = images[("canonical", "0001-com-ubuntu-server-jammy")]
    container = images[("microsoft-azure-batch", "ubuntu-server-container")]
    assert host.capabilities == container.capabilities == ["DockerCompatible"] and not plain.capabilities
    settings = {"type": "dockerCompatible", "containerImageNames": [registries["alpha"]]}

    def pool_on(image, pool_id):
        ref = image.image_reference
        return {"id": pool_id, "vmSize": "standard_a1_v2", "targetDedicatedNodes": 0, "virtualMachineConfiguration": {
            "imageReference": {"publisher": ref.publisher, "offer": ref.offer, "sku": ref.sku, "version": "latest"},
            "nodeAgentSKUId": image.node_agent_sku_id, "containerConfiguration": settings}}
    with pytest.raises(HttpResponseError) as refused:
        clients.batch.create_pool(pool_on(plain, "ctr-plain-ubuntu"))
    assert refused.value.status_code == 400 and refused.value.error.code == "InvalidPropertyValue"
    values = error_values(refused)
    assert values["PropertyName"] == "virtualMachineConfiguration.containerConfiguration"
    assert "DockerCompatible" in values["Reason"] and "ubuntu-server-container" in values["Reason"]
    ref = plain.image_reference
    arm_body = {"properties": {"vmSize": "STANDARD_A1_V2", "deploymentConfiguration": {"virtualMachineConfiguration": {
        "imageReference": {"publisher": ref.publisher, "offer": ref.offer, "sku": ref.sku, "version": "latest"},
        "nodeAgentSkuId": plain.node_agent_sku_id, "containerConfiguration": {"type": "DockerCompatible"}}}}}
    with pytest.raises(HttpResponseError) as refused:
        clients.batch_mgmt.pool.create(defaults.RESOURCE_GROUP, defaults.BATCH_ACCOUNT, "arm-plain-ubuntu", arm_body)
    assert refused.value.status_code == 400 and refused.value.error.code == "InvalidPropertyValue"
    assert refused.value.error.target == \
        "properties.deploymentConfiguration.virtualMachineConfiguration.containerConfiguration"
    clients.batch.create_pool(pool_on(container, "ctr-container-offer"))  # the image Azure's samples use
    assert clients.batch.get_pool("ctr-container-offer").virtual_machine_configuration.container_configuration


def test_container_pool_made_on_the_management_plane(clients, registries):
    """containerConfiguration through azure-mgmt-batch: the same pool on the data plane,
    its private image prefetched with the pool's login, the password shown on neither."""
    image = next(iter(clients.batch_key.list_supported_images()))
    ref = image.image_reference
    login = {"registryServer": registries["private"], "username": "alice", "password": USERS["alice"]}
    body = {"properties": {"vmSize": "STANDARD_A1_V2", "deploymentConfiguration": {"virtualMachineConfiguration": {
        "imageReference": {"publisher": ref.publisher, "offer": ref.offer, "sku": ref.sku, "version": "latest"},
        "nodeAgentSkuId": image.node_agent_sku_id, "containerConfiguration": {
            "type": "DockerCompatible", "containerImageNames": [registries["beta"]], "containerRegistries": [login]}}},
        "scaleSettings": {"fixedScale": {"targetDedicatedNodes": 1}}}}
    created = clients.batch_mgmt.pool.create(defaults.RESOURCE_GROUP, defaults.BATCH_ACCOUNT, "arm-ctr", body)
    for shown in (created, clients.batch_mgmt.pool.get(defaults.RESOURCE_GROUP, defaults.BATCH_ACCOUNT, "arm-ctr")):
        containers = shown.deployment_configuration.virtual_machine_configuration.container_configuration
        assert containers.type == "DockerCompatible" and containers.container_image_names == [registries["beta"]]
        assert [(r.registry_server, r.user_name, r.password) for r in containers.container_registries] == \
            [(registries["private"], "alice", None)]
    pool_settled(clients.batch, "arm-ctr")
    containers = clients.batch.get_pool("arm-ctr").virtual_machine_configuration.container_configuration
    assert containers.type == "dockerCompatible" and containers.container_registries[0].password is None
    clients.batch.create_job({"id": "arm-ctr", "poolInfo": {"poolId": "arm-ctr"}})
    clients.batch.create_task("arm-ctr", {"id": "t", "commandLine": "'cat /etc/which'",
                                          "containerSettings": {"imageName": registries["beta"]}})
    assert finished(clients.batch, "arm-ctr", "t").execution_info.exit_code == 0
    assert read(clients.batch, "arm-ctr", "t") == "beta\n"


def test_a_tag_pushed_again_is_pulled_again(clients, pool, registries, tmp_path):
    """As Azure's node agent pulls a task's image when the task starts: a tag the host has
    is asked for its digest, and a tag that moved is downloaded again."""
    batch = clients.batch
    moving = registries["push"](moving_layout(tmp_path / "first", b"first\n"), "tools/moving:1")
    batch.create_job({"id": "ctr-moving", "poolInfo": {"poolId": pool}})
    batch.create_task("ctr-moving", {"id": "before", "commandLine": "cat /etc/which",
                                     "containerSettings": {"imageName": moving}})
    assert read(batch, "ctr-moving", finished(batch, "ctr-moving", "before").id) == "first\n"
    registries["push"](moving_layout(tmp_path / "second", b"second\n"), "tools/moving:1")
    batch.create_task("ctr-moving", {"id": "after", "commandLine": "cat /etc/which",
                                     "containerSettings": {"imageName": moving}})
    assert read(batch, "ctr-moving", finished(batch, "ctr-moving", "after").id) == "second\n"


def moving_layout(path, which: bytes):
    return write_layout(path, [(busybox_files({"etc/which": which}), "gzip")], {"Env": ["PATH=/bin"]})


def test_tasks_starting_together_share_one_check_of_their_tag(registries, tmp_path):
    """Every container task start asks the registry whether its tag moved (a HEAD of the
    manifest); starts that arrive while a check is out share the next one instead of
    queueing their own, and still see a push made after they arrived. The host's image
    store is driven directly (four threads as four task starts), against the real registry
    behind a proxy that counts the HEADs and holds the first one's answer."""
    public = registries["alpha"].split("/")[0]
    proxy = HoldingProxy(public)
    try:
        registries["push"](moving_layout(tmp_path / "old", b"old\n"), "tools/shared:1")
        reference = f"{proxy.address}/tools/shared:1"
        store = ImageStore(LayerStore(tmp_path / "layers"))
        old = store.pull(reference, None)
        assert proxy.heads == 0  # the first pull asks for the manifest itself
        proxy.hold.clear()
        got: dict[str, object] = {}
        first = threading.Thread(target=lambda: got.update(first=store.pull(reference, None)))
        first.start()
        wait_for(lambda: proxy.held == 1, what="the first check at the registry")
        # the first check's answer (the old digest) is on its way; the tag moves now, and
        # three more starts arrive while the answer is held
        registries["push"](moving_layout(tmp_path / "new", b"new\n"), "tools/shared:1")
        others = [threading.Thread(target=lambda i=i: got.update({f"other{i}": store.pull(reference, None)}))
                  for i in range(3)]
        for thread in others:
            thread.start()
        wait_for(lambda: store.tag_checks.waiting() == 4, what="four starts asking at once")
        proxy.hold.set()
        for thread in [first, *others]:
            thread.join(60)
        assert proxy.heads == 2  # the held one, and one shared by the three that came during it
        assert got["first"].digest == old.digest  # its check began before the push
        assert {got[f"other{i}"].digest for i in range(3)} == {store.local(reference).digest} != {old.digest}
    finally:
        proxy.stop()


def test_links_in_an_image_where_mounts_go_are_refused(clients, pool, registries, tmp_path):
    """The Batch directories are mounted into a container before its root is entered: an
    image whose /mnt is a link must not steer that mount (nor the directories made for it)
    into the machine's own filesystem (here: /batch made at its root, the mount put there)."""
    batch = clients.batch
    linked = registries["push"](write_layout(tmp_path / "linked", [(busybox_files(
        {"mnt": ("link", "/")}), "gzip")], {"Env": ["PATH=/bin"]}), "tools/linked:1")
    batch.create_job({"id": "ctr-linked", "poolInfo": {"poolId": pool}})
    batch.create_task("ctr-linked", {"id": "linked", "commandLine": "true", "containerSettings": {"imageName": linked}})
    task = finished(batch, "ctr-linked", "linked")
    assert task.execution_info.exit_code == 126
    assert "/mnt is a symbolic link in the image" in read(batch, "ctr-linked", "linked", "stderr.txt")
