"""Runs one command inside a machine. Executed as a separate host process
(`python -I -S launcher.py SPEC_JSON`), standalone so the machine needs no Python.

It joins the machine's persistent mount namespace (which lands it in the machine's root
filesystem), then makes a private copy of it with a new PID namespace, so the command gets
its own /proc showing only its own processes; when the command ends, the kernel ends
everything it left behind. Capabilities that would let root inside the machine reach the
host (mounting, raw devices, opening files by handle, tracing, modules) are dropped.
"""

import ctypes
import json
import os
import signal
import sys

CLONE_NEWNS = 0x00020000
CLONE_NEWPID = 0x20000000
MS_NOSUID, MS_NODEV, MS_NOEXEC = 0x2, 0x4, 0x8
PR_CAPBSET_DROP = 24
PR_SET_PDEATHSIG = 1
# CAP_DAC_READ_SEARCH(2) allows open_by_handle_at escapes; CAP_SYS_MODULE(16), CAP_SYS_RAWIO(17),
# CAP_SYS_PTRACE(19), CAP_SYS_ADMIN(21), CAP_SYS_BOOT(22), CAP_MKNOD(27), CAP_SYS_TIME(25),
# CAP_MAC_OVERRIDE(32), CAP_MAC_ADMIN(33), CAP_SYSLOG(34), CAP_BPF(39), CAP_PERFMON(38),
# CAP_CHECKPOINT_RESTORE(40), CAP_NET_ADMIN(12), CAP_SYS_RESOURCE(24), CAP_LEASE(28), CAP_AUDIT_CONTROL(30)
DROPPED_CAPS = (2, 12, 16, 17, 19, 21, 22, 24, 25, 27, 28, 30, 32, 33, 34, 38, 39, 40)

libc = ctypes.CDLL(None, use_errno=True)


def check(result, what):
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, "%s: %s" % (what, os.strerror(err)))


def child(spec):
    check(libc.mount(b"proc", b"/proc", b"proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None), "mount /proc")
    for cap in DROPPED_CAPS:
        libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)  # caps unknown to this kernel fail harmlessly
    gid, uid = spec.get("gid"), spec.get("uid")
    if gid is not None:
        os.setgroups([])
        os.setgid(gid)
    if uid is not None:
        os.setuid(uid)
    cwd = spec.get("cwd") or "/"
    try:
        os.chdir(cwd)
    except OSError:
        os.chdir("/")
    argv = spec["argv"]
    try:
        os.execve(argv[0], argv, spec.get("env") or {})
    except OSError as exc:
        sys.stderr.write("batchyard: cannot start %s: %s\n" % (argv[0], exc.strerror))
        os._exit(127)


def main():
    spec = json.loads(sys.argv[1])
    ns = os.open(spec["namespace"], os.O_RDONLY)
    check(libc.setns(ns, CLONE_NEWNS), "setns")
    os.close(ns)
    check(libc.unshare(CLONE_NEWNS | CLONE_NEWPID), "unshare")
    pid = os.fork()
    if pid == 0:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        try:
            child(spec)
        except BaseException as exc:  # report, never fall back into the parent's code
            sys.stderr.write("batchyard: %s\n" % exc)
            os._exit(126)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        # PID 1 of a namespace ignores these from outside unless it handles them: turn
        # them into a kill, as a VM's power-off would.
        signal.signal(sig, lambda *_: os.kill(pid, signal.SIGKILL))
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except ChildProcessError:
            os._exit(1)
        except InterruptedError:
            continue
    if os.WIFSIGNALED(status):
        os._exit(128 + os.WTERMSIG(status))
    os._exit(os.WEXITSTATUS(status))


if __name__ == "__main__":
    main()
