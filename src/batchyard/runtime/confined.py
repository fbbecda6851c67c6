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
import os
import shutil
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


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
        fd = os.open(parts[-1], flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=parent)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, f"{rel} is not a regular file")
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
                shutil.rmtree(parts[-1], dir_fd=parent)
            else:
                os.unlink(parts[-1], dir_fd=parent)
    except (FileNotFoundError, NotADirectoryError):
        return


def check_real_dirs(base: Path, rel: str | Path) -> Path:
    """base/rel, after checking that no step of it is a link (raises OSError otherwise)."""
    with directory(base, rel):
        pass
    return base.joinpath(*parts_of(rel))
