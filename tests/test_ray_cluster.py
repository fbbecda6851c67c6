"""Machines on a real Ray cluster (`batchyard serve --ray-address`), driven with the real SDKs:
three Ray nodes on this machine (ray.cluster_utils.Cluster, Ray's own multi-node mode),
each bound to 127.0.0.2 (Ray rewrites 127.0.0.1 to the host's outward address, so the
service must join from the cluster's loopback address too) and each with its own host
directory: its own layer cache (a layer it did not pull is not there) and machines."""

from __future__ import annotations

import fcntl
import ipaddress
import json
import os
import shutil
import signal
import socket
import sqlite3
import time
import uuid
from pathlib import Path

import pytest

from batchyard.runtime import journal
from batchyard.runtime.host_daemon import reclaim_dead_siblings
from batchyard.runtime.networks import address_of
from conftest import Clients, Server, agents_of, build_flow, pool_settled, run_script, serving, wait_for
from test_host_reclaim import left_by
from test_node_isolation import PROBE, free_range, run

RG = "rayflow"
HOSTS = 3
IMAGE_CHECK = "/opt/tool/run on-node && grep -q reference-data /datadisks/lun0/input.txt"


@pytest.fixture(scope="module")
def ray_base(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ray")


@pytest.fixture(scope="module")
def cluster(ray_base):
    from ray.cluster_utils import Cluster

    # fast failure detection: a node whose raylet dies is declared dead in about a second
    config = {"health_check_period_ms": 300, "health_check_failure_threshold": 3,
              "health_check_initial_delay_ms": 0, "health_check_timeout_ms": 300}
    made = Cluster(initialize_head=True, head_node_args={
        "node_ip_address": "127.0.0.2", "num_cpus": 2, "include_dashboard": False, "_system_config": config})
    try:
        for _ in range(HOSTS - 1):
            made.add_node(node_ip_address="127.0.0.2", num_cpus=2)
        made.wait_for_nodes()
        yield made
    finally:
        made.shutdown()
        # A host whose raylet the tests kill lives on until here, then dies with the
        # cluster, stopping nothing: what it left on this machine is taken back as the next
        # host daemon here would take it back.
        deadline = time.monotonic() + 15  # (each lock is free once its daemon has ended)
        while (ray_base / "hosts").is_dir() and any((ray_base / "hosts").glob("*/daemon.lock")) \
                and time.monotonic() < deadline:
            reclaim_dead_siblings(ray_base / "hosts" / "after-the-cluster")
            time.sleep(0.2)


@pytest.fixture(scope="module")
def ray_server(cluster, ray_base):
    base = ray_base
    with Server(base / "data", extra_env={"BATCHYARD_LOST_NODE_GRACE": "2"},
                args=["--ray-address", cluster.address, "--ray-host-dir", str(base / "hosts")]) as srv:
        srv.hosts_dir = base / "hosts"
        yield srv


@pytest.fixture(scope="module")
def ray_clients(ray_server) -> Clients:
    return Clients(ray_server.info)


def host_dirs(server) -> list[Path]:
    return sorted(p for p in server.hosts_dir.iterdir() if p.is_dir())


def machines_on(host: Path) -> set[str]:
    return {p.name for p in (host / "machines").iterdir()} if (host / "machines").exists() else set()


def test_seed_flow_spread_over_every_host(ray_server, ray_clients):
    c, batch = ray_clients, ray_clients.batch
    # The VMs go to the emptiest hosts, and the lost-host test below needs one off the head:
    # every host's agent must have joined first (a slow one, on a loaded machine, joined
    # after the VMs were placed, both on the head).
    wait_for(lambda: Path(ray_server.log).read_text(errors="replace").count(" joined with ") >= HOSTS,
             timeout=120, what="every Ray node's agent to join the service")
    flow = build_flow(c, RG)  # the VMs run on the cluster: one builder, snapshots, an image, a worker
    batch.create_pool({
        "id": "spread", "vmSize": "standard_a1_v2", "targetDedicatedNodes": 12,
        "virtualMachineConfiguration": {"imageReference": {"virtualMachineImageId": flow["image"].id},
                                        "nodeAgentSKUId": "batch.node.debian 12"},
        "startTask": {"commandLine": f"/bin/sh -c '{IMAGE_CHECK}'", "waitForSuccess": True},
        "networkConfiguration": {"endpointConfiguration": {"inboundNATPools": [{
            "name": "web", "protocol": "tcp", "backendPort": 8080, "frontendPortRangeStart": (start := free_range()),
            "frontendPortRangeEnd": start + 99}]}}})
    _, nodes = pool_settled(batch, "spread")
    assert len(nodes) == 12 and all(n.start_task_info.exit_code == 0 for n in nodes)
    hosts = host_dirs(ray_server)
    assert len(hosts) == HOSTS
    assert all(machines_on(h) for h in hosts), "every Ray node runs some of the pool's machines"
    image_layers = None
    for host in hosts:
        pulls = (host / "pulls.log").read_text().split() if (host / "pulls.log").exists() else []
        assert len(pulls) == len(set(pulls)), f"{host.name} pulled a layer twice: {pulls}"
        stored = {p.name for p in (host / "layers" / "layers").iterdir()}
        assert set(pulls) <= stored
        image_layers = stored if image_layers is None else image_layers & stored
    assert image_layers, "the image's layers are on every host"

    # tasks read the image's files on every node, hence on every host
    batch.create_job({"id": "readers", "poolInfo": {"poolId": "spread"}})
    batch.create_task_collection("readers", {"value": [
        {"id": f"r{i}", "commandLine": f"/bin/sh -c '{IMAGE_CHECK} && cat /opt/tool/run | wc -c'"}
        for i in range(12)]})
    done = wait_for(lambda: (tasks := list(batch.list_tasks("readers"))) and
                    all(t.state == "completed" for t in tasks) and tasks, what="readers")
    assert all(t.execution_info.exit_code == 0 for t in done)
    assert len({t.node_info.node_id for t in done}) == 12
    sample = done[0]
    out = b"".join(batch.download_task_file("readers", sample.id, "stdout.txt")).decode()
    assert out.startswith("tool-v1 on-node\n")
    node_file = b"".join(batch.download_node_file("spread", sample.node_info.node_id, "startup/stdout.txt")).decode()
    assert "tool-v1 on-node" in node_file

    # resource and output files cross to the machine's host through its file service, in parts
    body = b"0123456789abcdef" * (384 * 1024)  # 6 MiB: more than one part of a remote write
    with serving(body) as url:
        outputs = f"{c.info['batch_endpoint']}/outputs/rayout"
        batch.create_task("readers", {
            "id": "io", "commandLine": "/bin/sh -c 'cp in/data.bin copy.bin'",
            "resourceFiles": [{"httpUrl": url, "filePath": "in/data.bin", "fileMode": "0640"}],
            "outputFiles": [{"filePattern": "copy.bin", "destination": {"container": {"containerUrl": outputs}},
                             "uploadOptions": {"uploadCondition": "tasksuccess"}}]})
        io = wait_for(lambda: (t := batch.get_task("readers", "io")).state == "completed" and t, what="io")
    assert io.execution_info.result == "success"
    assert b"".join(batch.download_task_file("readers", "io", "wd/in/data.bin")) == body
    from azure.core.rest import HttpRequest
    uploaded = batch.send_request(HttpRequest("GET", "/outputs/rayout/files/copy.bin",
                                              params={"api-version": "2025-06-01"}), stream=True)
    assert uploaded.read() == body


def stored_layers(host: Path) -> set[str]:
    return {p.name for p in (host / "layers" / "layers").iterdir()}


def pulls_of(host: Path) -> list[str]:
    return (host / "pulls.log").read_text().split() if (host / "pulls.log").exists() else []


def test_a_gallery_version_is_replicated_to_hosts_before_any_pool(ray_server, ray_clients):
    """Its layers are on regionalReplicaCount hosts when the version is made; its pool's
    nodes there then pull nothing."""
    c, batch = ray_clients.compute, ray_clients.batch
    run_script(c, RG, "builder", "echo gallery > /opt/tool/gallery-marker")
    builder = c.virtual_machines.get(RG, "builder")
    snap = c.snapshots.begin_create_or_update(RG, "gallery-os", {"location": ray_clients.location, "properties": {
        "creationData": {"createOption": "Copy",
                         "sourceResourceId": builder.storage_profile.os_disk.managed_disk.id}}}).result()
    hosts = host_dirs(ray_server)
    common_before = set.intersection(*(stored_layers(h) for h in hosts))
    c.galleries.begin_create_or_update(RG, "raygallery", {"location": ray_clients.location}).result()
    c.gallery_images.begin_create_or_update(RG, "raygallery", "tool", {"location": ray_clients.location, "properties": {
        "osType": "Linux", "osState": "Generalized",
        "identifier": {"publisher": "p", "offer": "o", "sku": "s"}}}).result()
    version = c.gallery_image_versions.begin_create_or_update(RG, "raygallery", "tool", "1.0.0", {
        "location": ray_clients.location, "properties": {
            "storageProfile": {"osDiskImage": {"source": {"id": snap.id}}},
            "publishingProfile": {"targetRegions": [{"name": ray_clients.location,
                                                     "regionalReplicaCount": HOSTS}]}}}).result()
    assert version.properties.provisioning_state == "Succeeded"
    new_everywhere = set.intersection(*(stored_layers(h) for h in hosts)) - common_before
    assert new_everywhere, "the version's new layer is on every host before any pool"
    pulls_before = {h.name: pulls_of(h) for h in hosts}
    batch.create_pool({"id": "from-replicas", "vmSize": "standard_a1_v2", "targetDedicatedNodes": HOSTS * 2,
                       "virtualMachineConfiguration": {"imageReference": {"virtualMachineImageId": version.id},
                                                       "nodeAgentSKUId": "batch.node.debian 12"},
                       "startTask": {"commandLine": "/bin/sh -c 'grep -q gallery /opt/tool/gallery-marker'",
                                     "waitForSuccess": True}})
    _, nodes = pool_settled(batch, "from-replicas")
    assert all(n.start_task_info.exit_code == 0 for n in nodes)
    assert all(machines_on(h) for h in hosts)
    assert {h.name: pulls_of(h) for h in hosts} == pulls_before, "nodes on replica hosts pulled nothing"
    batch.begin_delete_pool("from-replicas", polling_interval=0.2).result()


def test_machines_on_ray_hosts_are_held_to_their_size_and_networks(cluster, ray_server, ray_clients):
    """As on one host (test_node_isolation.py): the VM size's limits, a private address, the
    service only at the gateway; and a pool's nodes reach each other across hosts (the
    hosts' networks are joined by VXLAN tunnels over loopback), a VM of another network
    not at all, wherever it runs."""
    batch = ray_clients.batch
    task, out, _ = run(batch, "readers", "size", "nproc; grep MemTotal /proc/meminfo")
    nproc, memtotal = out.splitlines()
    assert nproc == "1" and memtotal.split()[1] == str(2 * 1024 * 1024)  # Standard_A1_v2: 1 vCPU, 2 GiB
    task, _, _ = run(batch, "readers", "hog", "head -c 3221225472 /dev/zero | tail > /dev/null", admin=True)
    assert task.execution_info.exit_code == 137 and task.execution_info.failure_info.code == "TaskOutOfMemory"

    where = {}  # address -> the host whose machine has it, from each host's records
    for host in host_dirs(ray_server):
        for record in (host / "machines").glob("*/network.json"):
            saved = json.loads(record.read_text())
            where[address_of(saved["subnet"], saved["host"])] = host.name
    nodes = {n.id: n.ip_address for n in batch.list_nodes("spread")}
    assert len(set(nodes.values())) == 12 and len({where[a] for a in nodes.values()}) == HOSTS
    assert len({ipaddress.ip_network(f"{a}/20", strict=False) for a in nodes.values()}) == 1
    worker = ray_clients.compute.virtual_machines.get(RG, "worker")
    worker_dir = next(h / "machines" / uuid.UUID(worker.vm_id).hex for h in host_dirs(ray_server)
                      if (h / "machines" / uuid.UUID(worker.vm_id).hex / "network.json").exists())
    saved = json.loads((worker_dir / "network.json").read_text())
    vm_address = address_of(saved["subnet"], saved["host"])

    ray_port = cluster.address.rsplit(":", 1)[1]
    command = ("cat > probe.py <<'EOF'\n" + PROBE + "EOF\npython3 probe.py "
               + " ".join(f"{a}:9" for a in nodes.values()) + f" {vm_address}:9 127.0.0.2:{ray_port}")
    task, out, _ = run(batch, "readers", "reach", command)
    seen = dict(line.split()[:2] for line in out.splitlines())
    prober = where[nodes[task.node_info.node_id]]
    assert {where[a] for a in nodes.values()} - {prober}, "some of the pool's nodes are on other hosts"
    assert all(seen[f"{a}:9"] == "refused" for a in nodes.values()), seen  # answered: reached
    assert seen[f"{vm_address}:9"] == "unreachable"
    assert seen[f"127.0.0.2:{ray_port}"] == "refused"  # its own loopback, not the host's Ray port

    task, out, _ = run(batch, "readers", "gateway", "python3 -c \"import os, ssl, urllib.request, urllib.error\n"
                       "try:\n"
                       "    urllib.request.urlopen(os.environ['AZ_BATCH_ACCOUNT_URL'] + '/pools?api-version=2025-06-01',"
                       " context=ssl._create_unverified_context())\n"
                       "except urllib.error.HTTPError as e:\n"
                       "    print(e.code)\"")
    assert out.strip() == "401"  # the service, through its host's gateway, wants a credential

    # inbound NAT: a node's frontend port listens on its own host's address, as its endpoint says
    batch.create_task("readers", {"id": "listen", "commandLine": "python3 -c \"import socket\n"
                                  "s = socket.socket(); s.bind(('0.0.0.0', 8080)); s.listen()\n"
                                  "c, _ = s.accept(); c.sendall(b'hello from ' + c.getsockname()[0].encode())\""})
    node_id = wait_for(lambda: (t := batch.get_task("readers", "listen")).node_info and t.node_info.node_id,
                       what="the listener's node")
    endpoint = batch.get_node("spread", node_id).endpoint_configuration.inbound_endpoints[0]
    assert endpoint.public_ip_address == "127.0.0.2"  # the Ray node's address

    def greeting():
        with socket.create_connection((endpoint.public_ip_address, endpoint.frontend_port), timeout=10) as conn:
            return conn.recv(100).decode()  # empty until the task listens: the relay closes at once
    assert wait_for(greeting, what="the node's port through inbound NAT") == f"hello from {nodes[node_id]}"


def test_a_lost_host_requeues_its_tasks_and_the_pool_is_made_whole(cluster, ray_server, ray_clients):
    batch = ray_clients.batch
    batch.create_job({"id": "long", "poolInfo": {"poolId": "spread"}})
    batch.create_task_collection("long", {"value": [
        {"id": f"l{i}", "commandLine": "/bin/sh -c 'sleep 4; echo done'"} for i in range(12)]})
    wait_for(lambda: sum(t.state == "running" for t in batch.list_tasks("long")) == 12, what="12 running tasks")
    placement = journal.read(ray_server.data_dir / "runtime" / "placement")
    vms = {vm.name: uuid.UUID(vm.vm_id).hex for vm in ray_clients.compute.virtual_machines.list(RG)}
    # a host that is not the head (it holds the cluster's state), one with a VM if there is one
    victim = max((n for n in cluster.list_all_nodes() if not n.head),
                 key=lambda n: sum(placement.get(key) == n.node_id for key in vms.values()))
    lost_vms = [name for name, key in vms.items() if placement.get(key) == victim.node_id]
    # the pool's machines on that host: each runs one task (one slot a node)
    nodes_on_victim = sum(1 for key, host in placement.items() if host == victim.node_id and key not in vms.values())
    assert lost_vms, (placement, vms, [(n.node_id, n.head) for n in cluster.list_all_nodes()])  # two VMs placed on the emptiest hosts: one is on a host that is not the head
    victim_dir = ray_server.hosts_dir / victim.node_id[:16]
    assert left_by(victim_dir)  # its machines' cgroups, its NAT table
    os.kill(victim.all_processes["raylet"][0].process.pid, signal.SIGKILL)
    # its machines stop with it (its Ray worker may live on), and leave nothing on the host
    wait_for(lambda: not left_by(victim_dir), timeout=30, what="the lost host's machines to stop")

    lost = wait_for(lambda: [n for n in batch.list_nodes("spread") if n.state == "unusable"], timeout=60,
                    what="nodes of the lost host to turn unusable")
    assert all(n.errors and n.errors[0].code == "NodeHostLost" for n in lost)
    tasks = wait_for(lambda: (ts := list(batch.list_tasks("long"))) and all(t.state == "completed" for t in ts)
                     and ts, timeout=90, what="every task to end")
    assert all(t.execution_info.exit_code == 0 for t in tasks)
    requeued = [t for t in tasks if (t.execution_info.requeue_count or 0) > 0]
    # only the tasks of the lost host went back to the queue (one slot a node); a task
    # requeued onto a node whose machine was on that host too goes back again, counted once
    assert requeued and len(requeued) <= nodes_on_victim
    for task in tasks:  # each ended exactly once, and its output is where it last ran
        out = b"".join(batch.download_task_file("long", task.id, "stdout.txt")).decode()
        assert out == "done\n"
    _, nodes = pool_settled(batch, "spread")
    assert len(nodes) == 12 and all(not n.errors for n in nodes)
    for node in lost:
        assert batch.get_node("spread", node.id).state == "idle"  # made again on a host that is there
    for name in lost_vms:  # a VM goes with its host
        view = ray_clients.compute.virtual_machines.instance_view(RG, name)
        assert "PowerState/stopped" in {s.code for s in view.statuses}

    # a host that joins (or comes back: Ray gives it a new node id) starts with no machine
    before = {h.name for h in host_dirs(ray_server)}
    cluster.add_node(node_ip_address="127.0.0.2", num_cpus=2)
    joined = wait_for(lambda: {h.name for h in host_dirs(ray_server)} - before, what="a new host's agent")
    assert not machines_on(ray_server.hosts_dir / joined.pop())
    _, nodes = pool_settled(batch, "spread")
    assert len(nodes) == 12


def test_a_restarted_service_finds_its_machines_on_their_hosts(ray_server, ray_clients):
    before = list(ray_clients.batch.list_nodes("spread"))
    info = ray_server.restart()
    batch = Clients(info).batch
    _, nodes = pool_settled(batch, "spread")
    assert len(nodes) == 12
    node = nodes[0]
    assert "tool-v1 on-node" in b"".join(batch.download_node_file("spread", node.id, "startup/stdout.txt")).decode()
    batch.create_job({"id": "after", "poolInfo": {"poolId": "spread"}})
    batch.create_task("after", {"id": "t", "commandLine": f"/bin/sh -c '{IMAGE_CHECK}'"})
    task = wait_for(lambda: (t := batch.get_task("after", "t")).state == "completed" and t, what="a task after restart")
    assert task.execution_info.exit_code == 0
    # the hosts' new agents joined their networks again: every node keeps its address and is reached
    assert {n.id: n.ip_address for n in nodes} == {n.id: n.ip_address for n in before}
    command = "cat > probe.py <<'EOF'\n" + PROBE + "EOF\npython3 probe.py " + " ".join(f"{n.ip_address}:9" for n in nodes)
    _, out, _ = run(batch, "after", "reach", command)
    assert out.split()[1::2] == ["refused"] * 12, out


def test_a_crash_keeps_the_exits_hosts_journaled_and_reconciles_their_machines(ray_server):
    """After a SIGKILL, as on one host: a task that ended while the service could not record
    it is recorded as it ended (its host's agent journaled the exit, and kept it when the
    host closed the idle agent while the service stalled), not run again; a machine a host holds that no record names
    is deleted there; a node whose machine its host lost is made again."""
    batch = Clients(ray_server.info).batch
    batch.create_job({"id": "crash", "poolInfo": {"poolId": "spread"}})
    batch.create_task("crash", {"id": "slow", "commandLine": "/bin/sh -c 'cd $AZ_BATCH_NODE_SHARED_DIR; touch began; "
                                "while [ ! -e go ]; do sleep 0.05; done; echo $AZ_BATCH_TASK_ID >> ran'"})
    node_id = wait_for(lambda: batch.get_task("crash", "slow").node_info, what="the task to be placed").node_id
    wait_for(lambda: "shared/began" in {f.name for f in batch.list_node_files("spread", node_id, recursive=True)},
             what="the task's command to begin")
    # The service stops taking exits, the command ends, its host's agent journals the exit,
    # and only then does the service die: the exit never reached the database.
    ray_server.proc.send_signal(signal.SIGSTOP)
    try:
        job_key, task_key, attempt, machine, keys, placement = _journaled_while_stopped(ray_server)
    finally:  # never left stopped: the module's other tests and its teardown need it gone or running
        ray_server.proc.kill()
        ray_server.proc.wait()
    machines_dir = ray_server.hosts_dir / placement[machine][:16] / "machines"
    wanted = json.dumps({"id": f"{job_key}|{task_key}|{attempt}", "exit": 0}).encode()
    # each host's daemon stops its machines when its agent dies with the service
    wait_for(lambda: not _live_daemons(ray_server.hosts_dir), timeout=60, what="the hosts' daemons to end")
    assert any(wanted in path.read_bytes() for path in (machines_dir / machine).glob("exits.*"))

    lost = next(node for node, key in keys.items() if key != machine)
    shutil.rmtree(ray_server.hosts_dir / placement[keys[lost]][:16] / "machines" / keys[lost])
    leftover = machines_dir / ("0" * 32 + "vm")
    (leftover / "upper").mkdir(parents=True)
    (leftover / "upper" / "bytes").write_bytes(b"x" * (1 << 20))

    batch = Clients(ray_server.start()).batch
    task = batch.get_task("crash", "slow")
    assert (task.state, task.execution_info.exit_code, task.execution_info.requeue_count) == ("completed", 0, 0)
    assert not leftover.exists()
    replaced = wait_for(lambda: (n := batch.get_node("spread", lost)).state == "idle" and n, timeout=90,
                        what="the lost node to be made again")
    assert replaced.errors in (None, [])
    _, nodes = pool_settled(batch, "spread")
    assert {n.id for n in nodes} == set(keys)
    ran = b"".join(batch.download_node_file("spread", node_id, "shared/ran"))
    assert ran == b"slow\n"  # once
    held = set().union(*(machines_on(host) for host in host_dirs(ray_server)))
    assert set(keys.values()) <= held and "0" * 32 + "vm" not in held


def _journaled_while_stopped(ray_server):
    """With the service stopped: the running task's command let end, and its exit found in its
    host's journal. The task's keys, attempt and machine, the nodes' machines, the placement."""
    with sqlite3.connect(ray_server.data_dir / "batchyard.db") as db:
        (job_key, task_key, attempt, machine), = db.execute(
            "SELECT job_key, task_key, json_extract(internal, '$.attempt'), json_extract(internal, '$.node.machine_key') "
            "FROM batch_tasks WHERE json_extract(body, '$.id') = 'slow' AND state = 'running'")
        keys = dict(db.execute("SELECT node_id, json_extract(internal, '$.machine_key') FROM batch_nodes"))
    placement = journal.read(ray_server.data_dir / "runtime" / "placement")
    machine_dir = ray_server.hosts_dir / placement[machine][:16] / "machines" / machine
    (machine_dir / "resource" / "batch" / "tasks" / "shared" / "go").touch()
    wanted = json.dumps({"id": f"{job_key}|{task_key}|{attempt}", "exit": 0}).encode()
    wait_for(lambda: any(wanted in path.read_bytes() for path in machine_dir.glob("exits.*")),
             interval=0.01, what="the exit in its host's journal")
    # The host closes the machine's agent once it has idled (commands.IDLE_SECONDS), with the
    # service still stopped: the close keeps the journal, the exit still unrecorded.
    wait_for(lambda: not agents_of(machine), timeout=30, what="the host to close the idle agent")
    assert any(wanted in path.read_bytes() for path in machine_dir.glob("exits.*"))
    return job_key, task_key, attempt, machine, keys, placement


def _live_daemons(hosts_dir: Path) -> list[Path]:
    """Host directories whose daemon still holds its lock."""
    live = []
    for lock in hosts_dir.glob("*/daemon.lock"):
        try:
            fd = os.open(lock, os.O_RDWR)
        except FileNotFoundError:
            continue  # a dead daemon's, taken back meanwhile
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            live.append(lock.parent)
        finally:
            os.close(fd)
    return live
