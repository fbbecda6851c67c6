"""The machine contract (provider.py) on a Ray cluster: `batchyard serve --ray-address`.

The service (API, SQLite, scheduler) stays where it runs; machines run on the cluster's
nodes. Each Ray node gets one host agent (ray_agent.py), an actor pinned to that node by a
node-affinity strategy, which owns the node's host daemon: its own layer cache, machines
and command runner. This provider:

- places a machine where its disks already are, else by each node's room (its cores and
  memory as Ray reports them, overcommitted as the settings say, less the machines placed
  there): spread (the most room: a pool spreads over every node) or pack (the fullest node
  that still fits: whole nodes stay free), `--ray-placement`;
- before a machine starts on a node, pulls the layers the node lacks by content id from a
  node that has them, or from the service's own layer store; the receiving node stores a
  layer only if it hashes to its id (layers.py) and keeps it;
- starts commands without waiting, sent to each host in ordered batches (exits come back
  through one collector per agent), and reaches files through the agent (machine_files.py
  semantics, enforced on the host);
- makes machines as the local provider does (the host daemon runs one): held to their VM
  size, each on its private network, whose addresses it chooses here for every host
  (address_plan.py) and whose hosts it tells each other's tunnel ends (tunnels.py), so
  machines of one network reach each other across hosts; each host's hub relays the
  service's gateway to the service;
- watches the cluster: when a node leaves or its agent dies, the machines placed there are
  lost, reported once to `on_machines_lost` listeners; a node that comes (back) gets a new
  agent, which starts with no machine, so nothing is duplicated;
- after a crash, answers for the hosts as the local provider answers for its one: the
  machines and disks the live hosts hold (`inventory`), and the exits their agents
  journaled (`recorded_exits`). A host's agent dies with the service, its machines stop,
  and their journals stay on the host for the next service's agent there.

Placement is kept in `placement.json` (and its journal, journal.py) under the service's
runtime directory, so a restarted service finds its machines' hosts again.
"""

from __future__ import annotations

import io
import ipaddress
import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from .address_plan import AddressPlan
from .commands import CommandRunner, Exit
from .journal import JournaledDict
from .layers import HOST_LAYER, LayerStore
from .machine_files import FileStat, MachineFiles
from .networks import SERVICE_ADDRESS
from .provider import (SNAPSHOTS, DiskSpec, HostCapacity, Inventory, MachineError, MachineProvider,
                       MachineSpec)

log = logging.getLogger("batchyard.runtime")
WATCH_SECONDS = 0.5
DISK_SECONDS = 10  # how often hosts are asked for their free disk (a call to each, on the way of others)
MIB = 1 << 20
WRITE_PART = 4 * MIB  # a remote write sends the file in parts of this size
INVENTORY_SECONDS = 60  # for a host to say what it holds, at a start after a crash


class _Host:
    def __init__(self, node_id: str, actor, resources: dict, info: dict, address: str):
        self.node_id, self.actor, self.resources = node_id, actor, resources
        self.address = address  # the host's (Ray's node address), where inbound NAT ports listen
        self.tunnel = tuple(info["tunnel"]) if info.get("tunnel") else None  # (address, UDP port)
        self.capabilities = frozenset(info.get("capabilities", ()))
        self.layers: set[str] = set()  # layers known to be on the host
        self.used = (0, 0)  # cores and MiB its running machines hold
        # commands to start or kill, sent in order, many in one call (see _send_commands)
        self.outbox: list[tuple] = []
        self.outbox_ready = threading.Condition()
        self.pull_lock = threading.Lock()
        self.lost = False
        self.free_disk = 0  # bytes free where the host keeps its machines, as it last said
        self.disk_asked = float("-inf")  # when it was last asked


class RayProvider(MachineProvider):
    mode = "ray"

    def __init__(self, address: str, host_root: Path, state_dir: Path, service_layers: LayerStore,
                 pack: bool = False, overcommit: int = 1, cgroups: bool = True, networks: bool = True,
                 outbound_nat: str = "auto"):
        try:
            import ray
        except ImportError:
            raise MachineError("--ray-address needs Ray: pip install 'batchyard[ray]'") from None
        self.ray = ray
        ip = address.rsplit(":", 1)[0] if address != "auto" else None
        loopback = ip is not None and _is_loopback(ip)
        # Ray rewrites 127.0.0.1 to the host's outward address: a cluster bound to another
        # loopback address is joined from that address, or the driver finds no raylet.
        if ip is not None:
            _reachable(address)  # Ray itself would retry an unreachable address for ever
        try:
            ray.init(address=address, _node_ip_address=ip if loopback else None, logging_level=logging.WARNING,
                     log_to_driver=False, namespace="batchyard")
        except Exception as exc:  # Ray raises ConnectionError, ValueError, RuntimeError...
            raise MachineError(f"cannot join the Ray cluster at {address}: {exc}") from None
        self.host_root = host_root
        self.pack, self.overcommit = pack, overcommit
        self.service_layers = service_layers
        self.lock = threading.RLock()
        self.hosts: dict[str, _Host] = {}
        self.placement = JournaledDict(state_dir / "placement")  # machine or disk key -> node id
        self.disk_specs: dict[str, DiskSpec] = {}
        self.sizes: dict[str, tuple[str, tuple[int, int]]] = {}  # running machine -> its host, cores and MiB
        self.callbacks: dict[tuple[str, str], Callable[[Exit], None]] = {}
        self.lost_listeners: list[Callable[[list[str]], None]] = []
        self.host_options = {"cgroups": cgroups, "networks": networks, "outbound_nat": outbound_nat}
        self.service_address = SERVICE_ADDRESS if networks else None
        self.addresses = AddressPlan(state_dir)
        self.gateway: tuple[int, tuple[str, int]] | None = None  # (port, target) each host relays
        self._closing = threading.Event()
        self._refresh()
        threading.Thread(target=self._watch, daemon=True, name="ray-watch").start()

    # the cluster ---------------------------------------------------------------------------------

    def _refresh(self) -> None:
        """Agents for nodes that have none; hosts whose node left are lost."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
        from .ray_agent import HostAgent

        alive = {n["NodeID"]: n for n in self.ray.nodes() if n["Alive"]}
        joined = False
        for node_id, host in list(self.hosts.items()):
            if node_id not in alive and not host.lost:
                self._lose(host)
            elif not host.lost and time.monotonic() - host.disk_asked >= DISK_SECONDS:
                host.disk_asked = time.monotonic()
                try:
                    host.free_disk = self._call(host, "daemon", "free_disk")
                except (MachineError, OSError):
                    pass  # a host that does not answer is found out by its collector
        for node_id, node in alive.items():
            if node_id in self.hosts:
                continue
            options = {**self.host_options, "address": node["NodeManagerAddress"]}
            actor = HostAgent.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
                max_restarts=0).remote(str(self.host_root / node_id[:16]), options)
            try:
                info = self.ray.get(actor.describe.remote(), timeout=120)
            except Exception as exc:
                log.warning("no agent on Ray node %s: %s", node_id, exc)
                continue
            host = _Host(node_id, actor, node.get("Resources", {}), info, options["address"])
            if self.gateway is not None:
                self._open_gateway_on(host)
            with self.lock:
                self.hosts[node_id] = host
            joined = True
            threading.Thread(target=self._collect, args=(host,), daemon=True, name="ray-exits").start()
            threading.Thread(target=self._send_commands, args=(host,), daemon=True, name="ray-commands").start()
            log.info("Ray node %s joined with %s: %s", node_id, host.resources, info.get("note"))
        if joined:
            self._tell_peers()

    def _tell_peers(self) -> None:
        """Every host learns where the others' tunnel ends are (each leaves its own out)."""
        with self.lock:
            hosts = list(self.hosts.values())
        ends = [h.tunnel for h in hosts if h.tunnel is not None]
        for host in hosts:
            if host.tunnel is not None:
                try:
                    self._call(host, "daemon", "peers", ends)
                except (MachineError, OSError) as exc:
                    log.warning("host %s did not take its tunnel peers: %s", host.node_id, exc)

    @property
    def capabilities(self) -> frozenset[str]:
        """What every host enforces (a host without, say, cgroups makes it not hold)."""
        with self.lock:
            hosts = list(self.hosts.values())
        return frozenset.intersection(*(h.capabilities for h in hosts)) | {SNAPSHOTS} if hosts \
            else frozenset({SNAPSHOTS})

    def open_gateway(self, port: int, target: tuple[str, int]) -> None:
        """Each host's hub relays service_address:port to `target` (hosts that join later too)."""
        self.gateway = (port, target)
        for host in list(self.hosts.values()):
            self._open_gateway_on(host)

    def _open_gateway_on(self, host: _Host) -> None:
        try:
            self._call(host, "daemon", "gateway", *self.gateway)
        except (MachineError, OSError) as exc:
            log.warning("host %s has no gateway to the service: %s", host.node_id, exc)

    def _watch(self) -> None:
        while not self._closing.wait(WATCH_SECONDS):
            try:
                self._refresh()
            except Exception:
                log.exception("watching the Ray cluster failed")

    def _collect(self, host: _Host) -> None:
        """Exits of the commands on one host, to their callbacks; the agent's end is the host's loss."""
        while not host.lost and not self._closing.is_set():
            try:
                events = self.ray.get(host.actor.next_exits.remote(1.0))
            except Exception:
                events = [("gone",)]
            for event in events:
                if event[0] == "gone":
                    self._lose(host)
                    return
                key, command_id, code, oom = event
                self._deliver(key, command_id, Exit(code, oom))

    def _deliver(self, key: str, command_id: str, outcome: Exit) -> None:
        with self.lock:
            callback = self.callbacks.pop((key, command_id), None)
        if callback is not None:
            try:
                callback(outcome)
            except Exception:
                log.exception("exit callback failed")

    def _send_commands(self, host: _Host) -> None:
        """Commands to start and kill go to a host in one call per batch, each batch sent when
        the last was taken: Ray's cost is per call, so hundreds of tasks a second go in a
        few calls; and in order (a threaded actor may run two calls at once), so a kill
        never overtakes its run."""
        while not host.lost and not self._closing.is_set():
            with host.outbox_ready:
                if not host.outbox:
                    host.outbox_ready.wait(1.0)
                batch, host.outbox = host.outbox, []
            if not batch:
                continue
            try:
                self.ray.get(host.actor.commands.remote(batch))
            except self.ray.exceptions.RayError:
                pass  # the host is gone: its collector finds out and its commands are lost with it
            except Exception:  # never a hang: the commands that did not start fail
                log.exception("commands for host %s could not be sent", host.node_id)
                for command in batch:
                    if command[0] == "run":
                        self._deliver(command[1], command[2], Exit(1))

    def _queue_command(self, key: str, command: tuple) -> None:
        host = self._host(key)
        with host.outbox_ready:
            host.outbox.append(command)
            host.outbox_ready.notify()

    def _lose(self, host: _Host) -> None:
        with self.lock:
            if host.lost or self._closing.is_set():
                return  # (at shutdown, agents go with the service: no host is lost)
            host.lost = True
            self.hosts.pop(host.node_id, None)
            lost = [key for key, node in self.placement.items() if node == host.node_id and key in self.sizes]
            for key in [k for k, node in self.placement.items() if node == host.node_id]:
                self.placement.pop(key)
                self.sizes.pop(key, None)
            for pair in [p for p in self.callbacks if p[0] in lost]:
                del self.callbacks[pair]  # their attempts are requeued by the listeners
        log.warning("Ray node %s is gone with %d machines", host.node_id, len(lost))
        for listener in self.lost_listeners:
            try:
                listener(lost)
            except Exception:
                log.exception("a machines-lost listener failed")
        try:
            self.ray.kill(host.actor)
        except Exception:
            pass
        self._tell_peers()  # the others stop sending its machines' frames

    def on_machines_lost(self, listener: Callable[[list[str]], None]) -> None:
        self.lost_listeners.append(listener)

    def host_of(self, key: str) -> str | None:
        return self.placement.get(key)

    def _host(self, key: str) -> _Host:
        with self.lock:
            node = self.placement.get(key)
            host = self.hosts.get(node) if node else None
        if host is None:
            raise MachineError(f"machine {key} is on no live host")
        return host

    def _call(self, host: _Host, target, method: str, *args, timeout: float | None = None):
        try:
            kind, value = self.ray.get(host.actor.call.remote(target, method, args), timeout=timeout)
        except self.ray.exceptions.RayError as exc:
            raise MachineError(f"host {host.node_id} does not answer: {exc}") from None
        if kind == "err":
            raise value
        return value

    # placement -------------------------------------------------------------------------------------

    def _hold(self, key: str, host: _Host, size: tuple[int, int]) -> None:
        """The machine holds `size` of its host's room (until _release); under self.lock."""
        self._release(key)
        self.sizes[key] = (host.node_id, size)
        host.used = (host.used[0] + size[0], host.used[1] + size[1])

    def _release(self, key: str) -> None:
        node, size = self.sizes.pop(key, (None, (0, 0)))
        host = self.hosts.get(node)
        if host is not None:
            host.used = (host.used[0] - size[0], host.used[1] - size[1])

    def _choose(self, machine: MachineSpec) -> _Host:
        """Where its disks are, else by the hosts' room (see choose_host)."""
        with self.lock:
            for key in (machine.key, machine.os_disk.key):
                node = self.placement.get(key)
                if node in self.hosts:
                    return self.hosts[node]
            if not self.hosts:
                raise MachineError("the Ray cluster has no live node")
            rooms = {node_id: (int(h.resources.get("CPU", 0)) * self.overcommit - h.used[0],
                               int(h.resources.get("memory", 0)) // MIB * self.overcommit - h.used[1])
                     for node_id, h in self.hosts.items()}
            return self.hosts[choose_host(rooms, size_of(machine), self.pack)]

    def _ensure_on(self, host: _Host, layers: list[str]) -> None:
        """Pull what the host lacks, by content id, once per host."""
        wanted = [layer for layer in dict.fromkeys(layers) if layer != HOST_LAYER and layer not in host.layers]
        if not wanted:
            return  # known to be there: layers are immutable and a host never drops one
        with host.pull_lock:
            for layer in self._call(host, "daemon", "missing", wanted):
                data = self._layer_bytes(layer, exclude=host.node_id)
                try:
                    self.ray.get(host.actor.pull.remote(layer, data))
                except self.ray.exceptions.RayError as exc:
                    raise MachineError(f"layer {layer} could not reach host {host.node_id}: {exc}") from None
            host.layers.update(wanted)

    def _layer_bytes(self, layer: str, exclude: str) -> bytes:
        for other in list(self.hosts.values()):
            if other.node_id == exclude:
                continue
            try:
                if not self._call(other, "daemon", "missing", [layer]):
                    return self._call(other, "daemon", "export", layer)
            except (MachineError, OSError, KeyError):
                continue
        if self.service_layers.exists(layer):
            out = io.BytesIO()
            self.service_layers.export(layer, out)
            return out.getvalue()
        raise MachineError(f"layer {layer} is on no host")

    # disks ---------------------------------------------------------------------------------------------

    def create_disk(self, disk: DiskSpec) -> None:
        """Recorded here; made on a host with the first machine that uses it there."""
        with self.lock:
            self.disk_specs[disk.key] = disk
            node = self.placement.get(disk.key)
            host = self.hosts.get(node) if node else None
        if host is not None:
            self._call(host, "provider", "create_disk", disk)

    def delete_disk(self, key: str) -> None:
        with self.lock:
            self.disk_specs.pop(key, None)
            node = self.placement.pop(key, None)
            host = self.hosts.get(node) if node else None
        if host is not None:
            self._call(host, "provider", "delete_disk", key)

    def snapshot_disk(self, disk: DiskSpec) -> list[str]:
        with self.lock:
            node = self.placement.get(disk.key)
            host = self.hosts.get(node) if node else None
        if host is None:
            return list(disk.layers)  # never used on a host: nothing was written to it
        return self._call(host, "provider", "snapshot_disk", disk)

    def ensure_layers(self, layers: list[str]) -> None:
        """Checked on the host a machine starts on (start); here only that they exist somewhere."""

    def replicate(self, layers: list[str], count: int) -> list[str]:
        """A gallery version's replicas: its layers pulled now onto `count` hosts (those that
        lack the fewest, then those with the most free disk), in parallel, so machines
        started there later pull nothing."""
        wanted = [layer for layer in dict.fromkeys(layers) if layer != HOST_LAYER]
        with self.lock:
            hosts = list(self.hosts.values())
        if not hosts:
            raise MachineError("the Ray cluster has no live node")
        lacking = {h.node_id: len(self._call(h, "daemon", "missing", wanted)) for h in hosts}
        chosen = sorted(hosts, key=lambda h: (lacking[h.node_id], -h.free_disk, h.node_id))[:count]
        errors: list[Exception] = []

        def place(host: _Host) -> None:
            try:
                self._ensure_on(host, wanted)
            except Exception as exc:  # reported below, for the replica's state
                errors.append(exc)

        threads = [threading.Thread(target=place, args=(h,), daemon=True) for h in chosen]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0] if isinstance(errors[0], MachineError) else MachineError(str(errors[0]))
        return [h.node_id for h in chosen]

    # machines ---------------------------------------------------------------------------------------

    def start(self, machine: MachineSpec) -> None:
        host = self._choose(machine)
        machine = replace(machine, inbound_ports=tuple(replace(p, host_address=host.address)
                                                       for p in machine.inbound_ports))
        disks = [machine.os_disk, *machine.data_disks.values()]
        address = self.addresses.assign(machine.key, machine.network) \
            if machine.network is not None and self.service_address is not None else None
        with self.lock:
            self.placement.update({key: host.node_id for key in (machine.key, *(disk.key for disk in disks))})
            self._hold(machine.key, host, size_of(machine))
        try:
            self._ensure_on(host, [layer for disk in disks for layer in disk.layers])
            self._call(host, "daemon", "start", machine, address)
        except Exception as exc:
            with self.lock:
                self._release(machine.key)
            try:
                self._call(host, "provider", "stop", machine.key)
            except Exception:
                pass
            raise exc if isinstance(exc, MachineError) else MachineError(str(exc))

    def stop(self, key: str) -> None:
        with self.lock:
            node = self.placement.get(key)
            host = self.hosts.get(node) if node else None
            self._release(key)
            for pair in [p for p in self.callbacks if p[0] == key]:
                callback = self.callbacks.pop(pair)
                threading.Thread(target=callback, args=(Exit(137),), daemon=True).start()
        if host is not None:
            self._call(host, "provider", "stop", key)

    def is_running(self, key: str) -> bool:
        with self.lock:
            node = self.placement.get(key)
            host = self.hosts.get(node) if node else None
        return host is not None and bool(self._call(host, "provider", "is_running", key))

    def delete_machine(self, key: str) -> None:
        with self.lock:
            self._release(key)
            node = self.placement.pop(key, None)
            host = self.hosts.get(node) if node else None
            self.addresses.release(key)
        if host is not None:
            self._call(host, "provider", "delete_machine", key)

    def public_address(self, key: str) -> str | None:
        with self.lock:
            node = self.placement.get(key)
            host = self.hosts.get(node) if node else None
        return host.address if host is not None else None

    def address(self, key: str) -> str | None:
        return self.addresses.address(key) if self.service_address is not None else None

    def stop_all(self, keep_exits: bool = False) -> None:
        self._closing.set()
        for host in list(self.hosts.values()):
            try:
                self._call(host, "provider", "stop_all")
            except Exception:
                pass

    # after a crash ----------------------------------------------------------------------------------

    def inventory(self) -> Inventory | None:
        """What the live hosts hold (None: a node Ray counts alive has no agent yet, or a host
        cannot say). A machine placed on a node that is not in the cluster now is not held:
        Ray gives a node that comes back a new id, and a new agent, so its machines are lost.
        A host's copy of a key placed on another host is not counted (the placement's host
        answers for it); one the placement does not name (a crash between the two) is placed
        on its host, so that deleting it reaches it."""
        with self.lock:
            hosts = [host for host in self.hosts.values() if not host.lost]
        alive = {node["NodeID"] for node in self.ray.nodes() if node["Alive"]}
        if alive - {host.node_id for host in hosts}:
            log.warning("Ray nodes without an agent yet: nothing is reconciled at this start")
            return None
        machines: set[str] = set()
        disks: set[str] = set()
        for host in hosts:
            try:
                held = self._call(host, "provider", "inventory", timeout=INVENTORY_SECONDS)
            except Exception as exc:  # noqa: BLE001 - whatever the host raised, it cannot say
                log.warning("host %s cannot say what it holds: %s", host.node_id, exc)
                return None
            if held is None:
                return None
            machines |= self._placed_here(host, held.machines)
            disks |= self._placed_here(host, held.disks)
        return Inventory(frozenset(machines), frozenset(disks))

    def _placed_here(self, host: _Host, keys: frozenset[str]) -> set[str]:
        """Those of `keys` placed on `host`, the unplaced ones placed there first."""
        with self.lock:
            for key in keys:
                if key not in self.placement:
                    self.placement[key] = host.node_id
            return {key for key in keys if self.placement.get(key) == host.node_id}

    def recorded_exits(self, key: str) -> dict[str, Exit]:
        """The exits the machine's agent journaled on its host (none when the host is gone or
        cannot answer: its tasks are requeued, as a lost host's are)."""
        try:
            return self._call(self._host(key), "provider", "recorded_exits", key)
        except Exception as exc:  # noqa: BLE001 - whatever the host raised, its exits are not known
            log.warning("the exits of machine %s cannot be read: %s", key, exc)
            return {}

    def forget_recorded_exits(self, key: str) -> None:
        try:
            self._call(self._host(key), "provider", "forget_recorded_exits", key)
        except Exception as exc:  # noqa: BLE001 - a journal left is forgotten at the next start
            log.warning("the exits of machine %s cannot be forgotten: %s", key, exc)

    # commands and files -------------------------------------------------------------------------------

    def command_runner(self, key: str) -> CommandRunner:
        return _RemoteRunner(self, key)

    def files(self, key: str) -> MachineFiles:
        return _RemoteFiles(self, key)

    # the hosts --------------------------------------------------------------------------------------------

    def capacity(self) -> list[HostCapacity]:
        with self.lock:
            hosts = list(self.hosts.values())
        return [HostCapacity(h.node_id, int(h.resources.get("CPU", 0)), int(h.resources.get("memory", 0)) // MIB,
                             h.free_disk) for h in hosts]

    def machines_on(self, node_id: str) -> list[str]:
        with self.lock:
            return [k for k, n in self.placement.items() if n == node_id and k in self.sizes]


class _RemoteRunner(CommandRunner):
    def __init__(self, provider: RayProvider, key: str):
        self.provider, self.key = provider, key

    def run(self, command_id, argv, env, cwd, uid, gid, stdout, stderr, on_exit, mkdirs=(), container=None) -> None:
        if container is not None:
            raise OSError("containers do not run on Ray cluster hosts yet")
        self.provider._host(self.key)  # a machine on no live host raises here, before any callback is kept
        with self.provider.lock:
            self.provider.callbacks[(self.key, command_id)] = on_exit
        self.provider._queue_command(self.key, ("run", self.key, command_id,
                                                (argv, env, cwd, uid, gid, stdout, stderr, tuple(mkdirs))))

    def kill(self, command_id: str) -> None:
        try:
            self.provider._queue_command(self.key, ("kill", self.key, command_id))
        except MachineError:
            pass

    def close(self) -> None:
        pass


class _RemoteFiles(MachineFiles):
    """A machine's file service on its host, reached through the host's agent."""

    def __init__(self, provider: RayProvider, key: str):
        self.provider, self.key = provider, key

    def _files(self, method: str, *args):
        return self.provider._call(self.provider._host(self.key), ("files", self.key), method, *args)

    def _daemon(self, method: str, *args):
        return self.provider._call(self.provider._host(self.key), "daemon", method, self.key, *args)

    def make_dirs(self, rel, uid=None, gid=None, mode=None):
        self._files("make_dirs", rel, uid, gid, mode)

    def make_tree(self, dirs):
        self._files("make_tree", list(dirs))

    def write(self, rel, chunks, uid=None, gid=None, mode=0o644):
        # Made (empty) first, so a file that cannot be made fails before the source is read;
        # then sent a part at a time (never the whole file in memory), the mode given last.
        self._daemon("write", rel, b"", uid, gid, 0o600)
        part = bytearray()
        for chunk in chunks:
            part += chunk
            if len(part) >= WRITE_PART:
                self._daemon("append", rel, bytes(part))
                part.clear()
        if part:
            self._daemon("append", rel, bytes(part))
        self._daemon("chmod", rel, mode)

    def read(self, rel):
        yield self._daemon("read", rel)

    def open_file(self, rel):
        status: FileStat = self._daemon("file_status", rel)
        return status, _RemoteHandle(lambda start, size: self._daemon("file_range", rel, start, size))

    def walk_files(self, rel, limit=10000):
        return self._files("walk_files", rel, limit)

    def remove_tree(self, rel):
        self._files("remove_tree", rel)

    def list(self, root, recursive=False):
        return self._files("list", root, recursive)

    def stat(self, root, parts):
        return self._files("stat", root, parts)

    def open(self, root, parts):
        status: FileStat = self._daemon("open_status", root, list(parts))
        return status, _RemoteHandle(lambda start, size: self._daemon("read_range", root, list(parts), start, size))

    def delete(self, root, parts, recursive=False, protected=()):
        self._files("delete", root, parts, recursive, tuple(protected))


class _RemoteHandle(io.RawIOBase):
    """A file on a host, read a range at a time."""

    def __init__(self, read_range: Callable[[int, int], bytes]):
        self._read_range, self._offset = read_range, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        self._offset = offset if whence == 0 else self._offset + offset
        return self._offset

    def read(self, size: int = -1) -> bytes:
        data = self._read_range(self._offset, size if size >= 0 else 1 << 30)
        self._offset += len(data)
        return data


def size_of(machine: MachineSpec) -> tuple[int, int]:
    """(cores, MiB) the machine holds of its host: its VM size's."""
    return (machine.limits.cores, machine.limits.memory_mib) if machine.limits is not None else (1, 0)


def choose_host(rooms: dict[str, tuple[int, int]], size: tuple[int, int], pack: bool) -> str:
    """The host for a machine of `size` (cores, MiB), given each host's room left. Spread:
    the host with the most cores left (then memory); pack: the fullest host that still fits
    it, so whole hosts stay free. With no host that fits, the one with the most room."""
    most = max(rooms, key=lambda n: (rooms[n], n))
    if not pack:
        return most
    fitting = [n for n, (cores, memory) in rooms.items() if cores >= size[0] and memory >= size[1]]
    return min(fitting, key=lambda n: (rooms[n], n)) if fitting else most


def _reachable(address: str) -> None:
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=10).close()
    except (OSError, ValueError) as exc:
        raise MachineError(f"cannot join the Ray cluster at {address}: {exc}") from None


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
