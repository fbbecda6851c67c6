"""Outbound NAT: machines reach the world beyond the host, as an Azure VM reaches the
internet through its default outbound access, and nothing of the host itself.

The hub namespace (networks.py) gets an uplink: a veth pair whose other end lies in the
host's namespace. Machines' packets leave the hub through it masqueraded to the hub's end
of the uplink, and leave the host masqueraded to the host's own address, so the host needs
no route to the machines' networks (nor learns of them: 10.0.0.0/8 is often the host's own
LAN). The rules are nftables rulesets given to `nft -f` (Debian's `nftables`): pyroute2's
nftables module only lists and adds raw expressions, with no NAT. On the host they live in
one table of this service's own (`inet batchyard_<tag>`), made at start and deleted at
stop, never touching another table:
- input: nothing that comes up the uplink reaches the host itself (its loopback, its
  addresses, the service's port: the gateway stays the only way to the service);
- forward: from the uplink, only what the hub masqueraded (its own address), to anywhere
  but the transfer range and the host's link-local neighbours (a cloud host's instance
  metadata service hands out the host's credentials at 169.254.169.254); into the uplink
  only replies. The whole transfer range, not just the uplinks there now: other services'
  uplinks come and go, and an address a service just gave back is no longer the host's, so
  the host would route it out of its default route like any outside address (answered by
  whatever lies there), or to the next service that takes it;
- postrouting: masquerade what comes from the hub.

IPv4 forwards a packet only when the interface it came in on has `forwarding` on: the
uplink for what machines send, and the interface a reply comes back on. So forwarding is
switched on per interface (never `ip_forward` for all), on the uplink and on the host's
other interfaces that have an address, and an interface switched on by Batchyard forwards
only replies into an uplink (the forward chain drops the rest, as the interface did
before). Those interfaces are written in FORWARDING_FILE, with the services that need them;
the last to stop (or the next to start, after a crash) switches them off again.

Services on one host choose their /30 and make their uplink one at a time (UPLINKS_LOCK):
two that chose at once could take the same /30, and the kernel would then route one hub's
replies into the other's uplink.

A crash leaves the table behind (its rules still hold); the uplink goes with the hub
namespace. The next start with the same data directory deletes both before making them.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import shutil
import socket
import subprocess
from pathlib import Path

from pyroute2 import IPRoute

UPLINK = "uplink"  # its name in the hub
HOST_PREFIX = "byup"  # host-side names: byup + 8 hex digits of the data directory's tag
TRANSFER_RANGE = ipaddress.ip_network("100.65.0.0/16")  # shared address space, beside SERVICE_ADDRESS
# the host's own link: a cloud's instance metadata and credentials (169.254.169.254) live there
LINK_LOCAL = "169.254.0.0/16"
FORWARDING_FILE = Path("/run/batchyard/forwarding.json")
UPLINKS_LOCK = Path("/run/batchyard/uplinks.lock")


def sysctl(name: str, value: str | None = None) -> str:
    """Reads (or writes) a network sysctl of the calling thread's network namespace."""
    path = f"/proc/sys/net/{name}"
    if value is None:
        with open(path) as f:
            return f.read().strip()
    with open(path, "w") as f:
        f.write(value)
    return value


def nft(ruleset: str, check: bool = True) -> subprocess.CompletedProcess:
    """Runs `nft -f -` with the ruleset in the calling thread's network namespace (a child
    process inherits the namespace of the thread that forks it)."""
    return subprocess.run([shutil.which("nft") or "nft", "-f", "-"], input=ruleset, text=True,
                          capture_output=True, check=check)


def has_default_route() -> bool:
    with IPRoute() as ipr:
        return any(r.get("dst_len") == 0 for r in ipr.get_routes(family=socket.AF_INET, table=254))


def why_not(mode: str) -> str | None:
    """None when outbound NAT should run in this mode on this host, else why not."""
    if mode == "off":
        return "switched off"
    if shutil.which("nft") is None:
        return "no nft (install Debian's nftables)"
    if mode == "auto" and not has_default_route():
        return "the host has no default route"
    return None


@contextlib.contextmanager
def _uplinks_locked():
    """Held while a service chooses its transfer network and puts its address on the host."""
    UPLINKS_LOCK.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with open(os.open(UPLINKS_LOCK, os.O_RDWR | os.O_CREAT, 0o600)) as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


@contextlib.contextmanager
def _forwarding_registry():
    """The interfaces Batchyard switched forwarding on for, with the services (pids) that
    need them; locked while the block runs, dead services dropped."""
    FORWARDING_FILE.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with open(os.open(FORWARDING_FILE, os.O_RDWR | os.O_CREAT, 0o600), "r+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        text = f.read()
        users: dict[str, list[int]] = json.loads(text) if text.strip() else {}
        for name in list(users):
            users[name] = [pid for pid in users[name] if _alive(pid)]
        yield users
        for name in [n for n, pids in users.items() if not pids]:
            with contextlib.suppress(OSError):
                sysctl(f"ipv4/conf/{name}/forwarding", "0")
            del users[name]
        f.seek(0)
        f.truncate()
        f.write(json.dumps(users))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


class OutboundNat:
    """The uplink of one service's hub and the host's rules for it."""

    def __init__(self, tag: str):
        self.tag = tag
        self.host_link = f"{HOST_PREFIX}{tag}"
        self.table = f"batchyard_{tag}"
        self.host_address = self.hub_address = ""

    # host side ------------------------------------------------------------------------

    def remove_stale(self) -> None:
        """What a crashed run with the same data directory left behind."""
        nft(f"delete table inet {self.table}\n", check=False)  # none: nothing to do
        with IPRoute() as ipr:
            if ipr.link_lookup(ifname=self.host_link):
                ipr.link("del", ifname=self.host_link)

    def _transfer_network(self, ipr: IPRoute) -> ipaddress.IPv4Network:
        """A /30 for the uplink that no address or route of the host overlaps, chosen from
        the tag so a restart takes the same one."""
        used = [ipaddress.ip_network(f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}", strict=False)
                for a in ipr.get_addr(family=socket.AF_INET)]
        used += [ipaddress.ip_network(f"{r.get_attr('RTA_DST')}/{r['dst_len']}")
                 for r in ipr.get_routes(family=socket.AF_INET, table=254) if r.get_attr("RTA_DST")]
        subnets = 1 << (30 - TRANSFER_RANGE.prefixlen)
        start = int(self.tag, 16) % subnets
        for i in range(subnets):
            net = ipaddress.ip_network((int(TRANSFER_RANGE.network_address) + 4 * ((start + i) % subnets), 30))
            if not any(net.overlaps(u) for u in used):
                return net
        raise OSError("no free /30 for the outbound uplink in " + str(TRANSFER_RANGE))

    def start(self, hub_file: Path, inside) -> None:
        """Makes the uplink between the host and the hub (`inside(hub_file)` runs a block
        in the hub) and the rules on both sides."""
        self.remove_stale()
        with _uplinks_locked(), IPRoute() as ipr:
            net = self._transfer_network(ipr)
            self.host_address, self.hub_address = str(net.network_address + 1), str(net.network_address + 2)
            hub_fd = os.open(hub_file, os.O_RDONLY)
            try:  # its peer made in the hub: no "uplink" on the host, where two services would race for the name
                ipr.link("add", ifname=self.host_link, kind="veth", peer={"ifname": UPLINK, "net_ns_fd": hub_fd})
            finally:
                os.close(hub_fd)
            index = ipr.link_lookup(ifname=self.host_link)[0]
            sysctl(f"ipv6/conf/{self.host_link}/disable_ipv6", "1")
            ipr.addr("add", index=index, address=self.host_address, prefixlen=30)
            ipr.link("set", index=index, state="up")
            sysctl(f"ipv4/conf/{self.host_link}/forwarding", "1")
            outside = [link.get_attr("IFLA_IFNAME") for link in ipr.get_links()
                       if ipr.get_addr(index=link["index"], family=socket.AF_INET)]
        outside = [n for n in outside if n != "lo" and not n.startswith(HOST_PREFIX)]
        with _forwarding_registry() as users:
            mine = [n for n in outside if n in users or sysctl(f"ipv4/conf/{n}/forwarding") == "0"]
            for name in mine:
                users.setdefault(name, []).append(os.getpid())
            nft(self._host_rules(sorted(users)))  # before any interface forwards more than it did
            for name in mine:
                sysctl(f"ipv4/conf/{name}/forwarding", "1")
        with inside(hub_file), IPRoute() as ipr:
            index = ipr.link_lookup(ifname=UPLINK)[0]
            sysctl(f"ipv6/conf/{UPLINK}/disable_ipv6", "1")
            ipr.addr("add", index=index, address=self.hub_address, prefixlen=30)
            ipr.link("set", index=index, state="up")
            ipr.route("add", dst="0.0.0.0/0", gateway=self.host_address)
            sysctl(f"ipv4/conf/{UPLINK}/forwarding", "1")
            nft(self._hub_rules())

    def _host_rules(self, switched: list[str]) -> str:
        link = self.host_link
        keep_off = (f'        iifname {{ {", ".join(json.dumps(n) for n in switched)} }} '
                    f'oifname != "{HOST_PREFIX}*" drop\n') if switched else ""
        return (
            f"table inet {self.table} {{\n"
            "    chain input {\n"
            "        type filter hook input priority filter - 10; policy accept;\n"
            f'        iifname "{link}" drop\n'
            "    }\n"
            "    chain forward {\n"
            "        type filter hook forward priority filter - 10; policy accept;\n"
            f'        iifname "{link}" ip saddr != {self.hub_address} drop\n'
            f'        iifname "{link}" oifname "{HOST_PREFIX}*" drop\n'
            f'        iifname "{link}" ip daddr {{ {TRANSFER_RANGE}, {LINK_LOCAL} }} drop\n'
            f'        oifname "{link}" ct state != {{ established, related }} drop\n'
            + keep_off +
            "    }\n"
            "    chain postrouting {\n"
            "        type nat hook postrouting priority srcnat; policy accept;\n"
            f'        ip saddr {self.hub_address} oifname != "{link}" masquerade\n'
            "    }\n"
            "}\n")

    def _hub_rules(self) -> str:
        """In the hub (private to the service): only machines' networks out through the
        uplink, never to the transfer range (the host's end of it, other services' uplinks),
        only replies back, masqueraded."""
        return (
            "table inet batchyard {\n"
            "    chain forward {\n"
            "        type filter hook forward priority filter; policy drop;\n"
            f'        iifname != "{UPLINK}" oifname "{UPLINK}" ip daddr != {TRANSFER_RANGE} accept\n'
            f'        iifname "{UPLINK}" ct state {{ established, related }} accept\n'
            "    }\n"
            "    chain postrouting {\n"
            "        type nat hook postrouting priority srcnat; policy accept;\n"
            f'        oifname "{UPLINK}" masquerade\n'
            "    }\n"
            "}\n")

    def stop(self) -> None:
        """Deletes the host's table and the uplink; gives back the forwarding it needed."""
        self.remove_stale()
        with _forwarding_registry() as users:
            for name in users:
                if os.getpid() in users[name]:
                    users[name].remove(os.getpid())
