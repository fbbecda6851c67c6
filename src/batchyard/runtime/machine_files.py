"""A machine's file service: everything the services do in a machine's tree (its temporary
disk, the machine's /mnt), without a host path. Part of the machine contract (provider.py):
a provider hands one out per machine (`MachineProvider.files(key)`), wherever the machine
runs; `LocalFiles` is the one for a directory on this host.

Paths are relative to the temporary disk and use '/' ("batch/tasks/startup/stdout.txt");
'..' and NUL bytes are refused (see confined.parts_of). Two kinds of operation:

- confined ones (make_dirs, write, read, open_file, walk_files, remove_tree), for the service's own
  work in the tree: no symbolic link is ever followed, and a link where a directory or
  file should be is an error (confined.py);
- browsing ones (list, stat, open, delete), for Azure's file API, which reads a task's files
  as the task left them: inside `root`, links that stay inside are followed, a link that
  leads outside raises `LeavesTree`, and every final open walks from a descriptor of the
  root without following links, so a link swapped in after the check is not followed either.
"""

from __future__ import annotations

import errno
import io
import os
import stat
from abc import ABC, abstractmethod
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from . import confined

_NOFOLLOW_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | os.O_NOFOLLOW
CHUNK = 1 << 16


class LeavesTree(OSError):
    """The path leads, through a symbolic link, outside the directory it was asked in."""


class NotRegular(OSError):
    """Neither a regular file nor a directory (a FIFO, socket or device)."""


class Protected(OSError):
    """A path the service keeps (the root itself, or one the caller named) cannot be removed."""


@dataclass(frozen=True)
class FileStat:
    """What the services need of a file's status; plain values, so it travels between hosts."""
    mode: int
    size: int
    mtime: float
    ctime: float
    mtime_ns: int
    dev: int
    ino: int

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)

    @property
    def is_file(self) -> bool:
        return stat.S_ISREG(self.mode)

    @classmethod
    def of(cls, st: os.stat_result) -> "FileStat":
        return cls(st.st_mode, st.st_size, st.st_mtime, st.st_ctime, st.st_mtime_ns, st.st_dev, st.st_ino)


class MachineFiles(ABC):
    """The file service of one machine (paths relative to its temporary disk)."""

    # confined: the service's own work ---------------------------------------------------------

    @abstractmethod
    def make_dirs(self, rel: str, uid: int | None = None, gid: int | None = None, mode: int | None = None) -> None:
        """Directories as needed, new ones owned by uid:gid; with `mode`, the last one gets it."""

    def make_tree(self, dirs: Iterable[tuple[str, int | None]]) -> None:
        """Several directories, each (rel, mode) made as make_dirs makes one; one request
        where the machine is on another host."""
        for rel, mode in dirs:
            self.make_dirs(rel, mode=mode)

    @abstractmethod
    def write(self, rel: str, chunks: Iterable[bytes], uid: int | None = None, gid: int | None = None,
              mode: int = 0o644) -> None:
        """The file made (or emptied) and filled from `chunks`, owned by uid:gid, with `mode`."""

    @abstractmethod
    def read(self, rel: str) -> Iterator[bytes]:
        """A regular file's bytes, in chunks."""

    @abstractmethod
    def open_file(self, rel: str) -> tuple[FileStat, io.RawIOBase]:
        """A regular file opened for reading (read, seek, close) with its status, for streaming
        it out (an output file's upload) a block at a time."""

    @abstractmethod
    def walk_files(self, rel: str, limit: int = 10000) -> list[str]:
        """Regular files below rel (relative to it), never through a link; at most about `limit`."""

    @abstractmethod
    def remove_tree(self, rel: str) -> None:
        """rel and everything below it; missing is fine."""

    # browsing: Azure's file API ----------------------------------------------------------------

    @abstractmethod
    def list(self, root: str, recursive: bool = False) -> list[tuple[str, FileStat]]:
        """(name below root, status) of each entry; links that stay inside are listed with
        their target's status and not descended; links that leave, dangling links and names
        that are not UTF-8 are left out."""

    @abstractmethod
    def stat(self, root: str, parts: list[str]) -> FileStat:
        """Status of root/parts (links inside followed)."""

    @abstractmethod
    def open(self, root: str, parts: list[str]) -> tuple[FileStat, io.RawIOBase]:
        """A regular file opened for reading (seek, read, close) with its status."""

    @abstractmethod
    def delete(self, root: str, parts: list[str], recursive: bool = False,
               protected: Collection[str] = ()) -> None:
        """A file, a link (never its target) or a directory (empty, or with recursive all of it)."""


class LocalFiles(MachineFiles):
    """The file service of a directory on this host (a machine's temporary disk, or the
    service's own output storage)."""

    def __init__(self, base: Path):
        self.base = Path(os.path.realpath(base))  # the trusted root; the machine sees it as /mnt

    # confined ----------------------------------------------------------------------------------

    def make_dirs(self, rel, uid=None, gid=None, mode=None):
        confined.make_dirs(self.base, rel, uid, gid, mode)

    def write(self, rel, chunks, uid=None, gid=None, mode=0o644):
        fd = confined.open_file(self.base, rel, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, uid, gid, mode=mode)
        with open(fd, "wb") as out:
            for chunk in chunks:
                out.write(chunk)
            os.fchmod(out.fileno(), mode)

    def read(self, rel):
        with open(confined.open_file(self.base, rel, os.O_RDONLY), "rb") as handle:
            while chunk := handle.read(CHUNK):
                yield chunk

    def append(self, rel: str, chunks: Iterable[bytes]) -> None:
        """More bytes at the end of an existing regular file (a remote write, a part at a time)."""
        with open(confined.open_file(self.base, rel, os.O_WRONLY | os.O_APPEND), "wb") as out:
            for chunk in chunks:
                out.write(chunk)

    def open_file(self, rel):
        fd = confined.open_file(self.base, rel, os.O_RDONLY)
        try:
            status = FileStat.of(os.fstat(fd))
        except BaseException:
            os.close(fd)
            raise
        return status, open(fd, "rb", buffering=0)

    def walk_files(self, rel, limit=10000):
        found = []
        with confined.directory(self.base, rel) as root:
            for parts, fd, _subdirs, filenames in confined.walk(root):
                for name in filenames:
                    try:
                        if not stat.S_ISLNK(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode):
                            found.append("/".join((*parts, name)))
                    except OSError:
                        pass  # gone meanwhile
                if len(found) > limit:
                    break
        return sorted(found)

    def remove_tree(self, rel):
        confined.remove_tree(self.base, rel)

    # browsing ----------------------------------------------------------------------------------

    def _root(self, root: str) -> str:
        """The root, which must hold no link itself (a task that replaced its own directory
        with one is refused, not followed)."""
        path = os.path.join(self.base, *confined.parts_of(root))
        real = os.path.realpath(path)
        if real != os.path.abspath(path):
            raise LeavesTree(errno.EXDEV, "the directory is a symbolic link")
        return real

    def _parent_dir(self, root: str, inner: list[str]):
        """A descriptor of the directory holding inner[-1] (of the root itself when inner is
        empty), reached from the base without following any link: the root's own steps too,
        for a directory above it may have been swapped for a link since _root looked."""
        return confined.directory(self.base, "/".join([*confined.parts_of(root), *inner[:-1]]))

    def _locate(self, root: str, parts: list[str], follow_last: bool = True) -> tuple[str, list[str]]:
        """(real root, components of the real target below it); a link that leads outside is
        refused. With follow_last=False the last component itself is not resolved."""
        root_real = self._root(root)
        if not parts:
            return root_real, []
        if follow_last:
            target = os.path.realpath(os.path.join(root_real, *parts))
        else:
            target = os.path.join(os.path.realpath(os.path.join(root_real, *parts[:-1])), parts[-1])
        if not _contained(target, root_real):
            raise LeavesTree(errno.EXDEV, "the path leads through a symbolic link to outside the directory")
        inner = os.path.relpath(target, root_real)
        return root_real, [] if inner == "." else inner.split(os.sep)

    def list(self, root, recursive=False):
        root_real = self._root(root)
        out: list[tuple[str, FileStat]] = []
        with confined.directory(self.base, root) as top:
            pending = [(os.dup(top), "")]
        try:
            while pending:
                fd, prefix = pending.pop()
                try:
                    with os.scandir(fd) as entries:
                        found = list(entries)
                except OSError:
                    found = []  # gone or unreadable meanwhile: list what can be listed
                for entry in found:
                    name = prefix + entry.name
                    try:
                        name.encode("utf-8")
                        st = entry.stat(follow_symlinks=False)
                    except (UnicodeEncodeError, OSError):
                        continue
                    if stat.S_ISLNK(st.st_mode):
                        target = os.path.realpath(os.path.join(root_real, name))
                        if not _contained(target, root_real):
                            continue
                        try:
                            out.append((name, self._stat_inside(root, os.path.relpath(target, root_real))))
                        except OSError:
                            pass  # dangling, or changed meanwhile
                        continue  # not descended: links could loop
                    out.append((name, FileStat.of(st)))
                    if recursive and stat.S_ISDIR(st.st_mode):
                        try:
                            pending.append((os.open(entry.name, _NOFOLLOW_DIR, dir_fd=fd), name + "/"))
                        except OSError:
                            pass
                os.close(fd)
        finally:
            for fd, _ in pending:
                os.close(fd)
        return out

    def stat(self, root, parts):
        _, inner = self._locate(root, parts)
        return self._stat_inside(root, "/".join(inner))

    def _stat_inside(self, root: str, rel: str) -> FileStat:
        """What the real path rel (no link on it, as _locate resolved it) below the root is."""
        inner = confined.parts_of(rel)
        with self._parent_dir(root, inner) as fd:
            st = os.stat(inner[-1], dir_fd=fd, follow_symlinks=False) if inner else os.fstat(fd)
        if stat.S_ISLNK(st.st_mode):  # a link swapped in after it was resolved
            raise FileNotFoundError(errno.ENOENT, "no such file")
        return FileStat.of(st)

    def open(self, root, parts):
        _, inner = self._locate(root, parts)
        if not inner:
            raise IsADirectoryError(errno.EISDIR, "a directory")
        try:  # from the base, following nothing, never waiting on a FIFO (confined.open_file)
            handle = confined.open_file(self.base, "/".join([*confined.parts_of(root), *inner]), os.O_RDONLY)
        except OSError as exc:
            if exc.errno == errno.EINVAL:  # a FIFO, a socket, a device
                raise NotRegular(errno.EINVAL, "not a regular file") from None
            raise
        return FileStat.of(os.fstat(handle)), open(handle, "rb", buffering=0)

    def delete(self, root, parts, recursive=False, protected=()):
        if not parts or "/".join(parts) in protected:
            raise Protected(errno.EPERM, "kept by the service")
        root_real, inner = self._locate(root, parts, follow_last=False)
        if not inner or "/".join(inner) in protected:
            raise Protected(errno.EPERM, "kept by the service")
        with self._parent_dir(root, inner) as fd:
            st = os.stat(inner[-1], dir_fd=fd, follow_symlinks=False)
            if not stat.S_ISDIR(st.st_mode):
                os.unlink(inner[-1], dir_fd=fd)
            elif recursive:
                confined.remove_tree_at(fd, inner[-1])  # descriptor-based: links inside are removed, not followed
            else:
                os.rmdir(inner[-1], dir_fd=fd)


def _contained(path: str, root_real: str) -> bool:
    return path == root_real or path.startswith(root_real.rstrip(os.sep) + os.sep)


