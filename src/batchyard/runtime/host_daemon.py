"""One host's machines, for a host agent of a cluster (ray_agent.py): a process of its own,
started single-threaded so that it can take a private mount namespace (which a Ray worker,
already running threads, cannot), holding this host's layer cache and a local provider
(machines.py or the directory fallback) that it serves over a socket to its agent. Its
machines are the local provider's: held to their VM size (cgroups), each in a network
namespace on its private network, whose link here is joined to the same network on the
other hosts by a tunnel (tunnels.py), with the service's gateway and outbound NAT in this
host's hub. Its cgroups, hub and NAT uplink are named after its own directory, so several
hosts of one machine (a test cluster) never share them.

Messages are pickled tuples on a `multiprocessing.connection.Connection` between the agent
and its own child on the same host:
  request  (request id, target, method, args)  target: "provider", "layers", or
           ("files", machine key) / ("runner", machine key)
  answer   ("ok", request id, value) | ("err", request id, exception)
  event    ("exit", machine key, command id, code, out of memory)
Runner calls are answered inline, in order (a kill never overtakes its run); everything
else runs on a small thread pool. When the agent goes (the socket closes), or the node's
raylet does (a worker may outlive a raylet that was killed), every machine stops and the
process ends: a host's machines never outlive its agent or its Ray node. The agent gone
with the service, the machines' command agents keep their exit journals, so the next
service finds the exits this one never recorded (`recorded_exits`), as on one host.

A daemon holds a lock on its directory for as long as it lives. One killed outright (SIGKILL,
the kernel's OOM killer) stops nothing: its machines' cgroups and its NAT table and uplink
stay on the host, named after a directory no later daemon takes (Ray gives a node that comes
back a new id). So each daemon, when it starts, takes back what the dead daemons of its
sibling directories left.
"""

from __future__ import annotations

import fcntl
import io
import json
import logging
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection, wait
from pathlib import Path

log = logging.getLogger("batchyard.host")


class Daemon:
    def __init__(self, conn: Connection, root: Path, options: dict):
        from .host import choose_provider, enter_private_mount_namespace, tag
        from .layers import LayerStore
        from . import tunnels

        namespaces = enter_private_mount_namespace()  # before any thread
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.lock = claim(root)
        reclaim_dead_siblings(root)
        self.layers = LayerStore(root / "layers")
        fakechroot = os.environ.get("BATCHYARD_FAKECHROOT") or _which("fakechroot")
        no_tunnel = tunnels.why_not() if options["networks"] else "switched off"
        tunnel = tunnels.Tunnel(options["address"], tag(root)) if no_tunnel is None else None
        self.provider, self.note = choose_provider(root, self.layers, namespaces, fakechroot,
                                                   cgroups=options["cgroups"], networks=options["networks"],
                                                   outbound_nat=options["outbound_nat"], tunnel=tunnel)
        if no_tunnel is not None and options["networks"]:
            self.note += f"; NO networks across hosts: {no_tunnel}"
        self.networks = getattr(self.provider, "networks", None)
        self.tunnel = tunnel if self.networks is not None else None
        self.conn = conn
        self.raylet = options.get("raylet_fd")  # readable once the node's raylet has ended
        self.lost = False  # the node's raylet went: nothing more is sent
        self.send_lock = threading.Lock()
        self.pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="host")

    def send(self, message: tuple) -> None:
        with self.send_lock:
            if not self.lost:
                self.conn.send(message)

    def serve(self) -> None:
        tunnel = self.tunnel.endpoint if self.tunnel is not None else None
        self.send(("ok", 0, {"mode": self.provider.mode, "note": self.note, "tunnel": tunnel,
                             "capabilities": sorted(self.provider.capabilities)}))
        try:
            while True:
                if self.raylet is not None and self.raylet in wait([self.conn, self.raylet]):
                    # The host is lost: the service requeues what ran here, so the ends of
                    # the commands stopped now are not theirs to report.
                    log.warning("the node's raylet is gone: its machines stop")
                    with self.send_lock:
                        self.lost = True
                        self.conn.close()
                    break
                try:
                    request = self.conn.recv()
                except (EOFError, OSError):
                    break
                target = request[1]
                if isinstance(target, tuple) and target[0] == "runner":
                    self.handle(request)
                else:
                    self.pool.submit(self.handle, request)
        finally:
            # The agent gone (with the service, a crash or not), the journals stay for the
            # next service's agent here; the
            # raylet gone, the host is lost and its machines are not run again.
            self.provider.stop_all(keep_exits=not self.lost)

    def handle(self, request: tuple) -> None:
        request_id, target, method, args = request
        try:
            value = getattr(self, f"do_{method}")(*args) if target == "daemon" else \
                getattr(self._target(target), method)(*self._arguments(target, method, args))
            answer = ("ok", request_id, value)
        except Exception as exc:  # the agent raises it where it was asked
            answer = ("err", request_id, exc)
        try:
            self.send(answer)
        except Exception as exc:  # an answer that cannot be pickled is an error too
            self.send(("err", request_id, RuntimeError(f"{method}: {exc}")))

    def _target(self, target):
        if target == "provider":
            return self.provider
        if target == "layers":
            return self.layers
        kind, key = target
        return self.provider.files(key) if kind == "files" else self.provider.command_runner(key)

    def _arguments(self, target, method: str, args: tuple) -> tuple:
        if isinstance(target, tuple) and target[0] == "runner" and method == "run":
            key = target[1]
            command_id = args[0]

            def on_exit(outcome) -> None:
                self.send(("exit", key, command_id, outcome.code, outcome.out_of_memory))
            return (*args[:8], on_exit, tuple(args[8]))  # mkdirs follows the callback
        return args

    # what only the daemon does -------------------------------------------------------------

    def do_start(self, machine, address: tuple[int, int] | None) -> None:
        """A machine's disks and the machine, in one round trip; `address` (subnet, host) is
        its address on its network, chosen by the service for every host at once."""
        if address is not None and self.networks is not None and machine.network is not None:
            self.networks.reserve(machine.key, machine.network, *address)
        for disk in (machine.os_disk, *machine.data_disks.values()):
            self.provider.create_disk(disk)
        self.provider.start(machine)

    def do_peers(self, peers: list[tuple[str, int]]) -> None:
        """The other hosts' tunnel ends, as the cluster now has them."""
        if self.tunnel is not None:
            self.tunnel.set_peers(peers)

    def do_gateway(self, port: int, target: tuple[str, int]) -> None:
        self.provider.open_gateway(port, tuple(target))

    def do_missing(self, layers: list[str]) -> list[str]:
        return [layer for layer in layers if not self.layers.exists(layer)]

    def do_export(self, layer: str) -> bytes:
        out = io.BytesIO()
        self.layers.export(layer, out)
        return out.getvalue()

    def do_receive(self, layer: str, data: bytes) -> str:
        """A layer pulled by content id; the pull is logged (pulls.log), to show each is pulled once."""
        received = self.layers.receive(layer, io.BytesIO(data))
        with open(self.root / "pulls.log", "a") as log_file:
            log_file.write(f"{layer}\n")
        return received

    def do_read_range(self, key: str, root: str, parts: list[str], start: int, size: int) -> bytes:
        _status, handle = self.provider.files(key).open(root, parts)
        with handle:
            handle.seek(start)
            return handle.read(size)

    def do_read(self, key: str, rel: str) -> bytes:
        return b"".join(self.provider.files(key).read(rel))

    def do_write(self, key: str, rel: str, data: bytes, uid, gid, mode: int) -> None:
        self.provider.files(key).write(rel, [data], uid, gid, mode)

    def do_append(self, key: str, rel: str, data: bytes) -> None:
        self.provider.files(key).append(rel, [data])

    def do_chmod(self, key: str, rel: str, mode: int) -> None:
        status, handle = self.provider.files(key).open_file(rel)
        with handle:
            os.fchmod(handle.fileno(), mode)

    def do_file_status(self, key: str, rel: str):
        status, handle = self.provider.files(key).open_file(rel)
        handle.close()
        return status

    def do_file_range(self, key: str, rel: str, start: int, size: int) -> bytes:
        _status, handle = self.provider.files(key).open_file(rel)
        with handle:
            handle.seek(start)
            return handle.read(size)

    def do_open_status(self, key: str, root: str, parts: list[str]):
        status, handle = self.provider.files(key).open(root, parts)
        handle.close()
        return status

    def do_machines(self) -> list[str]:
        return sorted(p.name for p in getattr(self.provider, "machines_dir", Path("/nonexistent")).glob("*"))

    def do_free_disk(self) -> int:
        return self.provider.capacity()[0].free_disk_bytes


LOCK = "daemon.lock"


def claim(root: Path) -> int:
    """This daemon's hold on its directory: an flock the kernel drops when the process ends,
    however it ends. (A daemon of the same directory still ending is waited for; a lock
    file that a sibling's reclaim removed meanwhile is made again.)"""
    while True:
        fd = os.open(root / LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if os.path.samestat(os.fstat(fd), os.stat(root / LOCK, follow_symlinks=False)):
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


def reclaim_dead_siblings(root: Path) -> list[str]:
    """The host's state that daemons of the other directories beside `root` left when they
    died without stopping: their machines' cgroups, and their outbound NAT table and
    uplink. A directory whose lock is held has a live daemon and is left alone; one whose
    daemon is gone loses its lock file once reclaimed, so it is looked at once. (Its files
    stay: they may hold disks of VMs the service still keeps.) Returns the directories
    reclaimed."""
    from . import cgroups, outbound
    from .host import tag

    reclaimed = []
    for sibling in sorted(root.parent.iterdir()):
        if sibling == root or not (sibling / LOCK).is_file():
            continue
        try:
            fd = os.open(sibling / LOCK, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue  # another daemon starting here reclaimed it first
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)  # its daemon lives
            continue
        try:
            name = tag(sibling)
            backend, _ = cgroups.detect(f"batchyard-{name}")
            if backend is not None:
                backend.remove_all()
                backend.close()
            if outbound.why_not("on") is None:
                outbound.OutboundNat(name).remove_stale()
            (sibling / LOCK).unlink()
            reclaimed.append(sibling.name)
        except Exception as exc:  # noqa: BLE001 - a sibling's leftovers never keep this daemon from starting
            log.warning("cannot take back what the daemon of %s left: %s", sibling, exc)
        finally:
            os.close(fd)
    return reclaimed


def _which(name: str) -> str | None:
    for folder in os.environ.get("PATH", "/usr/bin:/bin").split(":"):
        path = os.path.join(folder, name)
        if os.access(path, os.X_OK):
            return path
    return None


def main() -> None:
    fd, root, options = int(sys.argv[1]), Path(sys.argv[2]), json.loads(sys.argv[3])
    Daemon(Connection(fd), root, options).serve()


if __name__ == "__main__":
    main()
