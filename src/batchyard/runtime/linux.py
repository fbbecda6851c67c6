"""The few Linux system calls the runtime needs, through libc."""

from __future__ import annotations

import ctypes
import errno
import os

CLONE_NEWNS = 0x00020000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MNT_DETACH = 2
_SYS_PIVOT_ROOT = 155  # x86_64
_SYS_SETNS = 308

# The kernel binds a mount namespace to a file only from an older namespace, judged by ids
# it hands out in per-CPU batches: namespaces made on one CPU get increasing ids, across
# CPUs they need not. The service makes its own namespace, and every machine's, on this CPU.
NAMESPACE_CPU = min(os.sched_getaffinity(0))

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags), "unshare")


def setns(fd: int, nstype: int) -> None:
    _check(_libc.setns(fd, nstype), "setns")


def mount(source: str, target: str, fstype: str | None, flags: int = 0, data: str | None = None) -> None:
    _check(
        _libc.mount(
            source.encode(), target.encode(), fstype.encode() if fstype else None,
            ctypes.c_ulong(flags), data.encode() if data else None,
        ),
        f"mount {target}",
    )


def umount(target: str, flags: int = 0) -> None:
    _check(_libc.umount2(target.encode(), flags), f"umount {target}")


def unmount_lazily(target: str) -> None:
    """Lazily unmounts `target` if something is mounted there. One that is not (any more:
    two stops of one machine at once, say) is no error: either way nothing is mounted there."""
    try:
        umount(target, MNT_DETACH)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOENT):
            raise


def pivot_root(new_root: str, put_old: str) -> None:
    _check(_libc.syscall(_SYS_PIVOT_ROOT, new_root.encode(), put_old.encode()), "pivot_root")


# The new mount API (Linux 5.2; overlay's "lowerdir+" 6.8): an overlay made here, from host
# paths, as a detached mount whose file descriptor a machine's container agent attaches
# inside the machine, which never sees a host path.
_SYS_FSOPEN, _SYS_FSCONFIG, _SYS_FSMOUNT = 430, 431, 432
_FSCONFIG_SET_STRING, _FSCONFIG_CMD_CREATE = 1, 6
_FSOPEN_CLOEXEC = _FSMOUNT_CLOEXEC = 1


def detached_overlay(lower: list[str], upper: str, work: str) -> int:
    """lower: top first. Returns the mount's file descriptor (the caller closes it)."""
    fs = _libc.syscall(_SYS_FSOPEN, b"overlay", _FSOPEN_CLOEXEC)
    if fs < 0:
        _check(fs, "fsopen overlay")
    try:
        options = [(b"lowerdir+", path) for path in lower] + [(b"upperdir", upper), (b"workdir", work)]
        for key, value in options:
            _check(_libc.syscall(_SYS_FSCONFIG, fs, _FSCONFIG_SET_STRING, key, value.encode(), 0),
                   f"overlay {key.decode()}")
        _check(_libc.syscall(_SYS_FSCONFIG, fs, _FSCONFIG_CMD_CREATE, None, None, 0), "overlay create")
        mount_fd = _libc.syscall(_SYS_FSMOUNT, fs, _FSMOUNT_CLOEXEC, 0)
        if mount_fd < 0:
            _check(mount_fd, "fsmount")
        return mount_fd
    finally:
        os.close(fs)
