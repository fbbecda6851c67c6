"""The host's own operating system as a base image: the host root, read-only, under a mask
layer that hides everything private.

A naive overlay over the host's `/` would show the service's data directory, home
directories, other machines' disks and secrets. The mask keeps only the system trees a
Linux distribution needs (`/usr`, `/etc`, `/var`, the merged-usr links) and replaces every
other top-level entry with a whiteout or an empty directory; inside the kept trees it
hides credentials and, wherever it lies, the data directory.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from .confined import remove_path
from .layers import HOST_LAYER, LayerStore

# Top-level entries of the host root that a machine sees as they are.
KEPT_TOP_LEVEL = {"bin", "sbin", "lib", "lib32", "lib64", "libx32", "usr", "etc", "var"}
# Top-level directories a machine has, empty of the host's contents.
EMPTY_DIRS = {"tmp": 0o1777, "root": 0o700, "home": 0o755, "opt": 0o755, "srv": 0o755, "mnt": 0o755,
              "media": 0o755, "run": 0o755, "proc": 0o555, "sys": 0o555, "dev": 0o755, "boot": 0o755,
              "datadisks": 0o755}
# Inside the kept trees: files that hold host secrets.
HIDDEN_PATHS = ["etc/shadow", "etc/shadow-", "etc/gshadow", "etc/gshadow-", "etc/ssh/ssh_host_rsa_key",
                "etc/ssh/ssh_host_ecdsa_key", "etc/ssh/ssh_host_ed25519_key", "etc/ssh/ssh_host_dsa_key",
                "etc/sudoers.d"]
EMPTIED_PATHS = ["var/tmp", "var/log", "var/lib/private", "var/spool", "var/mail", "var/run"]


def _whiteout(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mknod(path, stat.S_IFCHR | 0o000, os.makedev(0, 0))


def _opaque_dir(path: Path, mode: int) -> None:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(mode)
    os.setxattr(path, "trusted.overlay.opaque", b"y")


def build_mask_layer(store: LayerStore, private_paths: list[Path]) -> str:
    """Returns the id of the mask layer for this host; `private_paths` (the data directory,
    say) are hidden wherever they are."""
    staging = Path(tempfile.mkdtemp(dir=store.tmp))
    try:
        for entry in os.listdir("/"):
            if entry in KEPT_TOP_LEVEL or entry in EMPTY_DIRS:
                continue
            _whiteout(staging / entry)
        for name, mode in EMPTY_DIRS.items():
            _opaque_dir(staging / name, mode)
        for rel in HIDDEN_PATHS:
            if os.path.lexists("/" + rel):
                _whiteout(staging / rel)
        for rel in EMPTIED_PATHS:
            if os.path.isdir("/" + rel) and not os.path.islink("/" + rel):
                _opaque_dir(staging / rel, stat.S_IMODE(os.stat("/" + rel).st_mode))
        for private in private_paths:
            rel = Path(os.path.realpath(private)).relative_to("/")
            if rel.parts and rel.parts[0] in KEPT_TOP_LEVEL and not (staging / rel).exists():
                _whiteout(staging / rel)
        _match_parent_dirs(staging)
        layer = store.freeze(staging)
        assert layer is not None
        return layer
    finally:
        remove_path(staging, ignore_errors=True)


def _match_parent_dirs(staging: Path) -> None:
    """Directories the mask creates only to hold a whiteout must look like the host's, or
    they would change the mode and owner the machine sees."""
    for dirpath, dirnames, _ in os.walk(staging):
        for name in dirnames:
            mine = Path(dirpath) / name
            host = Path("/") / mine.relative_to(staging)
            try:
                opaque = os.getxattr(mine, "trusted.overlay.opaque")
            except OSError:
                opaque = None
            if opaque is None and host.is_dir():
                st = host.stat()
                os.chown(mine, st.st_uid, st.st_gid)
                mine.chmod(stat.S_IMODE(st.st_mode))


def host_os_release() -> dict[str, str]:
    info: dict[str, str] = {}
    for candidate in ("/etc/os-release", "/usr/lib/os-release"):
        if os.path.exists(candidate):
            for line in Path(candidate).read_text().splitlines():
                if "=" in line:
                    key, _, value = line.partition("=")
                    info[key.strip()] = value.strip().strip('"')
            break
    return info


def host_base_layers(mask_layer: str) -> list[str]:
    """Bottom first: the host root, then the mask."""
    return [HOST_LAYER, mask_layer]
