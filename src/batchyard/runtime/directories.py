"""The fallback machine provider for hosts that forbid mount namespaces or overlayfs:
plain directories and copies, run through fakechroot. Slower and NOT isolated.

- A disk is a directory holding a full copy of its layers (creating a disk copies the
  image's contents, so creation grows with image size).
- fakechroot (an LD_PRELOAD library) rewrites the paths a command names into the OS
  disk's directory. Paths it passes through unchanged: the host's `/usr` and merged-usr
  links (for the host base image), `/dev`, `/proc`, `/sys`, and the machine's data disks,
  which appear at `/datadisks/lunN` as links. A machine running as root can therefore
  write to the host's `/usr`, and a statically linked program escapes the directory.
  `/etc` is a private copy with the mask's secrets removed; `/var` starts empty. An
  imported root filesystem runs with the host's dynamic loader.
- `/mnt`, the temporary disk, is a directory of the OS disk that snapshots skip.
- A snapshot freezes the whole directory into one layer. The layer store keeps each file
  once, so the bytes stored are still only what changed; the time grows with disk size.
- A machine is a record of its disks; each command is its own process, run as the
  service's own user (a task's non-admin user cannot be honoured: it may not even be able
  to reach the data directory).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

from .confined import remove_path
from .layers import HOST_LAYER, LayerStore
from .machines import HostProvider, remove_tree_atomically
from .provider import DEFAULT_ENV, DiskSpec, MachineError, MachineSpec

_OPAQUE = "trusted.overlay.opaque"
# Top-level host directories a machine on the host base image uses in place.
_SHARED_SYSTEM_DIRS = ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32")
_COPIED_SYSTEM_DIRS = ("etc",)
_SHARED_KERNEL_DIRS = ("/dev", "/proc", "/sys")
# Top-level entries of an OS disk directory that belong to the machine, not the disk.
_NOT_SNAPSHOTTED = ("mnt", "datadisks")


class DirectoryMachineProvider(HostProvider):
    mode = "directories"

    def __init__(self, root: Path, layers: LayerStore, fakechroot: str):
        super().__init__()
        self.layers = layers
        self.fakechroot = fakechroot
        self.disks_dir = root / "dirdisks"
        self.machines_dir = root / "dirmachines"
        self.capacity_disk = root
        for d in (self.disks_dir, self.machines_dir):
            d.mkdir(parents=True, exist_ok=True)
        for staging in self.disks_dir.glob(".new-*"):  # a disk whose copy a crash cut short
            remove_tree_atomically(staging, self.layers.tmp)

    # disks ------------------------------------------------------------------------------

    def _disk_root(self, key: str) -> Path:
        return self.disks_dir / key / "root"

    def _disk_meta(self, key: str) -> Path:
        return self.disks_dir / key / "disk.json"

    def create_disk(self, disk: DiskSpec) -> None:
        if self._disk_meta(disk.key).exists():
            return
        for layer in disk.layers:
            if not self.layers.exists(layer):
                raise MachineError(f"layer {layer} is missing from the layer store")
        staging = self.disks_dir / f".new-{disk.key}"
        remove_tree_atomically(staging, self.layers.tmp)
        (staging / "root").mkdir(parents=True)
        for layer in disk.layers:
            if layer == HOST_LAYER:
                _copy_host_system(staging / "root")
            else:
                apply_layer(self.layers.path(layer), staging / "root")
        (staging / "disk.json").write_text(json.dumps({"host": HOST_LAYER in disk.layers}))
        staging.rename(self.disks_dir / disk.key)

    def delete_disk(self, key: str) -> None:
        remove_tree_atomically(self.disks_dir / key, self.layers.tmp)

    def snapshot_disk(self, disk: DiskSpec) -> list[str]:
        # The host and its mask stay below, so the snapshot means the same thing to the
        # isolated provider should this data directory move to a host that has one.
        host_base = disk.layers[:2] if disk.layers[:1] == [HOST_LAYER] else []
        layer = self.layers.freeze(self._disk_root(disk.key), skip=_NOT_SNAPSHOTTED)
        return host_base + ([layer] if layer else [])

    # machines ---------------------------------------------------------------------------

    def _machine_file(self, key: str) -> Path:
        return self.machines_dir / key / "machine.json"

    def is_running(self, key: str) -> bool:
        return self._machine_file(key).exists()

    def ensure_layers(self, layers: list[str]) -> None:
        missing = [layer for layer in layers if not self.layers.exists(layer)]
        if missing:
            raise MachineError(f"layers missing on this host: {', '.join(missing)}")

    def start(self, machine: MachineSpec) -> None:
        try:
            self._start(machine)
        except BaseException:
            self.stop(machine.key)  # a failed start leaves no machine record behind
            raise

    def _start(self, machine: MachineSpec) -> None:
        base = self.machines_dir / machine.key
        base.mkdir(parents=True, exist_ok=True)
        for disk in (machine.os_disk, *machine.data_disks.values()):
            self.create_disk(disk)
        os_root = self._disk_root(machine.os_disk.key)
        (os_root / "mnt").mkdir(exist_ok=True)
        mount_points = os_root / "datadisks"
        _remove(mount_points)
        mount_points.mkdir()
        for lun, disk in machine.data_disks.items():
            os.symlink(self._disk_root(disk.key), mount_points / f"lun{lun}")
        record = {
            "os_disk": machine.os_disk.key,
            "data_disks": {str(lun): d.key for lun, d in machine.data_disks.items()},
        }
        tmp = base / "machine.json.tmp"
        tmp.write_text(json.dumps(record))
        tmp.replace(self._machine_file(machine.key))

    def stop(self, key: str) -> None:
        self._kill_tracked(key)
        if self.is_running(key):
            record = json.loads(self._machine_file(key).read_text())
            _remove(self._disk_root(record["os_disk"]) / "datadisks")
            self._machine_file(key).unlink()

    def temporary_disk(self, key: str) -> Path:
        record = json.loads(self._machine_file(key).read_text())
        return self._disk_root(record["os_disk"]) / "mnt"

    def delete_machine(self, key: str) -> None:
        self.stop(key)
        remove_tree_atomically(self.machines_dir / key, self.layers.tmp)

    def _command(self, key: str, argv: list[str], cwd: str, env: dict[str, str]) -> tuple[list[str], dict]:
        record = json.loads(self._machine_file(key).read_text())
        os_root = self._disk_root(record["os_disk"])
        passed_through = list(_SHARED_KERNEL_DIRS)
        if json.loads(self._disk_meta(record["os_disk"]).read_text())["host"]:
            passed_through += [f"/{name}" for name in _SHARED_SYSTEM_DIRS if os.path.lexists(f"/{name}")]
        passed_through += [str(self._disk_root(disk_key)) for disk_key in record["data_disks"].values()]
        # fakechroot replaces `env` with a wrapper that knows no --chdir: a shell changes directory.
        command = [self.fakechroot, "chroot", str(os_root), "/bin/sh", "-c", 'cd "$1" && shift && exec "$@"', "sh",
                   cwd, *argv]
        return command, {**env, "FAKECHROOT_EXCLUDE_PATH": ":".join(passed_through)}

    def spawn(self, key, argv, env=None, cwd="/", uid=None, gid=None, stdout=None, stderr=None):
        if not self.is_running(key):
            raise MachineError(f"machine {key} is not running")
        # Commands run as the service's own user here: another user may not be able to
        # reach the data directory the machine's files live in (uid and gid are ignored).
        command, command_env = self._command(key, list(argv), cwd, {**DEFAULT_ENV, **(env or {})})
        proc = subprocess.Popen(
            command, env=command_env,
            stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr, start_new_session=True,
        )
        self._track(key, proc)
        return proc

    def stop_all(self, keep_exits: bool = False) -> None:
        """Commands end with the service; machines stay recorded as running for the restart.
        (Its runner keeps no exit journal: keep_exits changes nothing.)"""
        with self._lock:
            keys = list(self._procs)
        for key in keys:
            self._kill_tracked(key)


def _copy_host_system(dest: Path) -> None:
    """The host base image's private part: merged-usr links as links, /etc as a copy."""
    for name in _SHARED_SYSTEM_DIRS:
        host = Path("/") / name
        if host.is_symlink():
            os.symlink(os.readlink(host), dest / name)
        elif host.is_dir():
            (dest / name).mkdir()
    for name in _COPIED_SYSTEM_DIRS:
        shutil.copytree(Path("/") / name, dest / name, symlinks=True, ignore_dangling_symlinks=True,
                        copy_function=_copy_readable)


def _copy_readable(src: str, dst: str) -> None:
    try:
        shutil.copy2(src, dst)
    except OSError:
        pass  # a host file the service cannot read is not part of the image


def apply_layer(layer: Path, dest: Path) -> None:
    """Lay an overlay layer over a plain directory: whiteouts delete, opaque directories
    replace what was below, everything else is copied (never linked: the machine will
    write to these files)."""
    for dirpath, dirnames, filenames in os.walk(layer):
        rel = os.path.relpath(dirpath, layer)
        target_dir = dest if rel == "." else dest / rel
        for name in dirnames + filenames:
            src, dst = os.path.join(dirpath, name), target_dir / name
            st = os.lstat(src)
            if _is_whiteout(st):
                _remove(dst)
            elif stat.S_ISDIR(st.st_mode):
                if _is_opaque(src) or (dst.exists() and not dst.is_dir()) or dst.is_symlink():
                    _remove(dst)
                dst.mkdir(exist_ok=True)
                os.chown(dst, st.st_uid, st.st_gid)
                dst.chmod(stat.S_IMODE(st.st_mode))
            else:
                _remove(dst)
                if stat.S_ISLNK(st.st_mode):
                    os.symlink(os.readlink(src), dst)
                    os.lchown(dst, st.st_uid, st.st_gid)
                elif stat.S_ISREG(st.st_mode):
                    shutil.copy2(src, dst)
                    os.chown(dst, st.st_uid, st.st_gid)


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _is_opaque(path: str) -> bool:
    try:
        return os.getxattr(path, _OPAQUE, follow_symlinks=False) == b"y"
    except OSError:
        return False


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        remove_path(path)
    elif os.path.lexists(path):
        path.unlink()
