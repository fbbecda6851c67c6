"""File operations the service (as root) does inside a tree that a machine can change: a
machine's temporary disk. A command in the machine may have replaced any directory or file
there with a symbolic link to anywhere on the host, so every step is taken from a directory
descriptor with O_NOFOLLOW: nothing here ever follows a link, and a link where a directory
or file should be is an error (ELOOP or ENOTDIR), never a way out.

`base` is the trusted root (the temporary disk's host directory, which the machine cannot
replace: it sees it as its /mnt mount); `rel` is a path below it.
"""

from __future__ import annotations

import errno
import itertools
import os
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# What reaching an entry that went, or changed kind, since it was listed gives: gone
# (ENOENT), a link (ELOOP), a FIFO without a writer (ENXIO), not a directory (ENOTDIR).
CHANGED = (errno.ENOENT, errno.ELOOP, errno.ENXIO, errno.ENOTDIR)


def parts_of(rel: str | Path) -> list[str]:
    parts = [p for p in str(rel).split("/") if p not in ("", ".")]
    if any(p == ".." or "\x00" in p for p in parts):
        raise OSError(errno.EACCES, f"{rel} leaves its directory")
    return parts


@contextmanager
def directory(base: Path, rel: str | Path = "", create: bool = False, uid: int | None = None,
              gid: int | None = None, mode: int = 0o755) -> Iterator[int]:
    """A descriptor of base/rel, each step opened without following links; with `create`,
    missing directories are made (and, with `uid`, given to that user)."""
    fd = os.open(base, _DIR_FLAGS)
    try:
        for name in parts_of(rel):
            try:
                child = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                try:
                    os.mkdir(name, mode, dir_fd=fd)
                except FileExistsError:
                    pass  # made meanwhile; the open below checks what it is
                child = os.open(name, _DIR_FLAGS, dir_fd=fd)
                if uid is not None:
                    os.fchown(child, uid, gid if gid is not None else -1)
            os.close(fd)
            fd = child
        yield fd
    finally:
        os.close(fd)


def open_file(base: Path, rel: str | Path, flags: int, uid: int | None = None, gid: int | None = None,
              mode: int = 0o644) -> int:
    """A descriptor of the file base/rel (directories made as needed when creating)."""
    parts = parts_of(rel)
    if not parts:
        raise OSError(errno.EISDIR, "no file named")
    creating = bool(flags & os.O_CREAT)
    with directory(base, "/".join(parts[:-1]), create=creating, uid=uid, gid=gid) as parent:
        # O_NONBLOCK: a command may leave a FIFO where a file is expected, and opening one
        # waits for the other end (forever, the thread with it); this way it opens at once
        # (to read) or fails at once (ENXIO, to write), and is refused below.
        try:
            fd = os.open(parts[-1], flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, mode, dir_fd=parent)
        except OSError as exc:
            if exc.errno == errno.ENXIO:
                raise OSError(errno.EINVAL, f"{rel} is not a regular file") from None
            raise
    try:
        mode_found = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode_found):  # (opened to read: to write, the open itself says EISDIR)
            raise IsADirectoryError(errno.EISDIR, f"{rel} is a directory")
        if not stat.S_ISREG(mode_found):
            raise OSError(errno.EINVAL, f"{rel} is not a regular file")
        if not flags & os.O_NONBLOCK:
            os.set_blocking(fd, True)
        if creating and uid is not None:
            os.fchown(fd, uid, gid if gid is not None else -1)
    except BaseException:
        os.close(fd)
        raise
    return fd


def make_dirs(base: Path, rel: str | Path, uid: int | None = None, gid: int | None = None,
              mode: int | None = None) -> None:
    """base/rel made as needed; with `mode`, the last directory gets it (the umask aside)."""
    with directory(base, rel, create=True, uid=uid, gid=gid) as fd:
        if mode is not None:
            os.fchmod(fd, mode)


def remove_tree(base: Path, rel: str | Path) -> None:
    """rmtree of base/rel, immune to links anywhere on the way (missing is fine)."""
    parts = parts_of(rel)
    if not parts:
        raise OSError(errno.EPERM, "refusing to remove the base itself")
    try:
        with directory(base, "/".join(parts[:-1])) as parent:
            try:
                info = os.lstat(parts[-1], dir_fd=parent)
            except FileNotFoundError:
                return
            if stat.S_ISDIR(info.st_mode):
                remove_tree_at(parent, parts[-1])
            else:
                os.unlink(parts[-1], dir_fd=parent)
    except (FileNotFoundError, NotADirectoryError):
        return


_WALK_FLAGS = _DIR_FLAGS | os.O_NONBLOCK
# How long remove_tree_at goes on with a tree something keeps adding to (a tree of a
# million entries goes in less, here).
REMOVE_SECONDS = 30.0


def walk(root: int) -> Iterator[tuple[tuple[str, ...], int, list[str], list[str]]]:
    """os.walk, top-down, of the tree below the open directory `root`, for a tree a machine
    changes while it is walked: (parts from root, the directory's descriptor, dirnames,
    filenames) for each directory, its subdirectories in sorted order, depth first. Names
    are sorted as os.walk leaves them for a caller that sorts (links to directories among
    the dirnames, as there); a caller prunes by removing names from dirnames. A directory
    is entered only if it is a real one, reached again from `root` one name at a time
    without following a link (O_NONBLOCK: nor waiting on a FIFO), and still the one that
    was listed; one that went or changed meanwhile is left out. No recursion and two
    descriptors at a time, however deep the tree."""
    pending: list[tuple[tuple[str, ...], tuple[int, int] | None]] = [((), None)]
    while pending:
        parts, listed = pending.pop()
        try:
            fd = _open_below(root, parts)
        except OSError as exc:
            if exc.errno in CHANGED:
                continue
            raise
        try:
            status = os.fstat(fd)
            if listed is not None and (status.st_dev, status.st_ino) != listed:
                continue
            dirnames, filenames = [], []
            with os.scandir(fd) as entries:
                for entry in entries:
                    try:
                        is_dir = entry.is_dir()
                    except OSError:
                        is_dir = False
                    (dirnames if is_dir else filenames).append(entry.name)
            dirnames.sort()
            filenames.sort()
            yield parts, fd, dirnames, filenames
            below = []
            for name in dirnames:
                try:
                    st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                except OSError:
                    continue
                if stat.S_ISDIR(st.st_mode):
                    below.append((parts + (name,), (st.st_dev, st.st_ino)))
            pending.extend(reversed(below))
        finally:
            os.close(fd)


def _open_below(root: int, parts: tuple[str, ...]) -> int:
    fd = os.dup(root)
    for name in parts:
        try:
            child = os.open(name, _WALK_FLAGS, dir_fd=fd)
        finally:
            os.close(fd)
        fd = child
    return fd


def remove_tree_at(parent: int | None, name: str) -> None:
    """Removes the directory `name` (in the directory `parent`; None: the current one) and
    everything in it, following no link, with two directories open at most however deep the
    tree goes: a subdirectory of a subdirectory is moved up into the tree's top, where it is
    emptied in its turn. (shutil.rmtree recurses, one frame and one descriptor a level: a
    tree a task made 1,000 deep raised RecursionError, which no `ignore_errors` catches.)
    A directory on another filesystem inside the tree stops it (EXDEV): nothing is removed
    beyond the tree's own filesystem. So does one still being written to past
    REMOVE_SECONDS (EBUSY): a process a task left behind that makes directories as fast as
    they go would hold the removal, and whoever waits for it, for ever."""
    top = os.open(name, _DIR_FLAGS, dir_fd=parent)
    try:
        device = os.fstat(top).st_dev
        names = (f".removing-{n}" for n in itertools.count())
        deadline = time.monotonic() + REMOVE_SECONDS
        while subdirs := _remove_all_but_directories(top):
            if time.monotonic() > deadline:
                raise OSError(errno.EBUSY, f"{name} is still being written to: the rest of it is left")
            for subdir in subdirs:
                try:
                    fd = os.open(subdir, _DIR_FLAGS, dir_fd=top)
                except FileNotFoundError:
                    continue
                try:
                    if os.fstat(fd).st_dev != device:
                        raise OSError(errno.EXDEV, f"{subdir} is another filesystem's: it is not removed")
                    for inner in _remove_all_but_directories(fd):
                        _move_up(fd, inner, top, names)
                finally:
                    os.close(fd)
                _remove_empty(top, subdir)
    finally:
        os.close(top)
    os.rmdir(name, dir_fd=parent)


def remove_path(path: Path, ignore_errors: bool = False) -> None:
    """remove_tree_at for a path of the service's own (its last step not followed if a link:
    a link is removed, not what it names); a missing path is no error."""
    try:
        info = os.lstat(path)
        if stat.S_ISDIR(info.st_mode):
            parent = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                remove_tree_at(parent, path.name)
            finally:
                os.close(parent)
        else:
            os.unlink(path)
    except FileNotFoundError:
        return
    except OSError:
        if not ignore_errors:
            raise


def _remove_all_but_directories(fd: int) -> list[str]:
    """Unlinks every entry of the directory but its subdirectories, which it names."""
    subdirs = []
    with os.scandir(fd) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                subdirs.append(entry.name)
                continue
            try:
                os.unlink(entry.name, dir_fd=fd)
            except FileNotFoundError:
                pass
    return subdirs


def _move_up(fd: int, name: str, top: int, names: Iterator[str]) -> None:
    for new_name in names:
        try:
            os.rename(name, new_name, src_dir_fd=fd, dst_dir_fd=top)
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):  # the name is taken in the top: the next
                raise


def _remove_empty(top: int, name: str) -> None:
    try:
        os.rmdir(name, dir_fd=top)
    except FileNotFoundError:
        pass
    except OSError as exc:
        if exc.errno != errno.ENOTEMPTY:  # something came in meanwhile: the top's next round takes it
            raise
