"""Machine networks: every machine in a network namespace of its own, joined to the private
network it belongs to (a Batch pool's, a resource group's) and to nothing else.

All networks of a service hang off one "hub" network namespace, private to the service.
Each network there is a link (one end of a veth pair, so it always has a carrier) with a
/20 of 10.0.0.0/8 (4,094 machines: more than a pool's 2,500 dedicated plus 1,000
low-priority nodes); each machine's `eth0` is a macvlan of it in bridge mode, with an
address of the network and a default route to the gateway (.1, a macvlan of the same link
in the hub). Machines of one network reach each other through their link; the hub
forwards no packet to another network or to the host; with outbound NAT (outbound.py) it
forwards what goes beyond the host, through its uplink.
macvlan rather than a bridge with a veth per machine: adding a port to a bridge costs in
proportion to the ports it has (1,000 nodes took 5 times longer each than the first 100),
a macvlan the same for every machine. The hub also holds
SERVICE_ADDRESS, where the service's gateway (gateway.py) listens: the one place a machine
can reach the service, as AZ_BATCH_ACCOUNT_URL says.

On a host of a cluster (host_daemon.py) the service chooses the addresses, for every host
at once (`reserve`), each network's link is bridged with a tunnel to the same network on
the other hosts (tunnels.py), a machine's neighbour entry for its gateway is fixed to its
own host's (every host has one at .1), and the rest of the node range is unreachable from
the hub rather than sent out through NAT.

The namespaces are bound to files (like `ip netns`), so an idle machine costs no process;
they vanish with the service's mount namespace and are made again when machines start
after a restart, with the same addresses (kept in each machine's directory). Netlink
through pyroute2, in the namespace of the calling thread (setns is per thread).
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import os
import socket
import struct
import subprocess
import threading
from pathlib import Path

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink import NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST
from pyroute2.netlink.rtnl import RTM_NEWADDR, RTM_NEWLINK, RTM_NEWNEIGH, RTM_NEWROUTE
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import IFF_UP, ifinfmsg
from pyroute2.netlink.rtnl.ndmsg import NUD_PERMANENT, ndmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from ..private_files import write_private
from . import linux
from .outbound import OutboundNat, sysctl
from .tunnels import Tunnel

SERVICE_ADDRESS = "100.64.0.1"  # shared address space, never a node's
NODE_RANGE = ipaddress.ip_network("10.0.0.0/8")
PREFIX = 20
NLMSG_ERROR = 2  # also the ACK, with error 0
RT_TABLE_MAIN, RTPROT_STATIC, RTN_UNICAST = 254, 4, 1
MACVLAN_BRIDGE = 4
_CREATE = NLM_F_CREATE | NLM_F_EXCL
_SUBNETS = 1 << (PREFIX - NODE_RANGE.prefixlen)
_HOSTS = (1 << (32 - PREFIX)) - 2  # without network and broadcast


@contextlib.contextmanager
def inside(ns_file: Path):
    """Runs the block with this thread in the network namespace bound at `ns_file`."""
    back = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(ns_file, os.O_RDONLY)
    try:
        linux.setns(target, linux.CLONE_NEWNET)
        yield
    finally:
        linux.setns(back, linux.CLONE_NEWNET)
        os.close(target)
        os.close(back)


def new_namespace(ns_file: Path) -> None:
    """A new network namespace, bound to `ns_file` (the file must be on a private mount)."""
    back = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    ns_file.touch()
    try:
        linux.unshare(linux.CLONE_NEWNET)
        linux.mount("/proc/thread-self/ns/net", str(ns_file), None, linux.MS_BIND)
    finally:
        linux.setns(back, linux.CLONE_NEWNET)
        os.close(back)


def _message(cls, kind: int, flags: int, fields: dict, attrs: list) -> bytes:
    """One rtnetlink request, asking for an ACK."""
    msg = cls()
    for name, value in fields.items():
        msg[name] = value
    msg["attrs"] = attrs
    msg["header"]["type"] = kind
    msg["header"]["flags"] = NLM_F_REQUEST | NLM_F_ACK | flags
    msg.encode()
    return bytes(msg.data)


def _send(batch: bytes) -> None:
    """Sends netlink requests (each asking for an ACK) in one write; raises the first error."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as sock:
        sock.bind((0, 0))
        sock.sendall(batch)
        pending, offset = 0, 0
        while offset < len(batch):
            pending += 1
            offset += (struct.unpack_from("=I", batch, offset)[0] + 3) & ~3
        first_error = 0
        while pending:
            data = sock.recv(65536)
            offset = 0
            while offset < len(data):
                length, kind = struct.unpack_from("=IH", data, offset)
                if kind == NLMSG_ERROR:
                    pending -= 1
                    first_error = first_error or -struct.unpack_from("=i", data, offset + 16)[0]
                offset += (length + 3) & ~3
    if first_error:
        raise OSError(first_error, os.strerror(first_error))


def pick_subnet(network: str, taken: set[int]) -> int:
    """The /20 a network gets: one chosen by its name, the next free one if that is taken."""
    start = int.from_bytes(hashlib.sha256(network.encode()).digest()[:4], "big") % _SUBNETS
    index = next(((start + i) % _SUBNETS for i in range(_SUBNETS) if (start + i) % _SUBNETS not in taken), None)
    if index is None:
        raise OSError("no private network range left for another network")
    return index


def pick_host(network: str, used: set[int], start: int = 2) -> int:
    """The lowest host number free in a network from `start` (.1 is the gateway)."""
    host = next((h for h in range(start, _HOSTS + 1) if h not in used), None)
    if host is None:
        raise OSError(f"network {network} has no address left")
    return host


def address_of(subnet: int, host: int) -> str:
    base = int(NODE_RANGE.network_address) + (subnet << (32 - PREFIX))
    return str(ipaddress.ip_address(base + host))


def write_record(path: Path, record: dict) -> None:
    """A machine's address record, replaced whole: a service killed while writing it leaves
    the old record or the new one, never an empty file that the next start cannot read."""
    write_private(path, json.dumps(record).encode())


def read_record(path: Path) -> dict | None:
    """A machine's address record; None when it has none, or only the empty or cut file a
    service killed mid-write left before records were replaced whole (its address is then
    free, and the machine is given one again when it is next attached)."""
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None


class Networks:
    def __init__(self, ns_dir: Path, machines_dir: Path, outbound: OutboundNat | None = None,
                 tunnel: Tunnel | None = None):
        self.ns_dir = ns_dir
        self.tunnel = tunnel  # the same networks on other hosts (tunnels.py), or None
        self._gateway_macs: dict[str, str] = {}  # network -> its gateway's MAC, with a tunnel
        self.machines_dir = machines_dir
        self.hub = ns_dir / "hub.net"
        self._lock = threading.Lock()
        self._subnets: dict[str, int] = {}  # network -> index of its /20
        self._used: dict[str, set[int]] = {}  # network -> host numbers in use
        self._lowest_free: dict[str, int] = {}  # network -> no host number below this one is free
        self._links: dict[str, int] = {}  # network -> index of its link in the hub, once made
        self._load()
        new_namespace(self.hub)
        with inside(self.hub), IPRoute() as ipr:
            sysctl("ipv4/conf/all/forwarding", "0")  # a new namespace may inherit the host's
            sysctl("ipv4/ip_forward", "0")
            lo = ipr.link_lookup(ifname="lo")[0]
            ipr.link("set", index=lo, state="up")
            ipr.addr("add", index=lo, address=SERVICE_ADDRESS, prefixlen=32)
            self._check_macvlan(ipr)
            if tunnel is not None:  # a network on other hosts only is not beyond this host (outbound NAT)
                ipr.route("add", dst=str(NODE_RANGE), type="unreachable")
        self.outbound: OutboundNat | None = None
        self.outbound_missing = "switched off"
        if outbound is not None:
            try:
                outbound.start(self.hub, inside)
                self.outbound, self.outbound_missing = outbound, None
            except (OSError, subprocess.CalledProcessError) as exc:
                outbound.stop()
                self.outbound_missing = getattr(exc, "stderr", None) or str(exc)

    def close(self) -> None:
        if self.outbound is not None:
            self.outbound.stop()

    @staticmethod
    def _check_macvlan(ipr: IPRoute) -> None:
        """Fails (the banner then says machines have no private networks) where the kernel
        has no macvlan."""
        ipr.link("add", ifname="probe", kind="veth", peer="probep")
        try:
            ipr.link("add", ifname="probem", kind="macvlan", link=ipr.link_lookup(ifname="probe")[0],
                     macvlan_mode="bridge")
        except NetlinkError as exc:
            raise OSError(exc.code, f"no macvlan links on this kernel ({exc})")
        finally:
            ipr.link("del", ifname="probe")

    # addresses ----------------------------------------------------------------------------

    def _record(self, key: str) -> Path:
        return self.machines_dir / key / "network.json"

    def _load(self) -> None:
        """The networks and addresses of the machines that exist, so a restart gives each
        machine its address again and never hands it to another."""
        records = [read_record(p) for p in self.machines_dir.glob("*/network.json")]
        for record in filter(None, records):
            self._subnets.setdefault(record["network"], record["subnet"])
            self._used.setdefault(record["network"], set()).add(record["host"])

    def _subnet_of(self, network: str) -> int:
        if network not in self._subnets:
            self._subnets[network] = pick_subnet(network, set(self._subnets.values()))
        return self._subnets[network]

    def reserve(self, key: str, network: str, subnet: int, host: int) -> None:
        """The machine's address as whoever places machines on several hosts chose it (unique
        across them); attach then uses it."""
        self.release(key)
        with self._lock:
            self._subnets[network] = subnet
            self._used.setdefault(network, set()).add(host)
        self._record(key).parent.mkdir(parents=True, exist_ok=True)
        write_record(self._record(key), {"network": network, "subnet": subnet, "host": host})

    def _assign(self, key: str, network: str) -> dict:
        record_file = self._record(key)
        record = read_record(record_file)
        if record is not None:
            if record["network"] == network:
                return record
            self.release(key)
        with self._lock:
            subnet = self._subnet_of(network)
            used = self._used.setdefault(network, set())
            # from the lowest that may be free: a machine's address costs the same in a
            # network of 2,500 as in one of 10
            host = pick_host(network, used, self._lowest_free.get(network, 2))
            used.add(host)
            self._lowest_free[network] = host + 1
        record = {"network": network, "subnet": subnet, "host": host}
        write_record(record_file, record)
        return record

    def release(self, key: str) -> None:
        """The machine is gone: its address is free again."""
        record_file = self._record(key)
        record = read_record(record_file)
        if record is not None:
            with self._lock:
                self._used.get(record["network"], set()).discard(record["host"])
                network = record["network"]
                self._lowest_free[network] = min(self._lowest_free.get(network, 2), record["host"])
        record_file.unlink(missing_ok=True)

    def address(self, key: str) -> str | None:
        record = read_record(self._record(key))
        return address_of(record["subnet"], record["host"]) if record is not None else None

    # namespaces ---------------------------------------------------------------------------

    def ns_file(self, key: str) -> Path:
        return self.ns_dir / f"{key}.net"

    def _link(self, network: str, subnet: int) -> int:
        """The network's link in the hub, with its gateway (made on first use), by index."""
        with self._lock:
            if network in self._links:
                return self._links[network]
            with inside(self.hub), IPRoute() as ipr:
                index = self._make_link(ipr, subnet)
                if self.tunnel is not None:
                    gateway = ipr.link_lookup(ifname=f"n{subnet}g")[0]
                    self._gateway_macs[network] = ipr.get_links(gateway)[0].get_attr("IFLA_ADDRESS")
            if self.tunnel is not None:
                self.tunnel.join(self.hub, inside, subnet, f"n{subnet}p")
            self._links[network] = index
            return index

    def _make_link(self, ipr: IPRoute, subnet: int) -> int:
        link, peer, gateway = f"n{subnet}", f"n{subnet}p", f"n{subnet}g"
        if not ipr.link_lookup(ifname=link):
            ipr.link("add", ifname=link, kind="veth", peer=peer)
        for name in (peer, link):
            ipr.link("set", index=ipr.link_lookup(ifname=name)[0], state="up")
        index = ipr.link_lookup(ifname=link)[0]
        if not ipr.link_lookup(ifname=gateway):
            ipr.link("add", ifname=gateway, kind="macvlan", link=index, macvlan_mode="bridge")
        gateway_index = ipr.link_lookup(ifname=gateway)[0]
        if not ipr.get_addr(index=gateway_index, family=socket.AF_INET):
            ipr.addr("add", index=gateway_index, address=address_of(subnet, 1), prefixlen=PREFIX)
        ipr.link("set", index=gateway_index, state="up")
        if self.outbound is not None:  # the hub's rules let it forward only to the uplink
            sysctl(f"ipv4/conf/{gateway}/forwarding", "1")
        return index

    def attach(self, key: str, network: str) -> Path:
        """The machine's namespace, made and wired to its network; returns its file.
        Hundreds of machines start at once, so each namespace gets its requests in one
        netlink write, encoded by pyroute2's message classes (IPRoute's own calls cost
        several times more, one round trip and event-loop pass each)."""
        ns_file = self.ns_file(key)
        if os.path.ismount(ns_file):
            return ns_file
        record = self._assign(key, network)
        link = self._link(network, record["subnet"])
        new_namespace(ns_file)
        machine_ns = os.open(ns_file, os.O_RDONLY)
        try:
            with inside(self.hub):  # made in the machine's namespace, where it is the second link
                _send(_message(ifinfmsg, RTM_NEWLINK, _CREATE, {}, [
                    ("IFLA_IFNAME", "eth0"), ("IFLA_LINK", link), ("IFLA_NET_NS_FD", machine_ns),
                    ("IFLA_LINKINFO", {"attrs": [("IFLA_INFO_KIND", "macvlan"),
                                                 ("IFLA_INFO_DATA", {"attrs": [("IFLA_MACVLAN_MODE", MACVLAN_BRIDGE)]})]})]))
        finally:
            os.close(machine_ns)
        address, gateway = address_of(record["subnet"], record["host"]), address_of(record["subnet"], 1)
        inner = b"".join((
            _message(ifinfmsg, RTM_NEWLINK, 0, {"index": 1, "flags": IFF_UP, "change": IFF_UP}, []),
            _message(ifinfmsg, RTM_NEWLINK, 0, {"index": 2, "flags": IFF_UP, "change": IFF_UP}, []),
            _message(ifaddrmsg, RTM_NEWADDR, _CREATE, {"family": socket.AF_INET, "prefixlen": PREFIX, "index": 2},
                     [("IFA_LOCAL", address), ("IFA_ADDRESS", address)]),
            _message(rtmsg, RTM_NEWROUTE, _CREATE, {"family": socket.AF_INET, "table": RT_TABLE_MAIN,
                                                    "proto": RTPROT_STATIC, "type": RTN_UNICAST},
                     [("RTA_GATEWAY", gateway)]),
        ))
        if self.tunnel is not None:  # every host has a gateway at .1: this machine's is on its host
            inner += _message(ndmsg, RTM_NEWNEIGH, _CREATE, {"family": socket.AF_INET, "ifindex": 2,
                                                              "state": NUD_PERMANENT},
                              [("NDA_DST", gateway), ("NDA_LLADDR", self._gateway_macs[network])])
        with inside(ns_file):
            _send(inner)
        return ns_file

    def detach(self, key: str) -> None:
        """The machine's namespace goes (its eth0 with it); its address stays its own."""
        ns_file = self.ns_file(key)
        linux.unmount_lazily(str(ns_file))
        ns_file.unlink(missing_ok=True)

    def connect(self, address: str, port: int, timeout: float = 10, kind: int = socket.SOCK_STREAM) -> socket.socket:
        """A TCP connection (or a connected UDP socket) from the hub to a machine's address."""
        with inside(self.hub):
            sock = socket.socket(socket.AF_INET, kind)
        try:
            sock.settimeout(timeout)
            sock.connect((address, port))
        except OSError:
            sock.close()
            raise
        sock.settimeout(None)
        return sock

    def listen(self, port: int) -> socket.socket:
        """A listening socket at SERVICE_ADDRESS:port in the hub: the service's gateway."""
        with inside(self.hub):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((SERVICE_ADDRESS, port))
        sock.listen(128)
        return sock
