"""An in-memory implementation of the machine contract (provider.py), for tests of the
rules (allocation, scheduling) that need no real machine: no root, no process, no disk.

A machine is a record; its temporary disk is a dictionary (`MemoryFiles`); a command ends,
on a timer, with the exit code and after the time that the first matching `Script` rule
gives (by default at once, with 0). What the commands were and when they ran is kept in
`commands`, so tests can check ordering and overlap.
"""

from __future__ import annotations

import errno
import fnmatch
import io
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .commands import KILLED, CommandRunner, Exit
from .machine_files import FileStat, MachineFiles, Protected
from .provider import SNAPSHOTS, DiskSpec, HostCapacity, Inventory, MachineError, MachineProvider, MachineSpec
from .confined import parts_of


@dataclass(frozen=True)
class Script:
    """Commands whose command line matches `pattern` (fnmatch) exit with `code` after `seconds`."""
    pattern: str
    code: int = 0
    seconds: float = 0.0
    stdout: bytes = b""


@dataclass
class Ran:
    """One command as the fake ran it."""
    machine: str
    command_id: str
    command_line: str
    started: float
    ended: float | None = None
    code: int | None = None


class MemoryFiles(MachineFiles):
    """A temporary disk in a dictionary: directories and files with owners and modes; no links."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.dirs: dict[tuple[str, ...], int] = {(): 0o755}
        self.data: dict[tuple[str, ...], tuple[bytes, int, float]] = {}  # content, mode, mtime
        self.owners: dict[tuple[str, ...], tuple[int | None, int | None]] = {}

    def _status(self, path: tuple[str, ...]) -> FileStat:
        if path in self.dirs:
            return FileStat(stat.S_IFDIR | self.dirs[path], 0, 0.0, 0.0, 0, 0, hash(path) & 0xFFFF)
        if path in self.data:
            content, mode, mtime = self.data[path]
            return FileStat(stat.S_IFREG | mode, len(content), mtime, mtime, int(mtime * 1e9), 0,
                            hash(path) & 0xFFFF)
        raise FileNotFoundError(errno.ENOENT, "/".join(path))

    def make_dirs(self, rel, uid=None, gid=None, mode=None):
        parts = tuple(parts_of(rel))
        with self._lock:
            for i in range(1, len(parts) + 1):
                if parts[:i] in self.data:
                    raise NotADirectoryError(errno.ENOTDIR, rel)
                if parts[:i] not in self.dirs:
                    self.dirs[parts[:i]] = 0o755
                    self.owners[parts[:i]] = (uid, gid)
            if mode is not None:
                self.dirs[parts] = mode

    def write(self, rel, chunks, uid=None, gid=None, mode=0o644):
        parts = tuple(parts_of(rel))
        if not parts:
            raise IsADirectoryError(errno.EISDIR, rel)
        self.make_dirs("/".join(parts[:-1]), uid, gid)
        content = b"".join(chunks)
        with self._lock:
            if parts in self.dirs:
                raise IsADirectoryError(errno.EISDIR, rel)
            self.data[parts] = (content, mode, time.time())
            self.owners[parts] = (uid, gid)

    def append(self, rel: str, content: bytes) -> None:
        parts = tuple(parts_of(rel))
        with self._lock:
            old, mode, _ = self.data.get(parts, (b"", 0o644, 0.0))
            self.data[parts] = (old + content, mode, time.time())

    def read(self, rel):
        parts = tuple(parts_of(rel))
        with self._lock:
            if parts not in self.data:
                raise FileNotFoundError(errno.ENOENT, rel)
            content = self.data[parts][0]
        yield content

    def open_file(self, rel):
        parts = tuple(parts_of(rel))
        with self._lock:
            status = self._status(parts)
            if status.is_dir:
                raise IsADirectoryError(errno.EISDIR, rel)
            return status, io.BytesIO(self.data[parts][0])

    def walk_files(self, rel, limit=10000):
        prefix = tuple(parts_of(rel))
        with self._lock:
            if prefix not in self.dirs:
                raise FileNotFoundError(errno.ENOENT, rel)
            return sorted("/".join(p[len(prefix):]) for p in self.data if p[:len(prefix)] == prefix)[:limit + 1]

    def remove_tree(self, rel):
        prefix = tuple(parts_of(rel))
        if not prefix:
            raise Protected(errno.EPERM, "refusing to remove the base itself")
        with self._lock:
            for table in (self.dirs, self.data, self.owners):
                for path in [p for p in table if p[:len(prefix)] == prefix]:
                    del table[path]

    def list(self, root, recursive=False):
        prefix = tuple(parts_of(root))
        with self._lock:
            if prefix not in self.dirs:
                raise FileNotFoundError(errno.ENOENT, root)
            out = []
            for path in [*self.dirs, *self.data]:
                inner = path[len(prefix):]
                if path[:len(prefix)] == prefix and inner and (recursive or len(inner) == 1):
                    out.append(("/".join(inner), self._status(path)))
            return out

    def stat(self, root, parts):
        with self._lock:
            return self._status(tuple(parts_of(root)) + tuple(parts))

    def open(self, root, parts):
        path = tuple(parts_of(root)) + tuple(parts)
        with self._lock:
            status = self._status(path)
            if status.is_dir:
                raise IsADirectoryError(errno.EISDIR, "a directory")
            return status, io.BytesIO(self.data[path][0])

    def delete(self, root, parts, recursive=False, protected=()):
        if not parts or "/".join(parts) in protected:
            raise Protected(errno.EPERM, "kept by the service")
        path = tuple(parts_of(root)) + tuple(parts)
        with self._lock:
            self._status(path)
            if path in self.data:
                del self.data[path]
                return
            inside = [p for p in [*self.dirs, *self.data] if p[:len(path)] == path and p != path]
            if inside and not recursive:
                raise OSError(errno.ENOTEMPTY, "not empty")
        self.remove_tree("/".join(path))


class _FakeRunner(CommandRunner):
    def __init__(self, provider: "FakeProvider", key: str):
        self.provider, self.key = provider, key
        self._lock = threading.Lock()
        self._live: dict[str, tuple[threading.Timer, Callable[[Exit], None], Ran]] = {}

    def run(self, command_id, argv, env, cwd, uid, gid, stdout, stderr, on_exit, mkdirs=(), container=None) -> None:
        if not self.provider.is_running(self.key):
            raise MachineError(f"machine {self.key} is not running")
        if container is not None:
            raise OSError("the in-memory fake runs no containers")
        files = self.provider.files(self.key)
        for path in mkdirs:
            files.make_dirs(path.removeprefix("/mnt/"), uid, gid)
        line = " ".join(argv[2:] if argv[:2] == ["/bin/sh", "-c"] else argv)
        rule = self.provider.rule_for(line)
        files.write(stdout.removeprefix("/mnt/"), [rule.stdout], uid, gid)
        files.write(stderr.removeprefix("/mnt/"), [], uid, gid)
        ran = Ran(self.key, command_id, line, time.monotonic())
        self.provider.commands.append(ran)
        timer = threading.Timer(rule.seconds, self._end, (command_id, rule.code))
        timer.daemon = True
        with self._lock:
            self._live[command_id] = (timer, on_exit, ran)
        timer.start()

    def _end(self, command_id: str, code: int) -> None:
        with self._lock:
            entry = self._live.pop(command_id, None)
        if entry is None:
            return
        _, on_exit, ran = entry
        ran.ended, ran.code = time.monotonic(), code
        on_exit(Exit(code))

    def kill(self, command_id: str) -> None:
        with self._lock:
            entry = self._live.get(command_id)
        if entry is not None:
            entry[0].cancel()
            self._end(command_id, KILLED)

    def close(self) -> None:
        with self._lock:
            ids = list(self._live)
        for command_id in ids:
            self.kill(command_id)


@dataclass
class FakeProvider(MachineProvider):
    """Machines in memory on as many fake hosts as `hosts` lists."""
    scripts: list[Script] = field(default_factory=list)
    hosts: list[HostCapacity] = field(default_factory=lambda: [HostCapacity("fake", 64, 256 * 1024, 1 << 40)])
    mode = "fake"
    capabilities = frozenset({SNAPSHOTS})

    def __post_init__(self) -> None:
        self.disks: dict[str, list[str]] = {}
        self.machines: dict[str, MachineSpec] = {}
        self.running: set[str] = set()
        self.disks_of: dict[str, MemoryFiles] = {}  # machine -> its temporary disk
        self.runners: dict[str, _FakeRunner] = {}
        self.commands: list[Ran] = []
        self.failing_starts: set[str] = set()  # patterns of machine keys whose start fails
        self.lost_listeners: list[Callable[[list[str]], None]] = []
        self._lock = threading.RLock()

    def end(self, ran: Ran, code: int = 0) -> None:
        """Ends a running command now, as if it exited with `code`, on the caller's thread (for
        tests that put events in an order)."""
        self.command_runner(ran.machine)._end(ran.command_id, code)

    def rule_for(self, command_line: str) -> Script:
        return next((s for s in self.scripts if fnmatch.fnmatchcase(command_line, s.pattern)), Script("*"))

    def create_disk(self, disk: DiskSpec) -> None:
        with self._lock:
            self.disks.setdefault(disk.key, list(disk.layers))

    def delete_disk(self, key: str) -> None:
        with self._lock:
            self.disks.pop(key, None)

    def snapshot_disk(self, disk: DiskSpec) -> list[str]:
        return list(self.disks.get(disk.key, disk.layers))

    def start(self, machine: MachineSpec) -> None:
        with self._lock:
            if machine.key in self.running:
                return
            if any(fnmatch.fnmatchcase(machine.key, pattern) for pattern in self.failing_starts):
                raise MachineError(f"machine {machine.key} could not start (scripted)")
            self.machines[machine.key] = machine
            self.disks_of.setdefault(machine.key, MemoryFiles())
            self.running.add(machine.key)

    def stop(self, key: str) -> None:
        with self._lock:
            self.running.discard(key)
            runner = self.runners.pop(key, None)
        if runner is not None:
            runner.close()

    def is_running(self, key: str) -> bool:
        return key in self.running

    def inventory(self) -> Inventory:
        with self._lock:
            return Inventory(frozenset(self.disks_of), frozenset(self.disks))

    def delete_machine(self, key: str) -> None:
        self.stop(key)
        with self._lock:
            self.machines.pop(key, None)
            self.disks_of.pop(key, None)

    def command_runner(self, key: str) -> CommandRunner:
        with self._lock:
            if key not in self.running:
                raise MachineError(f"machine {key} is not running")
            return self.runners.setdefault(key, _FakeRunner(self, key))

    def files(self, key: str) -> MachineFiles:
        with self._lock:
            if key not in self.disks_of:
                raise MachineError(f"machine {key} does not exist")
            return self.disks_of[key]

    def capacity(self) -> list[HostCapacity]:
        return list(self.hosts)

    def on_machines_lost(self, listener: Callable[[list[str]], None]) -> None:
        self.lost_listeners.append(listener)

    def lose(self, keys: list[str]) -> None:
        """As a cluster host that leaves: the machines are gone, their commands never report."""
        with self._lock:
            for key in keys:
                self.running.discard(key)
                self.machines.pop(key, None)
                self.disks_of.pop(key, None)
                runner = self.runners.pop(key, None)
                if runner is not None:
                    for timer, _callback, _ran in runner._live.values():
                        timer.cancel()
        for listener in self.lost_listeners:
            listener(list(keys))

