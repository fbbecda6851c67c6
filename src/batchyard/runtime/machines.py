"""Machines and their disks on this host.

The machine contract (`MachineProvider`, provider.py) is what the services use; the local
implementation here isolates each machine with Linux mount and PID namespaces over
overlay filesystems, holds it to its VM size with a cgroup (cgroups.py), filters its
system calls (seccomp.py) and gives it a network namespace on its own private network
(networks.py, reaching the service only through gateway.py).

Disks: a disk is a stack of read-only layers (bottom first) plus a writable layer of its
own. Creating a disk copies nothing; snapshotting freezes the writable layer into a new
immutable layer, so a snapshot costs what the disk changed since its base.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from abc import abstractmethod
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from . import linux, outbound, seccomp
from .cgroups import Cgroups, Limits
from .confined import remove_path
from .commands import AGENT_GRACE_SECONDS, AgentRunner, CommandRunner, Exit, SpawningRunner, SplitRunner
from .container_images import ContainerImage, ImageStore
from .oci_registry import Login, RegistryError
from .gateway import DatagramRelay, Relay, host_listener
from .layers import HOST_LAYER, LayerStore
from .machine_files import LocalFiles, MachineFiles
from .namespace_builder import NamespaceBuilder
from .networks import SERVICE_ADDRESS, Networks
from .provider import (DEFAULT_ENV, CONTAINERS, ISOLATION, LIMITS, NETWORKS, OVERLAY, SECCOMP, SNAPSHOTS,
                       ContainerRun, DiskSpec, HostCapacity, Inventory, MachineError, MachineProvider, MachineSpec,
                       local_capacity)
from .security_rules import admits
from .tunnels import Tunnel

_HERE = Path(__file__).resolve().parent
log = logging.getLogger("batchyard.runtime")


class HostProvider(MachineProvider):
    """Machines on this host: commands are processes here, the temporary disk a directory here."""

    capabilities = frozenset({SNAPSHOTS})

    def __init__(self) -> None:
        self._procs: dict[str, set[subprocess.Popen]] = {}
        self._runners: dict[str, CommandRunner] = {}
        self._lock = threading.Lock()

    def command_runner(self, key: str) -> CommandRunner:
        """Starts commands in a running machine without waiting for them (see commands.py)."""
        with self._lock:
            runner = self._runners.get(key)
            if runner is None:
                runner = self._runners[key] = self._make_runner(key)
            return runner

    def _make_runner(self, key: str) -> CommandRunner:
        return SpawningRunner(lambda argv, **kw: self.spawn(key, argv, **kw), lambda: self.temporary_disk(key))

    def _track(self, key: str, proc: subprocess.Popen) -> None:
        """Remember a machine's command, so stopping the machine ends it."""
        with self._lock:
            live = self._procs.setdefault(key, set())
            live.difference_update({p for p in live if p.poll() is not None})
            live.add(proc)

    def _kill_tracked(self, key: str) -> None:
        with self._lock:
            runner = self._runners.pop(key, None)
        if runner is not None:
            runner.close()  # each agent asked to end ends its commands at once (launcher.py)
        with self._lock:
            procs = self._procs.pop(key, set())
        for proc in procs:
            kill_group(proc)
        for proc in procs:
            proc.wait()

    @abstractmethod
    def spawn(self, key: str, argv: list[str], env: dict[str, str] | None = None, cwd: str = "/",
              uid: int | None = None, gid: int | None = None, stdout=None, stderr=None) -> subprocess.Popen: ...

    @abstractmethod
    def temporary_disk(self, key: str) -> Path:
        """The host directory that a machine on this host sees as `/mnt` (the runtime's own
        business: services reach it only through `files`)."""

    def files(self, key: str) -> MachineFiles:
        """The machine's file service, over its temporary disk (see machine_files.py)."""
        return LocalFiles(self.temporary_disk(key))

    def oom_kills(self, key: str) -> int:
        """How many processes the machine's memory limit has killed (0 without limits)."""
        return 0

    def capacity(self) -> list[HostCapacity]:
        return [local_capacity("local", self.capacity_disk)]

    capacity_disk = Path("/")  # where machines' disks live, for the free-disk figure
    machines_dir: Path | None = None  # a directory per machine and per disk, for those that keep them
    disks_dir: Path | None = None

    def inventory(self) -> Inventory | None:
        if self.machines_dir is None or self.disks_dir is None:
            return None
        return Inventory(_directory_names(self.machines_dir), _directory_names(self.disks_dir))


def _directory_names(parent: Path) -> frozenset[str]:
    """The subdirectories of `parent`, by name (a staging or doomed tree starts with a dot)."""
    return frozenset(p.name for p in parent.iterdir() if p.is_dir() and not p.name.startswith(".")) \
        if parent.is_dir() else frozenset()


def kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def remove_tree_atomically(path: Path, scratch: Path) -> None:
    """Rename first, so a half-deleted tree is never seen under its real name."""
    if path.exists():
        doomed = scratch / f"doomed-{path.name}-{time.time_ns()}"
        path.rename(doomed)
        remove_path(doomed, ignore_errors=True)


class NamespaceMachineProvider(HostProvider):
    """Each machine: a persistent mount namespace bound to a file (no process stays alive
    for an idle machine), whose root is the OS disk overlay."""

    mode = "namespaces"

    def __init__(self, root: Path, layers: LayerStore, cgroups: Cgroups | None = None, networks: bool = False,
                 outbound_nat: str = "off", tag: str = "0", tunnel: Tunnel | None = None,
                 registry_ca_bundle: str | None = None):
        super().__init__()
        self.root = root
        self.registry_ca_bundle = registry_ca_bundle  # what image pulls trust over HTTPS (None: the system's)
        self.layers = layers
        self.cgroups = cgroups
        if cgroups is not None:
            cgroups.remove_all()  # no machine runs yet: any there is from a run that crashed
        self._limits: dict[str, Limits] = {}  # running machines that have limits
        self._limited: set[str] = set()  # those whose cgroup exists (made with their first command)
        self._networked: set[str] = set()  # machines running in a network namespace of their own
        self._gateway: Relay | None = None
        self._inbound: dict[str, list[Relay | DatagramRelay]] = {}  # machine -> its inbound NAT relays
        self.disks_dir = root / "disks"
        self.machines_dir = root / "machines"
        self.ns_dir = root / "ns"
        self.empty_layer = root / "empty"
        for d in (self.disks_dir, self.machines_dir, self.ns_dir, self.empty_layer):
            d.mkdir(parents=True, exist_ok=True)
        self._remove_stale_namespace_files()
        self._make_ns_dir_private()
        self.host_root = self._mount_host_root()
        self.builder: NamespaceBuilder | None = None  # else each machine's namespace is built by mounter.py
        try:
            self.builder = NamespaceBuilder()  # after the host root: machines' layers lie under it
        except OSError as exc:
            log.warning("machines' namespaces are built by a process each: %s", exc)
        self.images = ImageStore(layers)
        # Closing a container's mount and removing its writable layer wait on the kernel
        # (an unmount waits for RCU): done here, never on a task's path.
        self.tidy = ThreadPoolExecutor(1, thread_name_prefix="container-tidy")
        self.seccomp_filter = root / "seccomp.bpf"
        self.seccomp_missing = seccomp.write_filter(self.seccomp_filter)  # why there is none, if so
        self.networks: Networks | None = None
        self.networks_missing: str | None = "switched off"
        self.outbound_missing: str | None = outbound.why_not(outbound_nat)  # why machines have no NAT, if so
        if networks:
            nat = outbound.OutboundNat(tag) if self.outbound_missing is None else None
            try:
                self.networks, self.networks_missing = Networks(self.ns_dir, self.machines_dir, nat, tunnel), None
                self.service_address = SERVICE_ADDRESS
                self.outbound_missing = self.outbound_missing or self.networks.outbound_missing
            except (OSError, ImportError) as exc:
                self.networks_missing = str(exc)
        self.capacity_disk = root
        self.capabilities = frozenset({ISOLATION, OVERLAY, SNAPSHOTS, CONTAINERS} | ({LIMITS} if cgroups else set())
                                      | ({SECCOMP} if not self.seccomp_missing else set())
                                      | ({NETWORKS} if self.networks is not None else set()))

    def _remove_stale_namespace_files(self) -> None:
        """A crash leaves the files namespaces were bound to (the bindings went with the
        service's mount namespace); none is in use before the service starts a machine."""
        for ns_file in self.ns_dir.iterdir():
            if not os.path.ismount(ns_file):
                ns_file.unlink(missing_ok=True)

    def _make_ns_dir_private(self) -> None:
        """Namespace files can only be bound on a private mount (as `ip netns` does)."""
        linux.mount(str(self.ns_dir), str(self.ns_dir), None, linux.MS_BIND)
        linux.mount("none", str(self.ns_dir), None, linux.MS_PRIVATE)

    def _mount_host_root(self) -> Path:
        """The host root as an overlay of its own. Overlay refuses a lower layer that lies
        inside another lower layer (our layers live under the host's `/`); presenting `/`
        through a read-only overlay gives it a root the layers do not lie under."""
        empty, host_root = self.root / "host-empty", self.root / "host-root"
        for d in (empty, host_root):  # mount points: private underneath too, as the data directory is
            d.mkdir(mode=0o700, exist_ok=True)
        linux.mount("tmpfs", str(empty), "tmpfs", linux.MS_RDONLY, "size=4k,mode=755")
        linux.mount("overlay", str(host_root), "overlay", linux.MS_RDONLY, f"lowerdir=/:{empty}")
        return host_root

    def _layer_path(self, layer: str) -> str:
        return str(self.host_root if layer == HOST_LAYER else self.layers.path(layer))

    # disks ------------------------------------------------------------------------------

    def _disk_dir(self, key: str) -> Path:
        return self.disks_dir / key

    def create_disk(self, disk: DiskSpec) -> None:
        for layer in disk.layers:
            if not self.layers.exists(layer):
                raise MachineError(f"layer {layer} is missing from the layer store")
        base = self._disk_dir(disk.key)
        (base / "upper").mkdir(parents=True, exist_ok=True)
        (base / "work").mkdir(parents=True, exist_ok=True)

    def delete_disk(self, key: str) -> None:
        remove_tree_atomically(self._disk_dir(key), self.layers.tmp)

    def snapshot_disk(self, disk: DiskSpec) -> list[str]:
        layer = self.layers.freeze(self._disk_dir(disk.key) / "upper")
        return disk.layers + ([layer] if layer else [])

    def _overlay_spec(self, disk: DiskSpec) -> dict:
        base = self._disk_dir(disk.key)
        lower = [self._layer_path(layer) for layer in reversed(disk.layers)] or [str(self.empty_layer)]
        return {"lower": lower, "upper": str(base / "upper"), "work": str(base / "work")}

    # machines ---------------------------------------------------------------------------

    def _ns_file(self, key: str) -> Path:
        return self.ns_dir / key

    def is_running(self, key: str) -> bool:
        return os.path.ismount(self._ns_file(key))

    def ensure_layers(self, layers: list[str]) -> None:
        missing = [layer for layer in layers if not self.layers.exists(layer)]
        if missing:
            raise MachineError(f"layers missing on this host: {', '.join(missing)}")

    def start(self, machine: MachineSpec) -> None:
        if self.is_running(machine.key):
            return
        try:
            self._start(machine)
        except BaseException:
            self.stop(machine.key)  # no half-made namespace, network or cgroup stays behind
            raise

    def _start(self, machine: MachineSpec) -> None:
        base = self.machines_dir / machine.key
        (base / "root").mkdir(parents=True, exist_ok=True)
        (base / "resource").mkdir(parents=True, exist_ok=True)
        limited = self._limit(machine)
        self._connect(machine)
        spec = {
            "cpu": linux.NAMESPACE_CPU,
            "root": str(base / "root"),
            "resource": str(base / "resource"),
            "os_disk": self._overlay_spec(machine.os_disk),
            "data_disks": [{"lun": lun, **self._overlay_spec(d)} for lun, d in sorted(machine.data_disks.items())],
            "meminfo": str(self._meminfo_file(machine.key)) if limited else None,
        }
        ns_file = self._ns_file(machine.key)
        ns_file.touch()
        if self.builder is not None:
            try:
                self.builder.build(spec, ns_file)
            except OSError as exc:
                raise MachineError(f"machine {machine.key} could not start: {exc}")
            return
        mounter = subprocess.Popen(
            [sys.executable, "-I", "-S", str(_HERE / "mounter.py"), json.dumps(spec)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        try:
            if mounter.stdout.readline().strip() != "ready":
                raise MachineError(f"machine {machine.key} could not start: {mounter.stderr.read().strip()}")
            linux.mount(f"/proc/{mounter.pid}/ns/mnt", str(ns_file), None, linux.MS_BIND)
        finally:
            mounter.stdin.close()
            mounter.wait()
            mounter.stdout.close()
            mounter.stderr.close()

    def stop(self, key: str) -> None:
        self._kill_tracked(key)
        linux.unmount_lazily(str(self._ns_file(key)))
        if self.cgroups is not None:
            with self._lock:
                had_limits = self._limits.pop(key, None) is not None
                self._limited.discard(key)
            if had_limits:
                self.cgroups.remove(key)
        if self.networks is not None:
            self._close_ports(key)
            with self._lock:
                self._networked.discard(key)
            self.networks.detach(key)

    # networks ---------------------------------------------------------------------------

    def _connect(self, machine: MachineSpec) -> None:
        if self.networks is None or machine.network is None:
            return
        try:
            self.networks.attach(machine.key, machine.network)
        except OSError as exc:
            raise MachineError(f"machine {machine.key} could not join its network: {exc}")
        with self._lock:
            self._networked.add(machine.key)
        self._forward_ports(machine)

    def address(self, key: str) -> str | None:
        return self.networks.address(key) if self.networks is not None else None

    def open_gateway(self, port: int, target: tuple[str, int]) -> None:
        if self.networks is not None and self._gateway is None:
            self._gateway = Relay(self.networks.listen(port), lambda: socket.create_connection(target, timeout=10),
                                  "gateway")

    def _forward_ports(self, machine: MachineSpec) -> None:
        """Inbound NAT: each host port relays to its port of the machine. A host port some
        other program holds cannot be had: the machine runs without it, as the log says."""
        address = self.networks.address(machine.key) if machine.key in self._networked else None
        if address is None:
            return
        relays = []
        for port in machine.inbound_ports:
            udp = port.protocol == "udp"
            kind = socket.SOCK_DGRAM if udp else socket.SOCK_STREAM
            try:
                listener = host_listener(port.host_address, port.frontend, kind)
            except OSError as exc:
                log.warning("machine %s: host port %s:%s/%s unavailable: %s", machine.key, port.host_address,
                            port.frontend, port.protocol, exc)
                continue
            def connect(backend=port.backend, kind=kind) -> socket.socket:
                return self.networks.connect(address, backend, kind=kind)
            relay = DatagramRelay if udp else Relay
            relays.append(relay(listener, connect, f"{port.frontend}/{port.protocol}->{machine.key}:{port.backend}",
                                lambda peer, rules=port.rules: admits(rules, peer)))
        with self._lock:
            self._inbound[machine.key] = relays

    def _close_ports(self, key: str) -> None:
        with self._lock:
            relays = self._inbound.pop(key, [])
        for relay in relays:
            relay.close()

    # limits -----------------------------------------------------------------------------

    def _meminfo_file(self, key: str) -> Path:
        return self.machines_dir / key / "meminfo"

    def _limit(self, machine: MachineSpec) -> bool:
        """Records the machine's limits; False when it runs unlimited. Its cgroup is made
        with its first command: a node that idles costs no cgroup (hundreds start at once)."""
        if self.cgroups is None or machine.limits is None:
            return False
        # The host's figures until the machine's agent writes its own: never an empty file,
        # and its block taken now, so a disk that fills later cannot refuse the agent's writes.
        self._meminfo_file(machine.key).write_bytes(Path("/proc/meminfo").read_bytes())
        with self._lock:
            self._limits[machine.key] = machine.limits
        return True

    def _cgroup_ready(self, key: str) -> bool:
        """True when the machine runs under its cgroup, made now if it is its first command."""
        with self._lock:
            limits = self._limits.get(key)
            if limits is None:
                return False
            if key not in self._limited:
                self.cgroups.create(key, limits)
                self._limited.add(key)
        return True

    def _enter_spec(self, key: str) -> dict:
        """What a launcher needs to enter the machine: its namespace, and its cgroup and
        meminfo when it has limits."""
        spec: dict = {"namespace": str(self._ns_file(key)),
                      "seccomp": None if self.seccomp_missing else str(self.seccomp_filter)}
        if key in self._networked:
            spec["network"] = str(self.networks.ns_file(key))
        if self._cgroup_ready(key):
            files = self.cgroups.memory_files(key)
            spec["cgroup"] = self.cgroups.procs_files(key)
            spec["meminfo"] = {"file": str(self._meminfo_file(key)), "limit": files.limit, "usage": files.usage,
                               "stat": files.stat}
        return spec

    def oom_kills(self, key: str) -> int:
        return self.cgroups.oom_kills(key) if key in self._limited else 0

    def temporary_disk(self, key: str) -> Path:
        return self.machines_dir / key / "resource"

    def delete_machine(self, key: str) -> None:
        self.stop(key)
        if self.networks is not None:
            self.networks.release(key)
        self._ns_file(key).unlink(missing_ok=True)
        remove_tree_atomically(self.machines_dir / key, self.layers.tmp)

    # containers -------------------------------------------------------------------------

    def pull_image(self, key: str, reference: str, login: Login | None) -> ContainerImage:
        try:
            return self.images.pull(reference, login, self.registry_ca_bundle)
        except (RegistryError, ValueError, OSError) as exc:
            raise MachineError(str(exc)) from None

    def _containers_dir(self, key: str) -> Path:
        """Where a machine's containers keep their writable layers, on this host beside it."""
        return self.machines_dir / key / "containers"

    def container_rootfs(self, key: str, command_id: str, run: ContainerRun) -> tuple[int, Path]:
        """A container's root filesystem: its image's layers under a writable layer of its
        own, as a detached mount (its file descriptor), and that layer's directory (the
        caller closes the one and removes the other when the command ends)."""
        for layer in run.image.layers:
            if not self.layers.exists(layer):
                raise MachineError(f"image {run.image.reference} is no longer on this host; pull it again")
        scratch = self._containers_dir(key) / hashlib.sha256(command_id.encode()).hexdigest()[:32]
        for sub in ("upper", "work"):
            (scratch / sub).mkdir(parents=True, exist_ok=True)
        lower = [str(self.layers.path(layer)) for layer in reversed(run.image.layers)] or [str(self.empty_layer)]
        try:
            return linux.detached_overlay(lower, str(scratch / "upper"), str(scratch / "work")), scratch
        except OSError as exc:
            remove_tree_atomically(scratch, self.layers.tmp)
            raise MachineError(f"the container's filesystem could not be made: {exc}") from None

    def start_agent(self, key: str, channel: socket.socket | None = None) -> subprocess.Popen:
        """The machine's agent (launcher.py); with `channel`, the one that runs its
        containers, their root filesystems sent through that socket."""
        if not self.is_running(key):
            raise MachineError(f"machine {key} is not running")
        # Each agent journals the exits it reports (launcher.py), for a restarted service.
        spec = {**self._enter_spec(key), "agent": True,
                "exits": [str(path) for path in self._exit_journal(key, containers=channel is not None)]}
        if channel is not None:
            spec["containers"] = channel.fileno()
        agent = subprocess.Popen(
            [sys.executable, "-I", "-S", str(_HERE / "launcher.py"), json.dumps(spec)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None,  # JSON lines, as bytes (orjson)
            start_new_session=True, pass_fds=(channel.fileno(),) if channel is not None else (),
        )
        self._track(key, agent)
        return agent

    def spawn(self, key, argv, env=None, cwd="/", uid=None, gid=None, stdout=None, stderr=None):
        if not self.is_running(key):
            raise MachineError(f"machine {key} is not running")
        spec = {**self._enter_spec(key), "argv": argv, "env": {**DEFAULT_ENV, **(env or {})},
                "cwd": cwd, "uid": uid, "gid": gid}
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", str(_HERE / "launcher.py"), json.dumps(spec)],
            stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr, start_new_session=True,
        )
        self._track(key, proc)
        return proc

    def _let_agents_go(self) -> None:
        """Every machine's agents let go at once, as the service's death lets them go on one
        host (CommandRunner.abandon): each keeps its journal, and they get the agents' grace
        together to journal what ends meanwhile. No runner is left for a stop to close (a
        close, or an idle close due meanwhile, would end the commands at once, their exits
        unjournaled); stop() kills the rest."""
        with self._lock:
            runners, self._runners = list(self._runners.values()), {}
        agents = [agent for runner in runners for agent in runner.abandon()]
        deadline = time.monotonic() + AGENT_GRACE_SECONDS
        for agent in agents:
            try:
                agent.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass  # killed with the machine's other processes

    def _make_runner(self, key: str) -> CommandRunner:
        return SplitRunner(AgentRunner(lambda: self.start_agent(key), oom_kills=lambda: self.oom_kills(key)),
                           ContainerRunner(self, key))

    def _exit_journal(self, key: str, containers: bool = False) -> tuple[Path, Path]:
        """An agent's record of the exits it reported (launcher.py): beside the machine's
        root, out of its commands' reach; the container agent keeps its own."""
        name = "container-exits" if containers else "exits"
        return self.machines_dir / key / f"{name}.0", self.machines_dir / key / f"{name}.1"

    def _exit_journals(self, key: str) -> tuple[Path, ...]:
        return self._exit_journal(key) + self._exit_journal(key, containers=True)

    def recorded_exits(self, key: str) -> dict[str, Exit]:
        exits = {}
        for path in self._exit_journals(key):
            try:
                lines = path.read_bytes().splitlines()
            except FileNotFoundError:
                continue
            for line in lines:
                try:
                    event = json.loads(line)
                    exits[str(event["id"])] = Exit(int(event["exit"]))
                except (ValueError, KeyError, TypeError):
                    continue  # a line cut short by a crash of the host
        return exits

    def forget_recorded_exits(self, key: str) -> None:
        for path in self._exit_journals(key):
            if path.exists():
                os.truncate(path, 0)

    def stop_all(self, keep_exits: bool = False) -> None:
        if keep_exits:
            self._let_agents_go()
        if self._gateway is not None:
            self._gateway.close()
        for ns_file in self.ns_dir.glob("*"):
            if not ns_file.name.endswith(".net"):
                self.stop(ns_file.name)
        if self.cgroups is not None:
            self.cgroups.close()
        if self.networks is not None:
            self.networks.close()
        if self.builder is not None:
            self.builder.close()


class ContainerRunner(AgentRunner):
    """Container commands, through the machine's container agent: each request is preceded
    by its root filesystem on the agent's socket. A container's writable layer is removed
    when its command ends (`--rm` is what Batch does anyway: a task's container never
    outlives it)."""

    # Each request's root filesystem goes on the socket at once, and the agent reads one
    # only after its line: lines held back by together() would leave the socket filling
    # with root filesystems the agent cannot take yet, until send_fds blocks under the lock.
    holds_lines = False

    def __init__(self, provider: NamespaceMachineProvider, key: str):
        super().__init__(self._start, oom_kills=lambda: provider.oom_kills(key))
        self._provider, self._key = provider, key
        self._channel: socket.socket | None = None
        self._rootfs: int | None = None  # the one to send with the request being written

    def _start(self) -> subprocess.Popen:
        ours, theirs = socket.socketpair()
        try:
            agent = self._provider.start_agent(self._key, theirs)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        if self._channel is not None:
            self._channel.close()
        self._channel = ours
        return agent

    def _before_request(self) -> None:
        socket.send_fds(self._channel, [b"r"], [self._rootfs])

    def close(self) -> None:
        super().close()
        with self._lock:
            if self._channel is not None:
                self._channel.close()
                self._channel = None

    def run(self, command_id, argv, env, cwd, uid, gid, stdout, stderr, on_exit, mkdirs=(), container=None) -> None:
        rootfs, scratch = self._provider.container_rootfs(self._key, command_id, container)
        tidy = self._provider.tidy

        def ended(outcome) -> None:
            on_exit(outcome)  # the task is done; its writable layer goes after, off this path
            tidy.submit(remove_tree_atomically, scratch, self._provider.layers.tmp)
        request = {"binds": [list(b) for b in container.binds], "read_only": container.read_only,
                   "user": container.user}
        try:
            with self._lock:  # the agent's lock is re-entrant: the socket and the request go in one order
                self._rootfs = rootfs
                super().run(command_id, argv, {**DEFAULT_ENV, **env}, cwd, uid, gid, stdout, stderr, ended, mkdirs,
                            request)
        except BaseException:
            tidy.submit(remove_tree_atomically, scratch, self._provider.layers.tmp)
            raise
        finally:
            self._rootfs = None
            tidy.submit(os.close, rootfs)  # the agent holds its own: closing ours unmounts nothing it needs


class UnavailableMachineProvider(HostProvider):
    """For hosts where machines cannot run: disks and snapshots still work as layers; any
    attempt to start a machine says why it cannot."""

    mode = "unavailable"

    def __init__(self, reason: str):
        super().__init__()
        self.reason = reason

    def _refuse(self, *_args, **_kwargs):
        raise MachineError(f"machines cannot run on this host: {self.reason}")

    def create_disk(self, disk: DiskSpec) -> None:
        pass

    def delete_disk(self, key: str) -> None:
        pass

    def snapshot_disk(self, disk: DiskSpec) -> list[str]:
        return list(disk.layers)

    start = spawn = temporary_disk = _refuse

    def stop(self, key: str) -> None:
        pass

    def is_running(self, key: str) -> bool:
        return False

    def delete_machine(self, key: str) -> None:
        pass
