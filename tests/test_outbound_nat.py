"""Outbound NAT, through the real azure-batch client: a task on a node fetches a page from
an "outside" host and that host sees the service host's address, not the node's; with NAT
off the same fetch fails; either way a node reaches nothing of the host itself, nor, with
other services beside its own, their uplinks or their machines.

The outside host is a network namespace of this test's own, joined to the host's namespace
by a veth (a /24 of 198.18.0.0/15, RFC 2544's benchmark range, routed nowhere): every
packet stays on this machine and the host's own routes are left alone. Its names and its
/24 are this test run's own (from its pid), so runs side by side on one host (as the
project's helpers run them) do not take each other's away."""

from __future__ import annotations

import concurrent.futures
import ipaddress
import os
import secrets
import socket
import subprocess
import sys
import textwrap

import pytest
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from pyroute2 import IPRoute, NetNS, netns

from conftest import Clients, Server, pool_settled, wait_for
from test_batch_pools import base_pool
from test_node_isolation import probe, run

OUTSIDE_PREFIX = "batchyard-test-outside-"
OUTSIDE_NS = f"{OUTSIDE_PREFIX}{os.getpid()}"
HOST_SIDE, OUTSIDE_SIDE = f"byth{os.getpid():x}", "bytest-out"  # within 15 characters
_OUTSIDE_NET = ipaddress.ip_network("198.18.0.0/15")[(os.getpid() % 512) * 256]
HOST_ADDRESS, OUTSIDE_ADDRESS = str(_OUTSIDE_NET + 1), str(_OUTSIDE_NET + 2)
OUTSIDE_PORT = 8080

# an HTTP server in the outside namespace that answers with the address it saw the request from
SERVE = textwrap.dedent(f"""
    import http.server, sys
    from pyroute2 import netns
    netns.setns({OUTSIDE_NS!r})
    class Echo(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = self.client_address[0].encode()
            self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
            self.wfile.write(body)
    server = http.server.HTTPServer(({OUTSIDE_ADDRESS!r}, {OUTSIDE_PORT}), Echo)
    print("ready", flush=True)
    server.serve_forever()
""")

FETCH = ("python3 -c \"import urllib.request\n"
         "try:\n"
         f"    print(urllib.request.urlopen('http://{OUTSIDE_ADDRESS}:{OUTSIDE_PORT}/', timeout=5).read().decode())\n"
         "except OSError as e:\n"
         "    print('failed', e)\"")


def _remove_outside() -> None:
    """This run's outside, and those of runs that were killed (their pid is gone)."""
    for name in netns.listnetns():
        pid = name.removeprefix(OUTSIDE_PREFIX)
        if name.startswith(OUTSIDE_PREFIX) and pid.isdigit() and (int(pid) == os.getpid() or not _alive(int(pid))):
            netns.remove(name)  # its end of the veth goes with it, and the host's end with that
    with IPRoute() as ipr:
        if ipr.link_lookup(ifname=HOST_SIDE):
            ipr.link("del", ifname=HOST_SIDE)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="module")
def outside():
    """The outside host and its HTTP server; removed whatever the tests did."""
    _remove_outside()  # a run that was killed may have left it
    server = None
    try:
        netns.create(OUTSIDE_NS)
        with IPRoute() as ipr:
            ipr.link("add", ifname=HOST_SIDE, kind="veth", peer=OUTSIDE_SIDE)
            ipr.link("set", index=ipr.link_lookup(ifname=OUTSIDE_SIDE)[0], net_ns_fd=OUTSIDE_NS)
            index = ipr.link_lookup(ifname=HOST_SIDE)[0]
            ipr.addr("add", index=index, address=HOST_ADDRESS, prefixlen=24)
            ipr.link("set", index=index, state="up")
        with NetNS(OUTSIDE_NS) as ns:
            index = ns.link_lookup(ifname=OUTSIDE_SIDE)[0]
            ns.addr("add", index=index, address=OUTSIDE_ADDRESS, prefixlen=24)
            ns.link("set", index=index, state="up")
            ns.link("set", index=ns.link_lookup(ifname="lo")[0], state="up")
        server = subprocess.Popen([sys.executable, "-c", SERVE], stdout=subprocess.PIPE, text=True)
        assert server.stdout.readline().strip() == "ready"
        yield
    finally:
        if server is not None:
            server.kill()
            server.wait()
        _remove_outside()


@pytest.fixture
def host_listener():
    """A port open on every address of the host: a node that could reach the host would connect."""
    sock = socket.socket()
    sock.bind(("0.0.0.0", 0))
    sock.listen()
    yield sock.getsockname()[1]
    sock.close()


def _node(server: Server):
    """A one-node pool with a job on it; the batch client."""
    batch = _pool(server, "outbound")
    pool_settled(batch, "outbound")
    return batch


def _fetch(batch, task_id: str) -> str:
    task, out, err = run(batch, "outbound", task_id, FETCH)
    assert task.execution_info.exit_code == 0, err
    return out.strip()


def test_node_reaches_outside_through_nat_and_nothing_of_the_host(outside, host_listener, tmp_path_factory):
    data = tmp_path_factory.mktemp("nat-on") / "data"
    with Server(data, extra_env={"BATCHYARD_OUTBOUND_NAT": "on"}) as server:
        batch = _node(server)
        assert _fetch(batch, "fetch") == HOST_ADDRESS  # the outside saw the host, not the node's 10.x address
        port = server.port
        own = [a for a in _host_addresses() if not a.startswith("127.")]  # the uplink's end and HOST_ADDRESS too
        assert HOST_ADDRESS in own and _uplink(server)[0] in own and len(own) >= 3
        targets = [f"{a}:{p}" for a in own for p in (host_listener, port)]
        seen = probe(batch, "outbound", "host", *targets, f"127.0.0.1:{host_listener}", f"100.64.0.1:{port}",
                     f"{OUTSIDE_ADDRESS}:{OUTSIDE_PORT}")
        # an address another service or test run gave back meanwhile is no longer the host's
        # (the host routes it outside); the other tests cover those of services
        held = set(_host_addresses())
        targets = [t for t in targets if t.rsplit(":", 1)[0] in held]
        seen = {t: v for t, v in seen.items() if t in targets or t.rsplit(":", 1)[0] not in own}
        assert seen == {**{t: "unreachable" for t in targets},
                        f"127.0.0.1:{host_listener}": "refused",  # the node's own loopback
                        f"100.64.0.1:{port}": "open",  # the gateway, as AZ_BATCH_ACCOUNT_URL says
                        f"{OUTSIDE_ADDRESS}:{OUTSIDE_PORT}": "open"}
        table = f"batchyard_{_tag(server)}"
        # a crash leaves the host's table (its rules still hold); the next start makes it again
        server.proc.kill()
        server.proc.wait()
        assert table in _host_table_names()
        batch = Clients(server.start()).batch_key
        pool_settled(batch, "outbound")
        assert _host_table_names().count(table) == 1
        assert _fetch(batch, "after-crash") == HOST_ADDRESS
    # a clean stop takes the table and the uplink away
    assert table not in _host_table_names()
    with IPRoute() as ipr:
        assert not ipr.link_lookup(ifname=f"byup{_tag(server)}")


# on a node of the other service: hands a token to whoever connects, until the test ends the task
LISTEN = textwrap.dedent("""
    import socket, sys, time
    server = socket.create_server(("0.0.0.0", int(sys.argv[1])))
    server.settimeout(1)
    print("listening", flush=True)
    deadline = time.monotonic() + 300  # only if the test could not end it
    while time.monotonic() < deadline:
        try:
            conn, _ = server.accept()
        except OSError:
            continue
        conn.sendall(sys.argv[2].encode())
        conn.close()
""")
# what a connection to address:port hands over, or why there was none
READ = textwrap.dedent("""
    import socket, sys
    try:
        with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5) as s:
            print("read", s.recv(64).decode() or "nothing")
    except OSError as e:
        print("failed", e)
""")
TOKEN_PORT = 7777


def _script(name: str, text: str, *args) -> str:
    return f"cat > {name} <<'EOF'\n{text}EOF\npython3 {name} " + " ".join(str(a) for a in args)


def test_a_node_reaches_nothing_of_another_service(host_listener, tmp_path_factory):
    """Services side by side on one host, as the suite's session and module servers are:
    a node of one reaches neither end of another's uplink (the host's and its hub's), nor
    the addresses a stopped service gave back (no longer the host's: the host would route
    them out of its default route, where something may answer), nor the other's nodes."""
    nat = {"BATCHYARD_OUTBOUND_NAT": "on"}
    servers = [Server(tmp_path_factory.mktemp(f"side-{name}") / "data", extra_env=nat) for name in "abc"]
    one, other, gone = servers
    try:
        with concurrent.futures.ThreadPoolExecutor(3) as pool:  # starting at once, they choose /30s at once
            list(pool.map(Server.start, servers))
        uplinks = [_uplink(s) for s in servers]
        assert len({ipaddress.ip_network(f"{host}/30", strict=False) for host, _ in uplinks}) == 3
        gone.stop()
        assert not {*uplinks[2]} & {*_host_addresses()}
        one_batch, other_batch = _pool(one, "one"), _pool(other, "other", taskSlotsPerNode=2)
        other_node = pool_settled(other_batch, "other")[1][0].ip_address
        pool_settled(one_batch, "one")
        token = secrets.token_hex(8)
        other_batch.create_task("other", {"id": "listen", "commandLine": _script("listen.py", LISTEN, TOKEN_PORT,
                                                                                   token)})
        wait_for(lambda: "listening" in _stdout(other_batch, "other", "listen"), what="the other node to listen")
        # its own neighbour gets the token: the node listens at that address
        assert _read(other_batch, "other", "own", other_node) == f"read {token}"
        targets = [f"{a}:{p}" for a in (*uplinks[1], *uplinks[2]) for p in (host_listener, other.port)]
        seen = probe(one_batch, "one", "host", *targets)
        assert seen == {t: "unreachable" for t in targets}
        assert token not in _read(one_batch, "one", "neighbour", other_node)
        other_batch.terminate_task("other", "listen")
    finally:
        for server in servers:
            server.stop()


def _pool(server: Server, name: str, **extra):
    """A one-node pool with a job on it, not waited for; the batch client."""
    clients = Clients(server.info)
    batch = clients.batch_key
    batch.create_pool(base_pool(clients, name, dedicated=1, **extra))
    batch.create_job({"id": name, "poolInfo": {"poolId": name}})
    return batch


def _stdout(batch, job: str, task_id: str) -> str:
    """What a task has written to stdout so far ("" before it starts: 409 while it waits for a
    node, 404 before its file exists)."""
    try:
        return b"".join(batch.download_task_file(job, task_id, "stdout.txt")).decode()
    except (ResourceExistsError, ResourceNotFoundError):
        return ""


def _read(batch, job: str, task_id: str, address: str) -> str:
    task, out, err = run(batch, job, task_id, _script("read.py", READ, address, TOKEN_PORT))
    assert task.execution_info.exit_code == 0, err
    return out.strip()


def _uplink(server: Server) -> tuple[str, str]:
    """The addresses of the service's uplink: the host's end and its hub's."""
    with IPRoute() as ipr:
        index = ipr.link_lookup(ifname=f"byup{_tag(server)}")
        assert index, "the service has no uplink"
        host = ipr.get_addr(index=index[0], family=socket.AF_INET)[0].get_attr("IFA_ADDRESS")
    return host, str(ipaddress.ip_address(host) + 1)


def test_without_nat_the_outside_is_unreachable(outside, tmp_path_factory):
    with Server(tmp_path_factory.mktemp("nat-off") / "data", extra_env={"BATCHYARD_OUTBOUND_NAT": "off"}) as server:
        batch = _node(server)
        assert _fetch(batch, "fetch").startswith("failed")
        assert f"batchyard_{_tag(server)}" not in _host_table_names()


def _tag(server: Server) -> str:
    from batchyard.runtime.host import tag
    return tag(server.data_dir / "runtime")


def _host_addresses() -> list[str]:
    with IPRoute() as ipr:
        return [a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(family=socket.AF_INET)]


def _host_table_names() -> list[str]:
    listed = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, check=True).stdout
    return [line.split()[-1] for line in listed.splitlines() if line.strip()]
