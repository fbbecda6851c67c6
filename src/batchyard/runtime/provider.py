"""The machine contract: what the services may ask of the machines, wherever they run (as
Nova's ComputeDriver or Ray's NodeProvider are for theirs). Services address machines and
disks only by key, and reach them only through a `MachineProvider`: never through a host
path or a process handle, so a machine can live on this host, on another, or nowhere but
in memory (tests).

- Disks and machines are addressed by key. `create_disk`, `start`, `stop`,
  `delete_machine` and `delete_disk` are idempotent (starting a running machine, stopping a
  stopped one, deleting what is gone do nothing); a `start` that fails leaves nothing
  behind (no half-made namespace, network or cgroup) and raises `MachineError`.
- `capabilities` says what a provider enforces (isolation, limits, networks, ...), so the
  start banner and the services never guess.
- Commands run only through `command_runner(key)` (commands.py): asynchronous, keyed by
  the caller's attempt id, the exit reported to a callback, a stopped machine ending its
  commands with 137. `run_argv` (a VM's runCommand) is built on it. A provider may keep
  the exits it reported (`recorded_exits`), so that a service that died before recording
  one finds it when it starts again; `forget_recorded_exits` once it has.
- Files: `files(key)` is the machine's file service (machine_files.py) for everything the
  services do in its tree (list, stat, read a byte range, write a stream as a given owner,
  make directories, remove a tree), links never followed out of it.
- Hosts can be lost: `on_machines_lost` listeners hear which machines went with one.
- `inventory()` names the machines and disks the provider holds, so that after a crash the
  service (which alone knows which ones its records name) can remove the rest.
- Capacity: `capacity()` reports each host's cores, memory and free disk; allocation
  sizes nodes against it (settings may cap it).
- Containers: `pull_image(key, reference, login)` makes sure the machine's host holds an
  OCI image (pulled once per host into its layer store, container_images.py) and says what
  it is; `command_runner(key).run(..., container=ContainerRun(...))` runs a command in a
  container of it: an overlay of its layers under a writable layer of the container's
  own, with the Batch directories bound in, removed when the command ends. A provider
  that does this names CONTAINERS in `capabilities` (the images' catalog says so).
- Layers travel by content id: `ensure_layers(ids)` makes sure a machine's host holds the
  layers a disk needs, pulling the missing ones from where they are (LayerStore.export on
  the host that has one, LayerStore.receive on the one that lacks it, which stores it only
  if its content hashes to its id); a host caches what it pulled.

Implementations: the local namespace provider and the fakechroot fallback (machines.py,
directories.py), and an in-memory fake for rule tests (fake_provider.py).
"""

from __future__ import annotations

import os
import shutil
import threading
import time
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from collections.abc import Callable
from pathlib import Path

from .cgroups import Limits
from .commands import CommandRunner, Exit
from .container_images import ContainerImage
from .oci_registry import Login
from .machine_files import MachineFiles
from .security_rules import SecurityRule

# What a provider may enforce; `capabilities` names those it does.
ISOLATION, OVERLAY, LIMITS, NETWORKS, SECCOMP, SNAPSHOTS, CONTAINERS = (
    "isolation", "overlay", "limits", "networks", "seccomp", "snapshots", "containers")
DEFAULT_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
    "USER": "root",
    "LOGNAME": "root",
    "SHELL": "/bin/sh",
}
# Where a run_argv command keeps its output, on the machine's temporary disk (removed after).
_RUN_DIR = ".batchyard-run"
# How much of each stream a command run by the service keeps, unless its caller says: the
# end of it, as Azure's run command keeps the last 4 KiB.
RUN_TAIL_BYTES = 64 * 1024


@dataclass
class DiskSpec:
    key: str
    layers: list[str]  # bottom first


@dataclass(frozen=True)
class InboundPort:
    """Inbound NAT: connections (or datagrams) to host_address:frontend reach the machine's
    port backend, when the rules admit their source."""
    host_address: str
    frontend: int
    backend: int
    protocol: str = "tcp"  # or "udp"
    rules: tuple[SecurityRule, ...] = ()


@dataclass
class MachineSpec:
    key: str
    os_disk: DiskSpec
    data_disks: dict[int, DiskSpec] = field(default_factory=dict)
    limits: Limits | None = None  # the VM size's; None: the host's
    network: str | None = None  # the private network it joins (a pool's, a resource group's)
    inbound_ports: tuple[InboundPort, ...] = ()  # ports of the host that lead to the machine


@dataclass(frozen=True)
class ContainerRun:
    """How a command runs in a container: the image (from pull_image), the machine's
    directories bound in at their own paths (path, read-only), a read-only root, and the
    user (name or uid[:gid], looked up in the image; "" for root)."""
    image: ContainerImage
    binds: tuple[tuple[str, bool], ...] = ()
    read_only: bool = False
    user: str = ""


@dataclass
class CommandResult:
    exit_code: int
    stdout: bytes
    stderr: bytes
    timed_out: bool = False
    duration: float = 0.0
    out_of_memory: bool = False  # killed by the machine's memory limit


@dataclass(frozen=True)
class HostCapacity:
    """What one host offers machines, as it measured it."""
    host: str
    cores: int
    memory_mib: int
    free_disk_bytes: int


@dataclass(frozen=True)
class Inventory:
    """The machines and disks a provider holds, by key."""
    machines: frozenset[str]
    disks: frozenset[str]


class MachineError(Exception):
    """The runtime could not do what was asked; the message says why."""


class MachineProvider(ABC):
    mode: str
    capabilities: frozenset[str] = frozenset()
    # Where machines reach the service (None: as the host does, at the service's own address).
    service_address: str | None = None

    # disks ------------------------------------------------------------------------------------

    @abstractmethod
    def create_disk(self, disk: DiskSpec) -> None: ...

    @abstractmethod
    def delete_disk(self, key: str) -> None: ...

    @abstractmethod
    def snapshot_disk(self, disk: DiskSpec) -> list[str]:
        """Layers (bottom first) that hold the disk's content at this instant."""

    def ensure_layers(self, layers: list[str]) -> None:
        """The layers are on the host that will use them (pulled by content id if not);
        raises MachineError when one exists nowhere."""

    def replicate(self, layers: list[str], count: int) -> list[str]:
        """Place the layers on `count` hosts ahead of any machine (a gallery version's
        replicas) and name those hosts. One host has them already: nothing to do, and
        nothing is pretended."""
        return []

    def pull_image(self, key: str, reference: str, login: Login | None) -> ContainerImage:
        """The image on the host of machine `key`, pulled unless that host has it; raises
        MachineError saying why not (nothing half-made stays behind)."""
        raise MachineError("container images are not supported by this host's machines")

    # machines ---------------------------------------------------------------------------------

    @abstractmethod
    def start(self, machine: MachineSpec) -> None: ...

    @abstractmethod
    def stop(self, key: str) -> None: ...

    @abstractmethod
    def is_running(self, key: str) -> bool: ...

    @abstractmethod
    def delete_machine(self, key: str) -> None: ...

    def stop_all(self, keep_exits: bool = False) -> None:
        """Stop every machine (the service is shutting down); nothing to do by default.
        keep_exits: the service died without a word (a cluster host's agent went with it), so
        the machines stop as its crash would leave them on one host: their agents keep the
        exits they reported, and journal those of commands that end within their grace, for
        the next service (recorded_exits); then the machines stop."""
        return None

    def inventory(self) -> Inventory | None:
        """Every machine and disk this provider holds, running or not (None: it cannot tell,
        and nothing is reconciled)."""
        return None

    def on_machines_lost(self, listener: Callable[[list[str]], None]) -> None:
        """`listener(keys)` is called when machines are gone with their host (a cluster node
        that left); never on one host, where the machines go only with the service."""

    def address(self, key: str) -> str | None:
        """The machine's address on its private network (None: it shares the host's)."""
        return None

    def public_address(self, key: str) -> str | None:
        """Where the machine's inbound NAT ports listen when that is not the address its
        spec gave (on a cluster: its own host's); None: as given."""
        return None

    def open_gateway(self, port: int, target: tuple[str, int]) -> None:
        """Let machines reach the service's port `target` at service_address:port."""
        return None

    # commands and files -----------------------------------------------------------------------

    @abstractmethod
    def command_runner(self, key: str) -> CommandRunner:
        """Starts commands in a running machine without waiting for them (see commands.py)."""

    @abstractmethod
    def files(self, key: str) -> MachineFiles:
        """The machine's file service (see machine_files.py)."""

    def recorded_exits(self, key: str) -> dict[str, Exit]:
        """Exits of the machine's commands, by command id, as kept since the service last
        forgot them (empty: this provider keeps none)."""
        return {}

    def forget_recorded_exits(self, key: str) -> None:
        """The service recorded what `recorded_exits` gave."""

    def run(self, key: str, script: str, timeout: float | None = None, env: dict[str, str] | None = None,
            tail_bytes: int = RUN_TAIL_BYTES) -> CommandResult:
        """Run a shell script as root inside the machine and collect its output."""
        return self.run_argv(key, ["/bin/sh", "-c", script], timeout, env, tail_bytes)

    def run_argv(self, key: str, argv: list[str], timeout: float | None = None,
                 env: dict[str, str] | None = None, tail_bytes: int = RUN_TAIL_BYTES) -> CommandResult:
        """A command as root, waited for (killed after `timeout`), its output collected:
        through the command runner, its output kept on the machine's temporary disk until read.
        Only the last `tail_bytes` of each stream are read: a command's output may be of any
        size (a sparse file of a terabyte, say), and the service's memory is not."""
        started = time.monotonic()
        run_id = uuid.uuid4().hex
        place = f"{_RUN_DIR}/{run_id}"
        runner, machine_files = self.command_runner(key), self.files(key)
        machine_files.make_dirs(_RUN_DIR, mode=0o700)
        ended = threading.Event()
        outcome: list[Exit] = []

        def on_exit(result: Exit) -> None:
            outcome.append(result)
            ended.set()

        runner.run(f"run|{run_id}", argv, {**DEFAULT_ENV, **(env or {})}, "/", None, None, f"/mnt/{place}/stdout",
                   f"/mnt/{place}/stderr", on_exit, mkdirs=(f"/mnt/{place}",))
        timed_out = not ended.wait(timeout)
        if timed_out:
            runner.kill(f"run|{run_id}")
            ended.wait()  # the runner always reports
        try:
            out, err = (_tail(machine_files, f"{place}/{name}", tail_bytes) for name in ("stdout", "stderr"))
        finally:
            machine_files.remove_tree(place)
        return CommandResult(outcome[0].code, out, err, timed_out, time.monotonic() - started,
                             outcome[0].out_of_memory)

    # the host ---------------------------------------------------------------------------------

    def capacity(self) -> list[HostCapacity]:
        """Each host's cores, memory and free disk (one host here: this one)."""
        return [local_capacity("local", Path("/"))]


def _tail(machine_files: MachineFiles, rel: str, size: int) -> bytes:
    """The last `size` bytes of a file on the machine."""
    status, handle = machine_files.open_file(rel)
    with handle:
        handle.seek(max(0, status.size - size))
        return handle.read(size)


def local_capacity(name: str, disk: Path) -> HostCapacity:
    """This host, as its kernel reports it."""
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1 << 20)
    return HostCapacity(name, os.cpu_count() or 1, memory, shutil.disk_usage(disk).free)
