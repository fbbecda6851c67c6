"""Nodes that cannot reach what they should not, through the real azure-batch client: the
attacks of issue 13, tried by ordinary tasks, and seen to fail. Each node runs under its VM
size's limits (cgroups), with a container runtime's capabilities and seccomp filter."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from conftest import (Clients, Server, base_image_reference, free_port, pool_settled, run_script, vm_body,
                      wait_for)
from azure.core.exceptions import HttpResponseError
from test_batch_pools import base_pool, error_values

POOL = "isolated"  # Standard_A1_v2: 1 vCPU, 2 GiB
ADMIN = {"autoUser": {"scope": "task", "elevationLevel": "admin"}}


@pytest.fixture(scope="module")
def pool(clients):
    clients.batch_key.create_pool(base_pool(clients, POOL, dedicated=1))
    pool_settled(clients.batch_key, POOL)
    return POOL


def run(batch, job: str, task_id: str, command: str, admin: bool = False, **extra):
    """Runs one task to completion; returns (task, stdout, stderr)."""
    body = {"id": task_id, "commandLine": command, **extra}
    if admin:
        body["userIdentity"] = ADMIN
    batch.create_task(job, body)
    task = wait_for(lambda: (t := batch.get_task(job, task_id)).state == "completed" and t, timeout=120,
                    what=f"task {task_id}")
    out, err = (b"".join(batch.download_task_file(job, task_id, name)).decode() for name in ("stdout.txt", "stderr.txt"))
    return task, out, err


@pytest.fixture(scope="module")
def job(clients, pool):
    clients.batch_key.create_job({"id": "attacks", "poolInfo": {"poolId": pool}})
    return "attacks"


def test_node_tells_its_size(clients, job):
    task, out, _ = run(clients.batch_key, job, "size", "nproc; grep MemTotal /proc/meminfo; "
                                                       "grep -c ^processor /proc/cpuinfo >/dev/null; echo ok")
    nproc, memtotal, ok = out.splitlines()
    assert ok == "ok"
    assert nproc == "1"
    assert memtotal.split()[1] == str(2 * 1024 * 1024)  # kB: Standard_A1_v2 has 2 GiB


def test_meminfo_follows_usage(clients, job):
    # a task holding 512 MiB (tail keeps its input until the end) sees MemFree fall by that much
    task, out, _ = run(clients.batch_key, job, "usage",
                       "grep MemFree /proc/meminfo; (head -c 536870912 /dev/zero; sleep 60) | tail > /dev/null & "
                       "while [ $(awk '/MemFree/ {print $2}' /proc/meminfo) -gt 1572864 ]; do sleep 0.2; done; "
                       "grep MemFree /proc/meminfo; trap '' TERM; kill 0")
    before, after = (int(line.split()[1]) for line in out.splitlines())
    assert task.execution_info.exit_code == 0
    assert before > 1900000 and after <= 1572864


def test_memory_hog_is_killed_by_the_node_limit(clients, job):
    batch = clients.batch_key
    # `tail` keeps a line until its end: 3 GiB without a newline is 3 GiB held
    task, _, _ = run(batch, job, "hog", "head -c 3221225472 /dev/zero | tail > /dev/null", admin=True)
    info = task.execution_info
    assert info.result == "failure" and info.exit_code == 137
    assert info.failure_info.category == "usererror" and info.failure_info.code == "TaskOutOfMemory"
    assert "out of memory" in info.failure_info.message
    assert {d.name: d.value for d in info.failure_info.details}["MemoryLimitMiB"] == "2048"
    assert batch.get_pool(POOL).id == POOL  # the service still answers
    task, out, _ = run(batch, job, "after-hog", "echo fine")  # and the node still works
    assert task.execution_info.exit_code == 0 and out == "fine\n"


def test_fork_bomb_is_contained(clients, job):
    batch = clients.batch_key
    # bash lives on when a fork fails (dash would exit), until the wall clock ends the whole group
    task, _, err = run(batch, job, "bomb", "bash -c 'bomb() { bomb | bomb & }; bomb; while :; do sleep 1; done'",
                       constraints={"maxWallClockTime": "PT8S"})
    assert task.execution_info.failure_info.code == "MaxWallClockTimeExpiry"
    assert "fork" in err.lower() or "resource temporarily unavailable" in err.lower()
    assert batch.get_pool(POOL).id == POOL
    task, out, _ = run(batch, job, "after-bomb", "echo recovered")
    assert task.execution_info.exit_code == 0 and out == "recovered\n"


KEYCTL = "import ctypes, os; libc = ctypes.CDLL(None, use_errno=True); " \
         "r = libc.syscall(250, 0, -3, 0); print(r, os.strerror(ctypes.get_errno()))"  # keyctl(GET_KEYRING_ID)
PACKET = "import socket; socket.socket(socket.AF_PACKET, socket.SOCK_RAW)"


@pytest.mark.parametrize("name, command, refusal", [
    ("packet", f"python3 -c '{PACKET}'", "Operation not permitted"),
    ("fifo", "chrt -f 10 true", "Operation not permitted"),
    ("userns", "unshare -U true", "Operation not permitted"),
    ("keyring", f"python3 -c '{KEYCTL}' && exit 1", "-1 Operation not permitted"),
    ("mount", "mount -t tmpfs none /tmp", "ermission denied"),
    ("nice", "renice -n -5 -p $$", "Permission denied"),
])
def test_admin_task_cannot_reach_the_kernel(clients, job, name, command, refusal):
    task, out, err = run(clients.batch_key, job, f"admin-{name}", command, admin=True)
    assert task.execution_info.exit_code != 0, out + err
    assert refusal in out + err


def test_admin_task_keeps_what_a_container_keeps(clients, job):
    # root in a node still owns its files, changes users and binds low ports (in its own network)
    task, out, err = run(clients.batch_key, job, "admin-allowed",
                         "touch f && chown 10001:10001 f && stat -c %u f && setpriv --reuid 10001 id -u && "
                         "grep CapBnd /proc/self/status", admin=True)
    assert task.execution_info.exit_code == 0, err
    owner, uid, bounding = out.splitlines()
    assert owner == "10001" and uid == "10001"
    assert int(bounding.split()[1], 16) == sum(1 << c for c in (0, 1, 3, 4, 5, 6, 7, 8, 10, 18, 29, 31))


# every target at once: one that drops what it is sent costs its timeout, not the sum of them all
PROBE = ("import concurrent.futures, socket, sys\n"
         "def reach(target):\n"
         "    host, port = target.rsplit(':', 1)\n"
         "    with socket.socket() as s:\n"
         "        s.settimeout(5)\n"
         "        try:\n"
         "            s.connect((host, int(port))); return 'open'\n"
         "        except ConnectionRefusedError:\n"
         "            return 'refused'\n"
         "        except OSError as e:\n"
         "            return f'unreachable {e}'\n"
         "with concurrent.futures.ThreadPoolExecutor(len(sys.argv)) as pool:\n"
         "    for target, seen in zip(sys.argv[1:], pool.map(reach, sys.argv[1:])):\n"
         "        print(target, seen)\n")


def probe(batch, job: str, task_id: str, *targets: str) -> dict[str, str]:
    """From a node: 'open', 'refused' (the address answered) or 'unreachable', per host:port."""
    command = "cat > probe.py <<'EOF'\n" + PROBE + "EOF\npython3 probe.py " + " ".join(targets)
    _, out, err = run(batch, job, task_id, command)
    return {line.split()[0]: line.split()[1] for line in out.splitlines()} if out else {"error": err}


@pytest.fixture(scope="module")
def neighbours(clients, pool):
    clients.batch_key.create_pool(base_pool(clients, "neighbours", dedicated=2))
    _, nodes = pool_settled(clients.batch_key, "neighbours")
    clients.batch_key.create_job({"id": "neighbours", "poolInfo": {"poolId": "neighbours"}})
    return [n.ip_address for n in nodes]


def test_nodes_have_private_addresses(clients, pool, neighbours):
    other = [n.ip_address for n in clients.batch_key.list_nodes(pool)]
    for address in neighbours + other:
        assert ipaddress.ip_address(address) in ipaddress.ip_network("10.0.0.0/8")
    assert len(set(neighbours + other)) == 3
    # both neighbours in one subnet, the other pool's node in another
    assert ipaddress.ip_network(f"{neighbours[0]}/20", strict=False) == \
        ipaddress.ip_network(f"{neighbours[1]}/20", strict=False)
    assert ipaddress.ip_address(other[0]) not in ipaddress.ip_network(f"{neighbours[0]}/20", strict=False)


def test_nodes_of_a_pool_reach_each_other_and_no_other_pool(clients, pool, neighbours):
    batch = clients.batch_key
    other = next(iter(batch.list_nodes(pool))).ip_address
    seen = probe(batch, "neighbours", "reach", *(f"{a}:9" for a in neighbours), f"{other}:9")
    assert seen == {f"{neighbours[0]}:9": "refused", f"{neighbours[1]}:9": "refused", f"{other}:9": "unreachable"}


def test_service_only_at_the_gateway(clients, server, job):
    batch = clients.batch_key
    port = server.port
    task, out, err = run(batch, job, "gateway", "python3 -c \"import os, ssl, urllib.request, urllib.error\n"
                         "url = os.environ['AZ_BATCH_ACCOUNT_URL'] + '/pools?api-version=2025-06-01'\n"
                         "print(url)\n"
                         "try:\n"
                         "    urllib.request.urlopen(url, context=ssl._create_unverified_context())\n"
                         "except urllib.error.HTTPError as e:\n"
                         "    print(e.code)\"")
    url, status = out.split()
    assert url.startswith(f"https://100.64.0.1:{port}/batch/")
    assert status == "401"  # the service answered, and wants a credential
    gateway = "100.64.0.1"
    seen = probe(batch, job, "loopback", f"127.0.0.1:{port}", f"{gateway}:{port + 1}", f"{gateway}:22")
    assert seen == {f"127.0.0.1:{port}": "refused", f"{gateway}:{port + 1}": "refused", f"{gateway}:22": "refused"}


def test_admin_binds_ports_of_its_own_network_only(clients, server, job):
    # the service holds this port on the host: a node binding it proves it binds its own
    task, out, err = run(clients.batch_key, job, "bind", "python3 -c \"import socket\n"
                         f"s = socket.socket(); s.bind(('0.0.0.0', {server.port})); s.listen(); print('bound')\n"
                         "t = socket.socket(); t.bind(('0.0.0.0', 80)); print('bound 80')\"", admin=True)
    assert task.execution_info.exit_code == 0, err
    assert out.split("\n")[:2] == ["bound", "bound 80"]


def test_networks_survive_a_restart_and_go_with_their_nodes(tmp_path_factory):
    with Server(tmp_path_factory.mktemp("netrestart") / "data") as server:
        batch = Clients(server.info).batch_key
        batch.create_pool(base_pool(Clients(server.info), "again", dedicated=2))
        _, nodes = pool_settled(batch, "again")
        before = {n.id: n.ip_address for n in nodes}
        batch = Clients(server.restart()).batch_key
        _, nodes = pool_settled(batch, "again")
        assert {n.id: n.ip_address for n in nodes} == before
        batch.create_job({"id": "after", "poolInfo": {"poolId": "again"}})
        addresses = sorted(before.values())
        seen = probe(batch, "after", "reach", *(f"{a}:9" for a in addresses))
        assert seen == {f"{a}:9": "refused" for a in addresses}
        batch.begin_delete_pool("again", polling_interval=0.1).result()
        namespaces = server.data_dir / "runtime" / "ns"
        assert sorted(p.name for p in namespaces.glob("*.net")) == ["hub.net"]


# the address a machine's packets leave from (no packet is sent: a UDP connect only routes)
OWN_ADDRESS = "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); " \
              "s.connect(('10.255.255.255', 9)); print(s.getsockname()[0])"


def test_vms_share_a_network_per_resource_group(clients):
    compute, location = clients.compute, clients.location
    image = base_image_reference(compute, location)
    addresses = {}
    for group, vm in (("neta", "a1"), ("neta", "a2"), ("netb", "b1")):
        clients.resource.resource_groups.create_or_update(group, {"location": location})
        compute.virtual_machines.begin_create_or_update(group, vm, vm_body(location, image)).result()
        addresses[vm] = run_script(compute, group, vm, f"python3 -c \"{OWN_ADDRESS}\"").strip()
    network = {vm: ipaddress.ip_interface(f"{address}/20").network for vm, address in addresses.items()}
    assert network["a1"] == network["a2"] != network["b1"]
    targets = " ".join(f"{addresses[vm]}:9" for vm in ("a2", "b1"))
    out = run_script(compute, "neta", "a1", "cat > /tmp/probe.py <<'EOF'", *PROBE.splitlines(), "EOF",
                     f"python3 /tmp/probe.py {targets}")
    seen = {line.split()[0]: line.split()[1] for line in out.splitlines()}
    assert list(seen.values()) == ["refused", "unreachable"]


def free_range(size: int = 100) -> int:
    """A frontend port range start whose first ports are free here (Batch reserves 50000-55000)."""
    while True:
        start = free_port()
        if start + size < 50000 or 55000 < start <= 65534 - size:
            return start


def behind_inbound_nat(clients, pool_id: str, name: str, protocol: str, backend_port: int):
    """A one-node pool with one inbound NAT pool, and a job of the same id on it;
    returns (batch, node, the node's endpoint)."""
    batch = clients.batch_key
    start = free_range()
    batch.create_pool(base_pool(clients, pool_id, dedicated=1, networkConfiguration={"endpointConfiguration": {
        "inboundNATPools": [{"name": name, "protocol": protocol, "backendPort": backend_port,
                             "frontendPortRangeStart": start, "frontendPortRangeEnd": start + 99}]}}))
    _, nodes = pool_settled(batch, pool_id)
    batch.create_job({"id": pool_id, "poolInfo": {"poolId": pool_id}})
    return batch, nodes[0], nodes[0].endpoint_configuration.inbound_endpoints[0]


def test_inbound_nat_reaches_the_node_port(clients):
    batch, node, endpoint = behind_inbound_nat(clients, "served", "web", "tcp", 8080)
    batch.create_task("served", {"id": "listen", "commandLine": "python3 -c \"import socket\n"
                                 "s = socket.socket(); s.bind(('0.0.0.0', 8080)); s.listen()\n"
                                 "c, _ = s.accept(); c.sendall(b'hello from ' + c.getsockname()[0].encode())\""})

    def greeting():
        with socket.create_connection((endpoint.public_ip_address, endpoint.frontend_port), timeout=10) as conn:
            return conn.recv(100).decode()  # empty until the task listens: the relay closes at once
    assert wait_for(greeting, what="the node's port through inbound NAT") == f"hello from {node.ip_address}"
    task = wait_for(lambda: (t := batch.get_task("served", "listen")).state == "completed" and t, what="the task")
    assert task.execution_info.exit_code == 0


def test_inbound_nat_forwards_udp_datagrams(clients):
    batch, _, endpoint = behind_inbound_nat(clients, "datagrams", "echo", "udp", 9000)
    assert endpoint.protocol == "udp"
    batch.create_task("datagrams", {"id": "echo", "commandLine": "python3 -c \"import socket\n"
                                    "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('0.0.0.0', 9000))\n"
                                    "data, peer = s.recvfrom(100); s.sendto(b'echo ' + data, peer)\""})

    def echo():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(1)
            sock.sendto(b"ping", (endpoint.public_ip_address, endpoint.frontend_port))
            try:
                return sock.recvfrom(100)  # nothing until the task listens: the datagram is lost
            except OSError:
                return None
    data, source = wait_for(echo, what="an answer through UDP inbound NAT")
    assert data == b"echo ping" and source == (endpoint.public_ip_address, endpoint.frontend_port)
    task = wait_for(lambda: (t := batch.get_task("datagrams", "echo")).state == "completed" and t, what="the task")
    assert task.execution_info.exit_code == 0


def test_inbound_nat_applies_security_rules(clients):
    """The test connects from 127.0.0.1: one NAT pool allows it, one denies it before a
    rule that would allow everyone (priority order), one allows only others (no rule
    matches: denied)."""
    batch = clients.batch_key
    start = free_range(300)
    nat = [
        {"name": "allowed", "backendPort": 8080, "networkSecurityGroupRules": [
            {"priority": 150, "access": "allow", "sourceAddressPrefix": "127.0.0.0/8", "sourcePortRanges": ["*"]}]},
        {"name": "denied", "backendPort": 8081, "networkSecurityGroupRules": [
            {"priority": 300, "access": "allow", "sourceAddressPrefix": "*"},
            {"priority": 200, "access": "deny", "sourceAddressPrefix": "127.0.0.1", "sourcePortRanges": ["0-65535"]}]},
        {"name": "others", "backendPort": 8082, "networkSecurityGroupRules": [
            {"priority": 150, "access": "allow", "sourceAddressPrefix": "192.0.2.0/24"}]},
    ]
    for i, pool in enumerate(nat):
        pool.update(protocol="tcp", frontendPortRangeStart=start + 100 * i, frontendPortRangeEnd=start + 100 * i + 99)
    batch.create_pool(base_pool(clients, "guarded", dedicated=1, networkConfiguration={"endpointConfiguration": {
        "inboundNATPools": nat}}))
    _, nodes = pool_settled(batch, "guarded")
    rules = batch.get_pool("guarded").network_configuration.endpoint_configuration.inbound_nat_pools[1]
    assert [(r.priority, r.access) for r in rules.network_security_group_rules] == [(300, "allow"), (200, "deny")]
    frontends = {e.name.split(".")[0]: e.frontend_port for e in nodes[0].endpoint_configuration.inbound_endpoints}
    batch.create_job({"id": "guarded", "poolInfo": {"poolId": "guarded"}})
    batch.create_task("guarded", {"id": "listen", "commandLine": "python3 -c \"import socket\n"
                                  "ls = [socket.create_server(('0.0.0.0', p)) for p in (8080, 8081, 8082)]\n"
                                  "c, _ = ls[0].accept(); c.sendall(b'hello'); c.close()\n"
                                  "for s in ls[1:]:\n"
                                  "    s.settimeout(5)\n"
                                  "    try:\n"
                                  "        s.accept(); print('reached')\n"
                                  "    except OSError:\n"
                                  "        print('untouched')\""})

    def answer(name: str) -> bytes:
        with socket.create_connection(("127.0.0.1", frontends[name]), timeout=10) as conn:
            return conn.recv(100)  # empty when the relay closes at once
    assert wait_for(lambda: answer("allowed"), what="the allowed NAT pool") == b"hello"
    # the task listens on every port by now: the others are refused by their rules alone
    assert answer("denied") == b"" and answer("others") == b""
    wait_for(lambda: (t := batch.get_task("guarded", "listen")).state == "completed" and t, what="the task")
    out = b"".join(batch.download_task_file("guarded", "listen", "stdout.txt")).decode()
    assert out.split() == ["untouched", "untouched"]


@pytest.mark.parametrize("rule, prop", [
    ({"priority": 100, "access": "allow", "sourceAddressPrefix": "*"}, "priority"),
    ({"priority": 150, "access": "maybe", "sourceAddressPrefix": "*"}, "access"),
    ({"priority": 150, "access": "allow", "sourceAddressPrefix": "Internet"}, "sourceAddressPrefix"),
    ({"priority": 150, "access": "allow", "sourceAddressPrefix": "*", "sourcePortRanges": ["1-10", "5"]},
     "sourcePortRanges[1]"),
])
def test_bad_security_rules_are_refused(clients, rule, prop):
    start = free_range()
    body = base_pool(clients, "badrules", dedicated=0, networkConfiguration={"endpointConfiguration": {
        "inboundNATPools": [{"name": "web", "protocol": "tcp", "backendPort": 80, "frontendPortRangeStart": start,
                             "frontendPortRangeEnd": start + 99, "networkSecurityGroupRules": [rule]}]}})
    with pytest.raises(HttpResponseError) as excinfo:
        clients.batch_key.create_pool(body)
    assert excinfo.value.status_code == 400
    assert error_values(excinfo)["PropertyName"] == \
        f"networkConfiguration.endpointConfiguration.inboundNATPools[0].networkSecurityGroupRules[0].{prop}"


VNET = "/subscriptions/{}/resourceGroups/netrg/providers/Microsoft.Network/virtualNetworks/shared"


def test_pools_on_subnets_of_one_virtual_network_reach_each_other(clients):
    batch = clients.batch_key
    vnet = VNET.format(clients.subscription)
    addresses = {}
    for pool, subnet in (("subnet-a", f"{vnet}/subnets/a"), ("subnet-b", f"{vnet}/subnets/b"), ("no-subnet", None)):
        extra = {"networkConfiguration": {"subnetId": subnet}} if subnet else {}
        batch.create_pool(base_pool(clients, pool, dedicated=1, **extra))
        _, nodes = pool_settled(batch, pool)
        addresses[pool] = nodes[0].ip_address
    assert batch.get_pool("subnet-b").network_configuration.subnet_id == f"{vnet}/subnets/b"
    batch.create_job({"id": "subnets", "poolInfo": {"poolId": "subnet-a"}})
    seen = probe(batch, "subnets", "reach", f"{addresses['subnet-b']}:9", f"{addresses['no-subnet']}:9")
    assert seen == {f"{addresses['subnet-b']}:9": "refused", f"{addresses['no-subnet']}:9": "unreachable"}


@pytest.mark.parametrize("subnet", [
    "/subscriptions/x/resourceGroups/rg/providers/Microsoft.Network/virtualNetworks/v",  # no subnet
    "/subscriptions/x/resourceGroups/rg/providers/Microsoft.Compute/virtualNetworks/v/subnets/s",
    "default",
])
def test_malformed_subnet_ids_are_refused(clients, subnet):
    with pytest.raises(HttpResponseError) as excinfo:
        clients.batch_key.create_pool(base_pool(clients, "badsubnet", dedicated=0,
                                                networkConfiguration={"subnetId": subnet}))
    assert excinfo.value.status_code == 400
    assert error_values(excinfo)["PropertyName"] == "networkConfiguration.subnetId"
    assert excinfo.value.error.code == "InvalidPropertyValue"


def test_vm_on_a_subnet_shares_its_virtual_network_with_pools(clients):
    compute, location, batch = clients.compute, clients.location, clients.batch_key
    vnet = VNET.format(clients.subscription).replace("/shared", "/mixed")
    batch.create_pool(base_pool(clients, "vnet-nodes", dedicated=1,
                                networkConfiguration={"subnetId": f"{vnet}/subnets/batch"}))
    _, nodes = pool_settled(batch, "vnet-nodes")
    clients.resource.resource_groups.create_or_update("netvm", {"location": location})
    body = vm_body(location, base_image_reference(compute, location))
    body["properties"]["networkProfile"] = {"networkApiVersion": "2020-11-01", "networkInterfaceConfigurations": [
        {"name": "nic", "properties": {"primary": True, "ipConfigurations": [
            {"name": "ip", "properties": {"subnet": {"id": f"{vnet}/subnets/vms"}}}]}}]}
    compute.virtual_machines.begin_create_or_update("netvm", "on-vnet", body).result()
    compute.virtual_machines.begin_create_or_update("netvm", "off-vnet", vm_body(
        location, base_image_reference(compute, location))).result()
    for vm, reached in (("on-vnet", "refused"), ("off-vnet", "unreachable")):
        out = run_script(compute, "netvm", vm, "cat > /tmp/probe.py <<'EOF'", *PROBE.splitlines(), "EOF",
                         f"python3 /tmp/probe.py {nodes[0].ip_address}:9")
        assert out.split()[1] == reached, (vm, out)


def test_vm_subnet_ids_are_checked(clients):
    compute, location = clients.compute, clients.location
    clients.resource.resource_groups.create_or_update("netvm", {"location": location})
    body = vm_body(location, base_image_reference(compute, location))
    body["properties"]["networkProfile"] = {"networkInterfaceConfigurations": [
        {"name": "nic", "properties": {"ipConfigurations": [
            {"name": "ip", "properties": {"subnet": {"id": "default"}}}]}}]}
    with pytest.raises(HttpResponseError) as excinfo:
        compute.virtual_machines.begin_create_or_update("netvm", "bad-subnet", body).result()
    assert excinfo.value.status_code == 400
    assert excinfo.value.error.target == "properties.networkProfile.networkInterfaceConfigurations[0]" \
                                         ".properties.ipConfigurations[0].properties.subnet.id"
