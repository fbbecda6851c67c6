"""Files of the data directory are the service's user's alone: directories 0700, files 0600.

The process umask is left alone on purpose: this process also builds the machines' file
trees (layers, disks, the temporary disk), which must keep an ordinary Linux system's modes
for the unprivileged task user inside them, and every command a machine runs inherits the
umask. Those trees sit below 0700 directories, out of reach of other local users; what the
service writes for itself is created private here instead."""

from __future__ import annotations

import os
import stat
from pathlib import Path

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
# Below these (relative to the data directory) live machines' file trees and mount points:
# their own modes are the machines' business, and a walk must not enter a mounted tree.
MACHINE_TREES = ("runtime",)


def private_dir(path: Path) -> Path:
    """`path` 0700, and any missing parents made 0700 too."""
    missing = []
    here = path
    while not here.exists():
        missing.append(here)
        here = here.parent
    for directory in reversed(missing):
        directory.mkdir(mode=PRIVATE_DIR, exist_ok=True)
    path.chmod(PRIVATE_DIR)
    return path


def private_opener(path: str, flags: int) -> int:
    """For open(..., opener=private_opener): a file it creates is 0600 from the first byte."""
    return os.open(path, flags, PRIVATE_FILE)


def write_private(path: Path, data: bytes) -> None:
    """Atomically replaces `path` with `data`, readable by this user only."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    with open(tmp, "wb", opener=private_opener) as f:
        f.write(data)
    tmp.replace(path)


def tighten(data_dir: Path) -> None:
    """Take group and other bits off everything the service keeps for itself, and off the
    directories that hold the machines' trees (data directories from before this rule)."""
    if not data_dir.exists():
        return
    private_dir(data_dir)
    for root, dirs, files in os.walk(data_dir):
        here = Path(root)
        if here == data_dir:
            for tree in MACHINE_TREES:
                if tree in dirs:
                    dirs.remove(tree)
                    _tighten_machine_tree_roots(data_dir / tree)
        for name in dirs + files:
            _strip_group_and_other(here / name)


def _tighten_machine_tree_roots(tree: Path) -> None:
    """The tree's directory and its first level (layers, disks, machines...), not what is below."""
    _strip_group_and_other(tree)
    for child in tree.iterdir():
        if child.is_dir() and not child.is_symlink() and not os.path.ismount(child):
            _strip_group_and_other(child)


def _strip_group_and_other(path: Path) -> None:
    st = path.lstat()
    if stat.S_ISLNK(st.st_mode) or not st.st_mode & 0o077:
        return
    path.chmod(stat.S_IMODE(st.st_mode) & ~0o077)
