"""One private network over several hosts (a Ray cluster's): each host's link of the
network (networks.py) joins a bridge in the host's hub, with a VXLAN port whose
encapsulated frames travel between the hosts' addresses, one VXLAN id per network, so the
machines of one pool or virtual network reach each other wherever they run, as on one
Azure virtual network, and machines of different networks still never meet.

- The VXLAN device is made in the host's own network namespace, where its UDP socket stays,
  and then moved into the hub: machines see only its frames, never the host's network.
- Each host listens on a UDP port of its own (several Ray nodes may share one machine and
  its addresses, as in tests on loopback). The kernel's VXLAN learns remote addresses but
  not their ports, so it learns nothing here: every frame for another host's machine goes
  to every other host (head-end replication: one default entry per peer), and the hosts
  whose machine it is not drop it.
- Every host has its own gateway at .1 of each network; a machine's neighbour entry for .1
  is fixed to its own host's gateway (networks.py), so no ARP answer from another host's
  gateway ever takes it away.

Anyone who can send UDP to a host's tunnel port can put frames on its networks (VXLAN has
no authentication): the port must be reachable only by the cluster's hosts.
"""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

from pyroute2 import IPRoute

from .outbound import sysctl

ANY_MAC = "00:00:00:00:00:00"
MTU = 1500  # as the machines' links: a frame of theirs is never too big for the tunnel


def free_udp_port(address: str) -> int:
    """A UDP port nothing uses on `address` now, as the kernel picks one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]


def why_not() -> str | None:
    """None when this kernel makes VXLAN devices, else why not (this host's part of each
    network then stays its own, as its note says)."""
    name = f"bvp{os.getpid()}"
    try:
        with IPRoute() as ipr:
            ipr.link("add", ifname=name, kind="vxlan", vxlan_id=1, vxlan_port=0)
            ipr.link("del", index=ipr.link_lookup(ifname=name)[0])
    except Exception as exc:  # NetlinkError is no OSError
        return f"no VXLAN devices on this kernel ({exc})"
    return None


def _bridge_unfiltered() -> None:
    """Where the kernel sends bridged frames through the IP hooks (br_netfilter), the hub's
    own rules (outbound.py: forward only to the uplink) would drop every frame between
    hosts: a bridge here carries one network's frames, which need no filter."""
    for family in ("iptables", "ip6tables", "arptables"):
        if os.path.exists(f"/proc/sys/net/bridge/bridge-nf-call-{family}"):
            sysctl(f"bridge/bridge-nf-call-{family}", "0")


class Tunnel:
    """This host's end of its networks' tunnels: `join` each network's link, `set_peers`
    to the other hosts' (address, port)."""

    def __init__(self, address: str, tag: str, port: int | None = None):
        self.address, self.tag = address, tag
        self.port = port or free_udp_port(address)
        self.peers: set[tuple[str, int]] = set()
        self._devices: dict[int, str] = {}  # subnet index -> its VXLAN device, in the hub
        self._hub: Path | None = None
        self._inside = None
        self._lock = threading.Lock()

    @property
    def endpoint(self) -> tuple[str, int]:
        return self.address, self.port

    def join(self, hub: Path, inside, subnet: int, port_link: str) -> None:
        """Bridges the network's link (`port_link`, in the hub) with a VXLAN device for it."""
        name = f"bv{self.tag[:6]}{subnet:x}"  # unique on the host while it is there
        with IPRoute() as ipr:
            for stale in ipr.link_lookup(ifname=name):  # left by a run that crashed before moving it
                ipr.link("del", index=stale)
            ipr.link("add", ifname=name, kind="vxlan", vxlan_id=subnet + 1, vxlan_local=self.address,
                     vxlan_port=self.port, vxlan_learning=0, mtu=MTU)
            hub_fd = os.open(hub, os.O_RDONLY)
            try:
                ipr.link("set", index=ipr.link_lookup(ifname=name)[0], net_ns_fd=hub_fd)
            finally:
                os.close(hub_fd)
        bridge = f"b{subnet}"
        with self._lock, inside(hub), IPRoute() as ipr:
            self._hub, self._inside = hub, inside
            _bridge_unfiltered()
            if not ipr.link_lookup(ifname=bridge):
                ipr.link("add", ifname=bridge, kind="bridge")
            bridge_index = ipr.link_lookup(ifname=bridge)[0]
            device = ipr.link_lookup(ifname=name)[0]
            ipr.link("set", index=ipr.link_lookup(ifname=port_link)[0], master=bridge_index)
            ipr.link("set", index=device, master=bridge_index, state="up")
            ipr.link("set", index=bridge_index, state="up")
            for address, port in self.peers:
                ipr.fdb("append", ifindex=device, lladdr=ANY_MAC, dst=address, port=port)
            self._devices[subnet] = name

    def set_peers(self, peers: list[tuple[str, int]]) -> None:
        """The other hosts' ends (this host's own is left out), for every network's tunnel."""
        wanted = {(address, int(port)) for address, port in peers} - {self.endpoint}
        with self._lock:
            added, removed = wanted - self.peers, self.peers - wanted
            self.peers = wanted
            if not self._devices or not (added or removed):
                return
            with self._inside(self._hub), IPRoute() as ipr:
                for name in self._devices.values():
                    device = ipr.link_lookup(ifname=name)[0]
                    for address, port in added:
                        ipr.fdb("append", ifindex=device, lladdr=ANY_MAC, dst=address, port=port)
                    for address, port in removed:
                        ipr.fdb("del", ifindex=device, lladdr=ANY_MAC, dst=address, port=port)
