"""Machines' addresses on private networks that span hosts (a Ray cluster's): chosen in one
place, the service, so that two machines of one network never get the same address on
different hosts, and one network has the same /20 (and tunnel id) on every host. The
rules are one host's (networks.py: pick_subnet, pick_host); the plan is kept in
`subnets.json` and `addresses.json` (with their journals, journal.py)."""

from __future__ import annotations

import threading
from pathlib import Path

from .journal import JournaledDict
from .networks import address_of, pick_host, pick_subnet


class AddressPlan:
    def __init__(self, state_dir: Path):
        self._lock = threading.Lock()
        self.subnets = JournaledDict(state_dir / "subnets")  # network -> its /20
        self.machines = JournaledDict(state_dir / "addresses")  # machine key -> [network, host number]
        self._used: dict[str, set[int]] = {}
        for network, host in self.machines.values():
            self._used.setdefault(network, set()).add(host)

    def assign(self, key: str, network: str) -> tuple[int, int]:
        """(subnet, host number) of the machine on `network`: the one it had, or a free one."""
        with self._lock:
            held = self.machines.get(key)
            if held is not None and held[0] == network:
                return self.subnets[network], held[1]
            if held is not None:
                self._used[held[0]].discard(held[1])
            if network not in self.subnets:
                self.subnets[network] = pick_subnet(network, set(self.subnets.values()))
            used = self._used.setdefault(network, set())
            host = pick_host(network, used)
            used.add(host)
            self.machines[key] = [network, host]
            return self.subnets[network], host

    def release(self, key: str) -> None:
        with self._lock:
            held = self.machines.pop(key)
            if held is not None:
                self._used[held[0]].discard(held[1])

    def address(self, key: str) -> str | None:
        held = self.machines.get(key)
        return address_of(self.subnets[held[0]], held[1]) if held is not None else None
