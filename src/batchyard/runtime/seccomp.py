"""The system call filter every command in a machine runs under, like Docker's default
profile (and Kubernetes' RuntimeDefault): what would reach the kernel's shared state or
another namespace fails with EPERM.

Built once by the service with libseccomp (through pyseccomp) and written as raw BPF; the
launcher, which runs without site-packages, loads those bytes with prctl. Refused:
- namespaces: unshare and setns, and clone with any CLONE_NEW* flag (no user namespaces,
  so no way to regain capabilities); clone3 answers ENOSYS, as under Docker, so libc falls
  back to clone, whose flags the filter can read;
- the kernel keyring (keyctl, add_key, request_key), bpf, perf_event_open, userfaultfd,
  io_uring;
- mounting in any form, pivot_root, swap, reboot, kexec, modules, clocks, syslog, acct,
  quotactl, open_by_handle_at, iopl/ioperm, and the obsolete calls Docker refuses.
ptrace stays allowed (as in Docker since Linux 4.8): without CAP_SYS_PTRACE it reaches only
the caller's own user's processes in the machine's PID namespace.
"""

from __future__ import annotations

import errno
import logging
from pathlib import Path

log = logging.getLogger("batchyard.runtime")

CLONE_NAMESPACE_FLAGS = {
    "CLONE_NEWNS": 0x00020000, "CLONE_NEWCGROUP": 0x02000000, "CLONE_NEWUTS": 0x04000000,
    "CLONE_NEWIPC": 0x08000000, "CLONE_NEWUSER": 0x10000000, "CLONE_NEWPID": 0x20000000,
    "CLONE_NEWNET": 0x40000000, "CLONE_NEWTIME": 0x00000080,
}
REFUSED = (
    "unshare", "setns",
    "keyctl", "add_key", "request_key",
    "bpf", "perf_event_open", "userfaultfd", "io_uring_setup", "io_uring_enter", "io_uring_register",
    "mount", "umount2", "pivot_root", "move_mount", "open_tree", "fsopen", "fsconfig", "fsmount", "fspick",
    "mount_setattr", "swapon", "swapoff", "reboot", "kexec_load", "kexec_file_load",
    "init_module", "finit_module", "delete_module", "create_module", "get_kernel_syms", "query_module",
    "acct", "settimeofday", "clock_settime", "clock_adjtime", "adjtimex", "syslog", "quotactl",
    "open_by_handle_at", "name_to_handle_at", "lookup_dcookie", "iopl", "ioperm", "uselib", "ustat",
    "sysfs", "_sysctl", "nfsservctl", "vhangup", "fanotify_init",
)


def write_filter(path: Path) -> str | None:
    """Writes the filter's BPF to `path`; None when done, else why there is no filter."""
    try:
        import pyseccomp as seccomp
    except (ImportError, OSError) as exc:  # pyseccomp loads libseccomp.so.2 on import
        return f"no libseccomp ({exc})"
    try:
        refuse = seccomp.ERRNO(errno.EPERM)
        flt = seccomp.SyscallFilter(seccomp.ALLOW)
        for name in REFUSED:
            try:
                flt.add_rule(refuse, name)
            except (ValueError, RuntimeError, OSError):
                pass  # a call this architecture does not have
        for flag in CLONE_NAMESPACE_FLAGS.values():
            flt.add_rule(refuse, "clone", seccomp.Arg(0, seccomp.MASKED_EQ, flag, flag))
        flt.add_rule(seccomp.ERRNO(errno.ENOSYS), "clone3")
        with open(path, "wb") as out:
            flt.export_bpf(out)
    except (RuntimeError, OSError, ValueError) as exc:
        return f"the seccomp filter could not be built ({exc})"
    return None
