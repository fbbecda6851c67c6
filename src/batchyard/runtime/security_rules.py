"""Network security group rules of an inbound NAT pool, as Azure applies them to what
reaches a node's frontend port: the rules in order of priority (lowest number first), the
first whose source address prefix and source port ranges match decides (allow or deny);
when a pool has rules, what none of them allows is denied."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass


@dataclass(frozen=True)
class SecurityRule:
    priority: int
    allow: bool
    source: str  # "*", an address or a network (CIDR)
    ports: tuple[str, ...] = ("*",)  # "*", "22" or "100-200"

    def matches(self, address: str, port: int) -> bool:
        return _address_matches(self.source, address) and any(_port_matches(r, port) for r in self.ports)


def _address_matches(prefix: str, address: str) -> bool:
    if prefix == "*":
        return True
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # a dual-stack listener reports IPv4 clients this way
    return ip in ipaddress.ip_network(prefix, strict=False)


def _port_matches(ports: str, port: int) -> bool:
    if ports == "*":
        return True
    low, _, high = ports.partition("-")
    return int(low) <= port <= int(high or low)


def admits(rules: tuple[SecurityRule, ...], peer: tuple) -> bool:
    """Whether a connection or datagram from `peer` (address, port) may pass."""
    if not rules:
        return True
    for rule in sorted(rules, key=lambda r: r.priority):
        if rule.matches(peer[0], peer[1]):
            return rule.allow
    return False
