"""Control groups: the cores, memory and processes of a machine, as its VM size says.

Each machine gets one cgroup, `batchyard-<service>/<machine>`, below the service's own
cgroup (so whatever confines the service confines its machines too). Every process a
machine runs (its agent, tasks, start tasks, run commands) joins it before it enters the
machine, so a task over its memory is killed by the machine's limit (the kernel's memory
cgroup OOM killer), never by the host's.

Two backends with the same calls: cgroup v1 (one hierarchy per controller, as this
project's build host has) and the unified v2 hierarchy. `detect()` picks the one whose
memory controller is usable, or None when neither is (no limits then; the banner says so).

Limits, for a size of C vCPUs and M MiB:
- memory: M MiB, swap included (no swap beyond it);
- cpu: a CFS quota of C CPUs, and a cpuset of C CPUs when the host has more than C (so
  `nproc` inside tells C); on a host with C CPUs or fewer, the quota alone;
- processes: PIDS_PER_CORE * C (a fork bomb stops there; the node recovers when it ends).
"""

from __future__ import annotations

import errno
import os
import signal
import time
import zlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

PIDS_PER_CORE = 1024
CFS_PERIOD_US = 100_000
_V1_CONTROLLERS = ("memory", "pids", "cpu", "cpuset")


@dataclass(frozen=True)
class Limits:
    """What a machine may use: its VM size's vCPUs and memory."""
    cores: int
    memory_mib: int

    @property
    def memory_bytes(self) -> int:
        return self.memory_mib * 1024 * 1024

    @property
    def pids(self) -> int:
        return PIDS_PER_CORE * max(1, self.cores)


@dataclass(frozen=True)
class MemoryFiles:
    """The files a machine's agent reads to tell the truth in its /proc/meminfo."""
    limit: str
    usage: str
    stat: str


def parse_cpu_list(text: str) -> list[int]:
    cpus: list[int] = []
    for part in text.strip().split(","):
        if not part:
            continue
        low, _, high = part.partition("-")
        cpus.extend(range(int(low), int(high or low) + 1))
    return cpus


def pick_cpus(key: str, available: list[int], cores: int) -> list[int] | None:
    """`cores` of the host's CPUs, spread over machines by their key; None when the size
    asks for at least as many CPUs as the host has."""
    if cores >= len(available):
        return None
    start = zlib.crc32(key.encode()) % len(available)
    return sorted(available[(start + i) % len(available)] for i in range(cores))


def _write(path: Path, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _read_counter(path: str | Path, name: str) -> int:
    """Read at every task's start and end: plain os calls, a fifth of Path.read_text's cost."""
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            content = os.read(fd, 4096)
        finally:
            os.close(fd)
    except OSError:
        return 0
    wanted = name.encode()
    for line in content.splitlines():
        field, _, value = line.partition(b" ")
        if field == wanted:
            return int(value)
    return 0


def _remove(path: Path) -> None:
    """rmdir, retried briefly: a killed process leaves its cgroup a moment after the kill."""
    for _ in range(200):
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                raise
        time.sleep(0.01)


def _remove_if_empty(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass  # machines of this service still there (a stop that could not end them)


def _release_memory(control: Path, value: str) -> None:
    """Before a machine's memory cgroup goes, the page cache charged to it (the files its
    tasks wrote) is reclaimed: a removed cgroup that still holds pages lingers in the
    kernel as a dying cgroup, and thousands of those (a service that makes and removes
    machines all day) slow every task start on the host (measured here: a machine agent's
    CPU per task went from 0.31 to 1.1 ms after some 1,700). Best effort: a kernel without
    the control file keeps them."""
    try:
        _write(control, value)
    except OSError:
        pass


def _kill_members(procs_file: Path) -> None:
    for _ in range(50):
        try:
            pids = [int(p) for p in procs_file.read_text().split()]
        except FileNotFoundError:
            return
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.01)


class Cgroups(ABC):
    """The machines' cgroups of one service."""

    version: int

    @abstractmethod
    def create(self, key: str, limits: Limits) -> None: ...

    @abstractmethod
    def procs_files(self, key: str) -> list[str]:
        """The files a process writes its pid to, to join the machine's cgroup."""

    @abstractmethod
    def oom_kills(self, key: str) -> int:
        """How many processes the machine's memory limit has killed so far."""

    @abstractmethod
    def memory_files(self, key: str) -> MemoryFiles: ...

    @abstractmethod
    def remove(self, key: str) -> None:
        """End whatever still runs in the machine's cgroup and remove it."""

    @abstractmethod
    def close(self) -> None:
        """Remove the service's cgroup once its machines' are gone."""

    @abstractmethod
    def keys(self) -> set[str]:
        """The machines that have a cgroup here."""

    def remove_all(self) -> None:
        """Every machine's cgroup goes: what a crashed run left (a machine's is made again
        with its next command)."""
        for key in self.keys():
            self.remove(key)


class CgroupsV1(Cgroups):
    version = 1

    def __init__(self, mounts: dict[str, Path], name: str):
        self.bases = {ctrl: mounts[ctrl] / _own_path(ctrl).lstrip("/") / name for ctrl in _V1_CONTROLLERS}
        for ctrl, base in self.bases.items():
            base.mkdir(exist_ok=True)
        cpuset = self.bases["cpuset"]
        for file in ("cpuset.cpus", "cpuset.mems"):  # a new cpuset starts empty
            _write(cpuset / file, (cpuset.parent / file).read_text().strip())
        self.host_cpus = parse_cpu_list((cpuset / "cpuset.cpus").read_text())

    def _dir(self, ctrl: str, key: str) -> Path:
        return self.bases[ctrl] / key

    def create(self, key: str, limits: Limits) -> None:
        for ctrl in _V1_CONTROLLERS:
            self._dir(ctrl, key).mkdir(exist_ok=True)
        cpuset = self._dir("cpuset", key)
        cpus = pick_cpus(key, self.host_cpus, limits.cores) or self.host_cpus
        _write(cpuset / "cpuset.cpus", ",".join(map(str, cpus)))
        _write(cpuset / "cpuset.mems", (self.bases["cpuset"] / "cpuset.mems").read_text().strip())
        memory = self._dir("memory", key)
        _write(memory / "memory.limit_in_bytes", str(limits.memory_bytes))
        if (memory / "memory.memsw.limit_in_bytes").exists():
            _write(memory / "memory.memsw.limit_in_bytes", str(limits.memory_bytes))
        _write(self._dir("pids", key) / "pids.max", str(limits.pids))
        cpu = self._dir("cpu", key)
        _write(cpu / "cpu.cfs_period_us", str(CFS_PERIOD_US))
        _write(cpu / "cpu.cfs_quota_us", str(CFS_PERIOD_US * limits.cores))

    def procs_files(self, key: str) -> list[str]:
        return [str(self._dir(ctrl, key) / "cgroup.procs") for ctrl in _V1_CONTROLLERS]

    def oom_kills(self, key: str) -> int:
        return _read_counter(f"{self.bases['memory']}/{key}/memory.oom_control", "oom_kill")  # str: per task

    def memory_files(self, key: str) -> MemoryFiles:
        memory = self._dir("memory", key)
        return MemoryFiles(str(memory / "memory.limit_in_bytes"), str(memory / "memory.usage_in_bytes"),
                           str(memory / "memory.stat"))

    def remove(self, key: str) -> None:
        _kill_members(self._dir("pids", key) / "cgroup.procs")
        _release_memory(self._dir("memory", key) / "memory.force_empty", "0")
        for ctrl in _V1_CONTROLLERS:
            _remove(self._dir(ctrl, key))

    def close(self) -> None:
        for base in self.bases.values():
            _remove_if_empty(base)

    def keys(self) -> set[str]:
        return {p.name for base in self.bases.values() for p in base.iterdir() if p.is_dir()}


class CgroupsV2(Cgroups):
    version = 2

    def __init__(self, mount: Path, name: str):
        own = mount / _own_path("").lstrip("/")
        self.base = own / name
        self.base.mkdir(exist_ok=True)
        wanted = {"memory", "pids", "cpu", "cpuset"} & set((own / "cgroup.controllers").read_text().split())
        self._delegate(own, wanted)
        _write(self.base / "cgroup.subtree_control", " ".join(f"+{c}" for c in sorted(wanted)))
        self.host_cpus = parse_cpu_list((self.base / "cpuset.cpus.effective").read_text()) \
            if "cpuset" in wanted else []

    @staticmethod
    def _delegate(own: Path, controllers: set[str]) -> None:
        """v2 lets a cgroup hand controllers to its children only when it holds no process
        itself: when the service's own cgroup does, the service moves into a leaf of it."""
        enable = " ".join(f"+{c}" for c in sorted(controllers))
        try:
            _write(own / "cgroup.subtree_control", enable)
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                raise
            leaf = own / "batchyard-service"
            leaf.mkdir(exist_ok=True)
            for pid in (own / "cgroup.procs").read_text().split():
                try:
                    _write(leaf / "cgroup.procs", pid)
                except OSError:
                    pass  # a process that ended, or a kernel thread
            _write(own / "cgroup.subtree_control", enable)

    def create(self, key: str, limits: Limits) -> None:
        group = self.base / key
        group.mkdir(exist_ok=True)
        cpus = pick_cpus(key, self.host_cpus, limits.cores)
        if cpus and (group / "cpuset.cpus").exists():
            _write(group / "cpuset.cpus", ",".join(map(str, cpus)))
        _write(group / "memory.max", str(limits.memory_bytes))
        if (group / "memory.swap.max").exists():
            _write(group / "memory.swap.max", "0")
        _write(group / "pids.max", str(limits.pids))
        if (group / "cpu.max").exists():
            _write(group / "cpu.max", f"{CFS_PERIOD_US * limits.cores} {CFS_PERIOD_US}")

    def procs_files(self, key: str) -> list[str]:
        return [str(self.base / key / "cgroup.procs")]

    def oom_kills(self, key: str) -> int:
        return _read_counter(f"{self.base}/{key}/memory.events", "oom_kill")  # str: per task

    def memory_files(self, key: str) -> MemoryFiles:
        group = self.base / key
        return MemoryFiles(str(group / "memory.max"), str(group / "memory.current"), str(group / "memory.stat"))

    def remove(self, key: str) -> None:
        group = self.base / key
        if (group / "cgroup.kill").exists():
            try:
                _write(group / "cgroup.kill", "1")
            except FileNotFoundError:
                return
        _kill_members(group / "cgroup.procs")
        _release_memory(group / "memory.reclaim", str(1 << 40))
        _remove(group)

    def close(self) -> None:
        _remove_if_empty(self.base)

    def keys(self) -> set[str]:
        return {p.name for p in self.base.iterdir() if p.is_dir()}


def _own_path(controller: str) -> str:
    """This process's cgroup in the hierarchy of `controller` ("" for the unified one)."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(",") if controller else controllers == "":
            return path
    return "/"


def mounts() -> tuple[dict[str, Path], Path | None]:
    """The v1 hierarchies by controller, and the v2 mount, from /proc/self/mountinfo."""
    v1: dict[str, Path] = {}
    v2 = None
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        before, _, after = line.partition(" - ")
        fields, (fstype, _source, options) = before.split(), after.split()[:3]
        if fstype == "cgroup2" and v2 is None:
            v2 = Path(fields[4])
        elif fstype == "cgroup":
            for ctrl in options.split(","):
                if ctrl in _V1_CONTROLLERS:
                    v1.setdefault(ctrl, Path(fields[4]))
    return v1, v2


def detect(name: str) -> tuple[Cgroups | None, str]:
    """The backend this host offers, with a sentence for the banner; None (and why) when
    neither hierarchy can take machines' limits."""
    v1, v2 = mounts()
    try:
        if all(ctrl in v1 for ctrl in _V1_CONTROLLERS):
            return CgroupsV1(v1, name), "cgroup v1"
        if v2 is not None and "memory" in (v2 / "cgroup.controllers").read_text().split():
            return CgroupsV2(v2, name), "cgroup v2"
    except OSError as exc:
        return None, f"cgroups unusable: {exc}"
    return None, "no cgroup hierarchy with the memory controller"
