"""Builds a machine's persistent mount namespace. Executed as
`python -I -S mounter.py SPEC_JSON`: it enters a new mount namespace, mounts everything,
prints "ready" and waits until its parent has bound the namespace to a file (closing our
stdin), so every mount made here lives on after this process exits. The service itself
builds namespaces with `build_root` in one of its threads (namespace_builder.py), which
costs no interpreter start; this script is the way when it cannot.

The namespace's root becomes the machine's OS disk (an overlay of read-only layers under
the disk's writable layer); data disks are overlays at /datadisks/lun{N}; /mnt is the
temporary disk; /dev is a small private set of devices, never the host's disks.
"""

import ctypes
import json
import os
import sys

CLONE_NEWNS = 0x00020000
MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_BIND, MS_REC, MS_PRIVATE = 0x2, 0x4, 0x8, 0x1000, 0x4000, 1 << 18
MNT_DETACH = 2
SYS_PIVOT_ROOT = 155
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")

libc = ctypes.CDLL(None, use_errno=True)


def check(result, what):
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, "%s: %s" % (what, os.strerror(err)))


def mount(source, target, fstype, flags=0, data=None):
    check(libc.mount(source.encode(), target.encode(), fstype.encode() if fstype else None,
                     ctypes.c_ulong(flags), data.encode() if data else None), "mount " + target)


def mount_disk(disk, target):
    lower = ":".join(disk["lower"])
    mount("overlay", target, "overlay", 0,
          "lowerdir=%s,upperdir=%s,workdir=%s" % (lower, disk["upper"], disk["work"]))


def build_dev(root, meminfo):
    dev = os.path.join(root, "dev")
    os.makedirs(dev, exist_ok=True)
    mount("tmpfs", dev, "tmpfs", MS_NOSUID, "mode=755,size=65536k")
    for name in DEVICES:
        path = os.path.join(dev, name)
        open(path, "w").close()
        mount("/dev/" + name, path, None, MS_BIND)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
        os.symlink(target, os.path.join(dev, name))
    os.makedirs(os.path.join(dev, "pts"))
    mount("devpts", os.path.join(dev, "pts"), "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=620")
    os.symlink("pts/ptmx", os.path.join(dev, "ptmx"))
    os.makedirs(os.path.join(dev, "shm"))
    mount("tmpfs", os.path.join(dev, "shm"), "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")
    if meminfo:  # staged for the launcher, which puts it over each command's /proc/meminfo
        staged = os.path.join(dev, ".meminfo")
        open(staged, "w").close()
        mount(meminfo, staged, None, MS_BIND)


def build_root(spec):
    """In a new mount namespace of this thread: every mount of the machine, then its OS
    disk as the root. Nothing here may import or read the host's files once the root has
    moved (the caller's thread sees the machine's tree then)."""
    mount("none", "/", None, MS_REC | MS_PRIVATE)
    root = spec["root"]
    mount_disk(spec["os_disk"], root)
    for disk in spec["data_disks"]:
        target = os.path.join(root, "datadisks", "lun%d" % disk["lun"])
        os.makedirs(target, exist_ok=True)
        mount_disk(disk, target)
    temp = os.path.join(root, "mnt")
    os.makedirs(temp, exist_ok=True)
    mount(spec["resource"], temp, None, MS_BIND)
    for name in ("proc", "sys", "tmp"):
        os.makedirs(os.path.join(root, name), exist_ok=True)
    build_dev(root, spec.get("meminfo"))
    old = os.path.join(root, ".old-root")
    os.makedirs(old, exist_ok=True)
    os.chdir(root)
    check(libc.syscall(SYS_PIVOT_ROOT, b".", b".old-root"), "pivot_root")
    os.chdir("/")
    check(libc.umount2(b"/.old-root", MNT_DETACH), "umount old root")
    os.rmdir("/.old-root")


def main():
    spec = json.loads(sys.argv[1])
    # Namespace ids come from per-CPU batches: made on the CPU the service's own namespace
    # was made on, ours is newer than it, as the kernel requires to bind it (see linux.py).
    allowed = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {spec["cpu"]})
    check(libc.unshare(CLONE_NEWNS), "unshare")
    os.sched_setaffinity(0, allowed)
    build_root(spec)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    sys.stdin.read()  # until the parent has bound our namespace


if __name__ == "__main__":
    main()
