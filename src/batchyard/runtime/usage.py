"""What a running machine uses, read from the host: the counters autoscale formulas sample
(`$CPUPercent`, `$MemoryBytes`, `$DiskBytes`, `$DiskReadBytes`, ..., `$NetworkInBytes`).

- CPU time: cgroup v2's `cpu.stat` (usage_usec); under cgroup v1, whose cpuacct
  controller machines do not join, the user and system time (children's included) of the
  processes in the machine's cgroup now.
- Memory: the machine's memory cgroup usage.
- Disk: the bytes under its temporary disk (`/mnt`); reads and writes from cgroup v2's
  `io.stat` (zero under v1, where machines join no blkio cgroup).
- Network: the byte counters of the links in the machine's network namespace.

Counters that cannot be read are None; a machine without a cgroup or namespace (the
fallback without isolation) reports what remains."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pyroute2 import IPRoute

from . import confined
from .machines import MachineProvider
from .networks import inside

_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Usage:
    cpu_seconds: float | None = None
    memory_bytes: float | None = None
    disk_bytes: float | None = None
    disk_read_bytes: float | None = None
    disk_write_bytes: float | None = None
    disk_read_ops: float | None = None
    disk_write_ops: float | None = None
    network_in_bytes: float | None = None
    network_out_bytes: float | None = None


def machine_usage(provider: MachineProvider, key: str) -> Usage:
    cgroups = getattr(provider, "cgroups", None)
    cpu = memory = None
    io: dict[str, float] = {}
    if cgroups is not None:
        cpu = _cpu_seconds(cgroups, key)
        memory = _memory_bytes(cgroups, key)
        io = _io(cgroups, key)
    net_in, net_out = _network(provider, key)
    return Usage(cpu_seconds=cpu, memory_bytes=memory, disk_bytes=_disk_bytes(provider, key),
                 disk_read_bytes=io.get("rbytes"), disk_write_bytes=io.get("wbytes"), disk_read_ops=io.get("rios"),
                 disk_write_ops=io.get("wios"), network_in_bytes=net_in, network_out_bytes=net_out)


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _cpu_seconds(cgroups, key: str) -> float | None:
    if cgroups.version == 2:
        text = _read(cgroups.base / key / "cpu.stat")
        for line in (text or "").splitlines():
            name, _, value = line.partition(" ")
            if name == "usage_usec":
                return int(value) / 1e6
        return None
    procs = _read(Path(cgroups.procs_files(key)[0]))
    if procs is None:
        return None
    ticks = 0
    for pid in procs.split():
        stat = _read(Path(f"/proc/{pid}/stat"))
        if stat:
            fields = stat.rpartition(")")[2].split()
            ticks += sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
    return ticks / _TICKS


def _memory_bytes(cgroups, key: str) -> float | None:
    text = _read(Path(cgroups.memory_files(key).usage))
    return float(text) if text and text.strip().isdigit() else None


def _io(cgroups, key: str) -> dict[str, float]:
    totals = {"rbytes": 0.0, "wbytes": 0.0, "rios": 0.0, "wios": 0.0}
    if cgroups.version != 2:
        return totals
    for line in (_read(cgroups.base / key / "io.stat") or "").splitlines():
        for pair in line.split()[1:]:
            name, _, value = pair.partition("=")
            if name in totals:
                totals[name] += float(value)
    return totals


def _disk_bytes(provider: MachineProvider, key: str) -> float | None:
    try:
        root = provider.temporary_disk(key)
    except (OSError, KeyError, ValueError):
        return None
    total = 0
    try:
        with confined.directory(Path(root)) as top:  # a running machine's disk: nothing followed
            for _, fd, _, files in confined.walk(top):
                for name in files:
                    try:
                        total += os.stat(name, dir_fd=fd, follow_symlinks=False).st_size
                    except OSError:
                        pass
    except OSError:
        return None
    return float(total)


def _network(provider: MachineProvider, key: str) -> tuple[float | None, float | None]:
    networks = getattr(provider, "networks", None)
    if networks is None:
        return None, None
    ns_file = networks.ns_file(key)
    if not ns_file.exists():
        return None, None
    received = sent = 0
    try:
        with inside(ns_file), IPRoute() as ipr:
            for link in ipr.get_links():
                if link.get_attr("IFLA_IFNAME") == "lo":
                    continue
                stats = link.get_attr("IFLA_STATS64") or {}
                received += stats.get("rx_bytes", 0)
                sent += stats.get("tx_bytes", 0)
    except OSError:
        return None, None
    return float(received), float(sent)
