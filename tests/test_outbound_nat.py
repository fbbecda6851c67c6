"""Outbound NAT, through the real azure-batch client: a task on a node fetches a page from
an "outside" host and that host sees the service host's address, not the node's; with NAT
off the same fetch fails; either way a node reaches nothing of the host itself.

The outside host is a network namespace of this test's own, joined to the host's namespace
by a veth (198.18.0.0/24, RFC 2544's benchmark range, routed nowhere): every packet stays
on this machine and the host's own routes are left alone."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap

import pytest
from pyroute2 import IPRoute, NetNS, netns

from conftest import Clients, Server, pool_settled
from test_batch_pools import base_pool
from test_node_isolation import probe, run

OUTSIDE_NS = "batchyard-test-outside"
HOST_SIDE, OUTSIDE_SIDE = "bytest-host", "bytest-out"
HOST_ADDRESS, OUTSIDE_ADDRESS = "198.18.0.1", "198.18.0.2"
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
    with IPRoute() as ipr:
        if ipr.link_lookup(ifname=HOST_SIDE):
            ipr.link("del", ifname=HOST_SIDE)
    if OUTSIDE_NS in netns.listnetns():
        netns.remove(OUTSIDE_NS)


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
    clients = Clients(server.info)
    batch = clients.batch_key
    batch.create_pool(base_pool(clients, "outbound", dedicated=1))
    pool_settled(batch, "outbound")
    batch.create_job({"id": "outbound", "poolInfo": {"poolId": "outbound"}})
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
        own = [a for a in _host_addresses() if not a.startswith("127.")]  # the uplink's end and 198.18.0.1 too
        assert HOST_ADDRESS in own and len(own) >= 3
        targets = [f"{a}:{p}" for a in own for p in (host_listener, port)]
        seen = probe(batch, "outbound", "host", *targets, f"127.0.0.1:{host_listener}", f"100.64.0.1:{port}",
                     f"{OUTSIDE_ADDRESS}:{OUTSIDE_PORT}")
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
