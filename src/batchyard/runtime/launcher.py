"""Runs one command inside a machine, or an agent that runs many. Executed as a separate
host process (`python -I -S launcher.py SPEC_JSON`), standalone so the machine needs no
Python: the interpreter is loaded before the process enters the machine.

With `"agent": true` in the spec, PID 1 of the new PID namespace does not exec a command:
it reads requests (JSON lines on stdin: {"id", "argv", "env", "cwd", "uid", "gid",
"stdout", "stderr"}, {"kill": id} or {"close": true}), forks and execs each command, and
reports {"id", "exit"} on stdout when one ends. Starting a command then costs a fork, not a
new interpreter. On {"close"} the agent exits and the kernel ends whatever is left.

Exits are also written to the machine's exit journal (`"exits"` in the spec: two host
files, opened before entering the machine, so no command can reach them) before they are
reported: the service may die between a command's end and recording it, and reads the
journal when it starts again. When stdin closes without {"close"} the service is gone: the
agent lets running commands finish (for up to EXIT_GRACE seconds, as a node's agent keeps
its tasks running while the Batch service is unreachable), journals their exits and
exits. The journal alternates between its two files: when the one in use passes
JOURNAL_SWITCH_BYTES and the other was last written JOURNAL_KEEP_SECONDS ago (its exits
long recorded), the other is emptied and takes over. {"close"} leaves both as they are: on a
cluster, a host closes an idle agent on its own, while the service may be stalled with exits
it has not recorded yet; the next agent of the machine writes on where this one stopped, and
the service empties the journals once it has read them after a start. An exit is journaled
under its command's id, which names one attempt of one task for good (see
services/batch/tasks.py, first_attempt), so one the service recorded long ago is never taken
for a later command's.

It joins the machine's persistent mount namespace (which lands it in the machine's root
filesystem), then makes a private copy of it with a new PID namespace, so the command gets
its own /proc showing only its own processes; when the command ends, the kernel ends
everything it left behind. Commands keep only a container runtime's default capabilities,
run under its seccomp filter (see seccomp.py) with no_new_privs, and get a VM's rlimits.

With `"containers": FD` in an agent's spec, it is a machine's container agent: it keeps
its capabilities and loads no filter itself, and for each request receives a root
filesystem on socket FD and forks a process that attaches it in a mount namespace of its
own and starts the command in a PID namespace of its own, under the filter (see
start_container).
"""

import ctypes
import errno
import fcntl
import json
import os
import re
import resource
import select
import signal
import socket
import stat
import sys
import time

CLONE_NEWNS = 0x00020000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND, MS_REC = 0x1, 0x2, 0x4, 0x8, 0x20, 0x1000, 0x4000
MNT_DETACH = 2
PR_CAPBSET_DROP = 24
PR_SET_PDEATHSIG = 1
PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 22, 2
# The capabilities a command may hold: a container runtime's default set (Docker's) without
# NET_RAW (no packet sockets, as Kubernetes' restricted profile) and without MKNOD (Docker
# relies on its device cgroup to make mknod harmless; machines have no device rules).
# CHOWN 0, DAC_OVERRIDE 1, FOWNER 3, FSETID 4, KILL 5, SETGID 6, SETUID 7, SETPCAP 8,
# NET_BIND_SERVICE 10, SYS_CHROOT 18, AUDIT_WRITE 29, SETFCAP 31. Every other one (SYS_ADMIN,
# SYS_NICE, NET_ADMIN, SYS_PTRACE, ...) leaves the bounding set, so no program ever gets it.
KEPT_CAPS = frozenset((0, 1, 3, 4, 5, 6, 7, 8, 10, 18, 29, 31))
LAST_CAP = 63
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"  # a command's without its own
# rlimits of every command (a Debian VM's defaults): open files; no real-time priority
# without CAP_SYS_NICE either. Processes are limited by the machine's pids cgroup.
RLIMITS = ((resource.RLIMIT_NOFILE, (1024, 524288)), (resource.RLIMIT_RTPRIO, (0, 0)))

libc = ctypes.CDLL(None, use_errno=True)


def check(result, what):
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, "%s: %s" % (what, os.strerror(err)))


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]


def load_seccomp(bpf):
    """The filter the service built (runtime/seccomp.py): raw struct sock_filter entries."""
    program = SockFprog(len(bpf) // 8, bpf)
    check(libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(program), 0, 0), "seccomp")


def child(spec, meminfo, seccomp, channel=None):
    """channel: for a container agent, the socket its root filesystems come through."""
    mount_proc(meminfo)
    for cap in range(LAST_CAP + 1):
        if cap not in KEPT_CAPS:
            libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)  # caps unknown to this kernel fail harmlessly
    for limit, (soft, hard) in RLIMITS:
        current = resource.getrlimit(limit)[1]
        hard = hard if current == resource.RLIM_INFINITY else min(hard, current)  # never above the host's
        resource.setrlimit(limit, (min(soft, hard), hard))
    libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)  # no setuid program raises a command's rights
    if channel is not None:  # its commands load the filter once in their containers
        serve_requests(meminfo, lambda request: start_container(request, channel, meminfo, seccomp))
        os._exit(0)
    if seccomp is not None:
        load_seccomp(seccomp)
    if spec.get("agent"):
        serve_requests(meminfo)
        os._exit(0)
    become(spec)


def mount_proc(meminfo):
    check(libc.mount(b"proc", b"/proc", b"proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None), "mount /proc")
    mask_proc()
    if meminfo is not None:
        meminfo.refresh()
        meminfo.mount()


def mask_proc():
    """/proc/sys and a few files of /proc change or reveal the host's kernel (core_pattern,
    sysrq, kcore...): read-only or hidden, as container runtimes do."""
    for path in (b"/proc/sys", b"/proc/sysrq-trigger", b"/proc/irq", b"/proc/bus", b"/proc/fs"):
        if os.path.exists(path):
            check(libc.mount(path, path, None, MS_BIND | MS_REC, None), "bind %s" % path.decode())
            check(libc.mount(None, path, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_REC, None),
                  "read-only %s" % path.decode())
    for path in (b"/proc/kcore", b"/proc/keys", b"/proc/timer_list", b"/proc/sched_debug", b"/proc/kallsyms"):
        if os.path.exists(path):
            libc.mount(b"/dev/null", path, None, MS_BIND, None)  # missing on some kernels: harmless


MEMINFO_REFRESH = 1.0
EXIT_GRACE = 2.0
JOURNAL_SWITCH_BYTES = 256 << 10
JOURNAL_KEEP_SECONDS = 60.0


class Journal:
    """The machine's exit journal (see the module's docstring)."""

    def __init__(self, fds):
        self.fds = fds
        self.current = max(range(len(fds)), key=lambda i: os.fstat(fds[i]).st_size)
        # What a file holds was written by the machine's earlier agents, when the file last
        # changed: each lived only until it idled, so a file's age must outlive them, or the
        # journal would never switch and grow for as long as the machine runs.
        self.written = [written_at(fd) for fd in fds]

    def write(self, line):
        fd = self.fds[self.current]
        other = 1 - self.current
        if os.fstat(fd).st_size > JOURNAL_SWITCH_BYTES and time.monotonic() - self.written[other] >= \
                JOURNAL_KEEP_SECONDS:
            os.ftruncate(self.fds[other], 0)
            self.current, fd = other, self.fds[other]
        write_all(fd, line)
        self.written[self.current] = time.monotonic()


def written_at(fd):
    """When the file was last written, on the monotonic clock that Journal measures by (0.0
    for an empty file: nothing in it to keep)."""
    status = os.fstat(fd)
    if not status.st_size:
        return 0.0
    return time.monotonic() - max(0.0, time.time() - status.st_mtime)


JOURNAL = None  # the agent's, when the service gave it one
MEMINFO_STAGED = b"/dev/.meminfo"  # where the mounter put the machine's meminfo file


class MemInfo:
    """/proc/meminfo as the machine's memory cgroup tells it (as LXCFS does for
    containers): MemTotal is the machine's limit, MemFree and MemAvailable what its
    processes leave of it. The file lives on the host; the mounter binds it into the
    machine's /dev, and each command's private mounts put it over /proc/meminfo."""

    def __init__(self, files):
        self.out = os.open(files["file"], os.O_RDWR | os.O_CLOEXEC)
        self.refreshed = 0.0
        self.limit, self.usage, self.stat = (os.open(files[k], os.O_RDONLY | os.O_CLOEXEC)
                                             for k in ("limit", "usage", "stat"))
        with open("/proc/meminfo") as f:
            self.host = f.read().splitlines()

    @staticmethod
    def _number(fd):
        text = os.pread(fd, 4096, 0).decode().strip()
        return None if text == "max" else int(text)

    def refresh_if_due(self):
        """At most once a second: a machine running thousands of short tasks must not pay
        for it on each one."""
        if time.monotonic() - self.refreshed >= MEMINFO_REFRESH:
            self.refresh()

    def refresh(self):
        self.refreshed = time.monotonic()
        usage = self._number(self.usage) or 0
        stat = dict(line.split() for line in os.pread(self.stat, 65536, 0).decode().splitlines() if " " in line)
        cache = int(stat.get("total_cache", stat.get("file", 0)))
        host_total = int(self.host[0].split()[1]) * 1024
        limit = min(self._number(self.limit) or host_total, host_total)
        free = max(0, limit - usage)
        own = {"MemTotal": limit, "MemFree": free, "MemAvailable": min(limit, free + cache), "Buffers": 0,
               "Cached": min(cache, usage), "SwapTotal": 0, "SwapFree": 0, "SwapCached": 0}
        lines = []
        for line in self.host:
            name = line.split(":", 1)[0]
            lines.append("%-16s%8d kB" % (name + ":", own[name] // 1024) if name in own else line)
        data = ("\n".join(lines) + "\n").encode()
        try:
            os.pwrite(self.out, data, 0)
            os.ftruncate(self.out, len(data))
        except OSError:
            # The file is the host's, under the data directory, whose disk may be full:
            # the machine keeps the figures it last read, and the agent (with every
            # command of the machine) lives on. The service made the file a page long, so
            # this only fails on a disk that was full when the machine started.
            pass

    def mount(self):
        check(libc.mount(MEMINFO_STAGED, b"/proc/meminfo", None, MS_BIND, None), "bind /proc/meminfo")
        check(libc.mount(None, b"/proc/meminfo", None, MS_BIND | MS_REMOUNT | MS_RDONLY, None), "read-only meminfo")
        libc.umount2(MEMINFO_STAGED, MNT_DETACH)  # this command's copy of the mounts only


# A container's root filesystem arrives as the file descriptor of a detached overlay mount,
# made by the service from the host's layer store (runtime/linux.py), over the container
# agent's socket; attached here, inside the machine.
SYS_MOVE_MOUNT, MOVE_MOUNT_F_EMPTY_PATH, AT_FDCWD = 429, 4, -100
SYS_PIVOT_ROOT = 155


def receive_rootfs(channel):
    """The next root filesystem the service sent (it sends one before each request)."""
    _, fds, _, _ = socket.recv_fds(channel, 1, 1)
    if len(fds) != 1:
        raise OSError(errno.EPROTO, "no root filesystem came with the request")
    return fds[0]


def start_container(request, channel, meminfo, seccomp):
    """Forked by the container agent for each request: a mount namespace of its own whose
    root becomes the container's filesystem, and a PID namespace whose PID 1 is the command
    (this process waits for it and exits as it does)."""
    rootfs = receive_rootfs(channel)
    pid = os.fork()
    if pid:
        os.close(rootfs)
        return pid
    errors = 2  # the service's log, until the command's stderr.txt is open
    try:
        os.setsid()  # its own process group: a kill reaches the command too
        signal.set_wakeup_fd(-1)  # the agent's wake-up pipe and handler are the agent's
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        container = request["container"]
        check(libc.unshare(CLONE_NEWNS | CLONE_NEWPID), "unshare")
        uid, gid = request.get("uid"), request.get("gid")
        dirs = Dirs()
        outputs = open_outputs(request, dirs, uid, gid)  # a container task names both
        dirs.close()
        errors = outputs[1]
        channel.close()
        enter_container(container, rootfs)
        command = os.fork()
        if command == 0:
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            os.dup2(outputs[0], 1)
            os.dup2(outputs[1], 2)
            devnull = os.open("/dev/null", os.O_RDONLY)
            os.dup2(devnull, 0)
            mount_proc(meminfo)
            if seccomp is not None:
                load_seccomp(seccomp)
            become({**request, "uid": None, "gid": None, "mkdirs": None, "stdout": None, "stderr": None})
        _, status = os.waitpid(command, 0)
        os._exit(128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status))
    except BaseException as exc:  # never fall back into the agent's loop
        try:
            os.write(errors, ("batchyard: the container could not start: %s\n" % exc).encode())
        finally:
            os._exit(126)


def enter_container(container, rootfs):
    """Root becomes the container's filesystem, in this command's private mounts only: the
    overlay is attached over the agent's /proc (never used by the container, which mounts
    its own), the Batch directories Azure maps are bound in at their own paths, with /dev,
    and pivot_root leaves the machine's root behind (chroot would not: CAP_SYS_CHROOT is
    kept, and a chroot can be climbed out of)."""
    new = b"/proc"
    check(libc.syscall(SYS_MOVE_MOUNT, rootfs, b"", AT_FDCWD, new, MOVE_MOUNT_F_EMPTY_PATH), "attach the container")
    os.close(rootfs)
    for path, _ in container["binds"]:
        no_link_below(new, path.encode())
    no_link_below(new, b"/dev")
    no_link_below(new, b"/proc")
    for path, read_only in container["binds"]:
        bind(path.encode(), new + path.encode(), read_only)
    bind(b"/dev", new + b"/dev", False)
    os.makedirs(new + b"/proc", exist_ok=True)
    if container.get("read_only"):
        check(libc.mount(None, new, None, MS_BIND | MS_REMOUNT | MS_RDONLY, None), "read-only root")
    os.chdir(new)
    check(libc.syscall(SYS_PIVOT_ROOT, b".", b"."), "pivot_root")
    check(libc.umount2(b".", MNT_DETACH), "leave the machine's root")
    os.chdir("/")


def no_link_below(root, path):
    """Before pivot_root, a link in the image would be followed in the machine's filesystem
    (directories made there, a mount put there): every existing directory on the way to a
    mount point must be a real one, as runc's securejoin ensures for Docker."""
    at = root
    for part in path.strip(b"/").split(b"/"):
        at = at + b"/" + part
        if os.path.islink(at):
            raise OSError(errno.ELOOP, "%s is a symbolic link in the image, where a mount goes"
                          % at[len(root):].decode(errors="replace"))
        if not os.path.lexists(at):
            return


def bind(source, target, read_only):
    if os.path.isdir(source):
        os.makedirs(target, exist_ok=True)
    else:
        return  # Azure maps only the directories the node has
    check(libc.mount(source, target, None, MS_BIND | MS_REC, None), "bind " + source.decode())
    if read_only:
        check(libc.mount(None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_REC, None),
              "read-only " + source.decode())


def container_user(text):
    """`--user` or the image's USER: name or id, with an optional group, looked up in the
    container's own /etc/passwd and /etc/group as Docker does."""
    name, _, group = text.partition(":")
    uid = gid = None
    for line in read_lines("/etc/passwd"):
        fields = line.split(":")
        if len(fields) > 3 and (fields[0] == name or fields[2] == name):
            uid, gid = int(fields[2]), int(fields[3])
            break
    if uid is None:
        if not name.isdigit():
            raise OSError(errno.EINVAL, "unable to find user %s: no matching entries in passwd file" % name)
        uid, gid = int(name), 0
    if group:
        gid = None
        for line in read_lines("/etc/group"):
            fields = line.split(":")
            if len(fields) > 2 and (fields[0] == group or fields[2] == group):
                gid = int(fields[2])
        if gid is None:
            if not group.isdigit():
                raise OSError(errno.EINVAL, "unable to find group %s: no matching entries in group file" % group)
            gid = int(group)
    return uid, gid


def read_lines(path):
    try:
        with open(path) as f:
            return f.read().splitlines()
    except OSError:
        return []


def resolve(program, env):
    """A program named without a slash is looked up in the container's PATH, as Docker does."""
    if "/" in program:
        return program
    for folder in (env.get("PATH") or DEFAULT_PATH).split(":"):
        candidate = os.path.join(folder or ".", program)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return program


def become(spec):
    """Turn this process into the command: its user, output files, directory, program."""
    gid, uid = spec.get("gid"), spec.get("uid")
    container = spec.get("container")
    if container and container.get("user"):
        try:
            uid, gid = container_user(container["user"])
        except OSError as exc:
            sys.stderr.write("batchyard: %s\n" % exc.strerror)
            os._exit(126)
    for path in spec.get("mkdirs") or ():  # the command's directories, made by root, owned by its user
        os.makedirs(path, exist_ok=True)
        if uid is not None:
            os.chown(path, uid, gid if gid is not None else -1)
    if container and spec.get("cwd"):
        os.makedirs(spec["cwd"], exist_ok=True)  # docker create makes a missing working directory
    if gid is not None:
        os.setgroups([])
        os.setgid(gid)
    if uid is not None:
        os.setuid(uid)
    for fd, path in ((1, spec.get("stdout")), (2, spec.get("stderr"))):
        if path:
            out = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.dup2(out, fd)
            os.close(out)
    cwd = spec.get("cwd") or "/"
    try:
        os.chdir(cwd)
    except OSError:
        os.chdir("/")
    argv = spec["argv"]
    if container:
        argv = [resolve(argv[0], spec.get("env") or {})] + argv[1:]
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # Python ignores it; the command must not
    try:
        os.execve(argv[0], argv, spec.get("env") or {})
    except OSError as exc:
        sys.stderr.write("batchyard: cannot start %s: %s\n" % (argv[0], exc.strerror))
        os._exit(127)


def serve_requests(meminfo, start=None):
    """The agent: PID 1 of the machine's command namespace. One loop, no work in signal
    handlers: SIGCHLD only wakes the loop (through a pipe), which then reaps. While
    commands run, /proc/meminfo is refreshed every second."""
    running = {}  # pid -> request id
    devnull = os.open("/dev/null", os.O_RDWR)
    for fd in (0, 1, 2):  # commands must not inherit the agent's pipes
        os.set_inheritable(fd, False)
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    pending = b""
    while True:
        ready, _, _ = select.select([0, wake_read], [], [], MEMINFO_REFRESH if running and meminfo else None)
        if meminfo is not None and running:
            meminfo.refresh_if_due()
        if wake_read in ready:
            os.read(wake_read, 4096)
            reap(running)
        if 0 in ready:
            data = os.read(0, 1 << 16)
            if not data:
                finish_running(running, wake_read)
                return
            pending += data
            *lines, pending = pending.split(b"\n")
            for line in lines:
                if not line.strip():
                    continue
                request = json.loads(line)
                if request.get("close"):
                    return
                handle(request, running, devnull, start)


def finish_running(running, wake_read):
    """The service is gone: running commands may finish (EXIT_GRACE) and their exits go
    to the journal, for the service to find when it starts again."""
    deadline = time.monotonic() + EXIT_GRACE
    reap(running)
    while running and time.monotonic() < deadline:
        ready, _, _ = select.select([wake_read], [], [], max(0.0, deadline - time.monotonic()))
        if ready:
            os.read(wake_read, 4096)
        reap(running)


def handle(request, running, devnull, start=None):
    if "kill" in request:
        for pid, request_id in list(running.items()):
            if request_id == request["kill"]:
                try:
                    os.killpg(pid, signal.SIGKILL)
                except OSError:
                    pass
        return
    try:
        running[start(request) if start else spawn(request, devnull)] = request["id"]
    except (OSError, ValueError, TypeError, KeyError, IndexError) as exc:  # never let one request end the agent
        sys.stderr.write("batchyard: cannot start the command: %s\n" % exc)
        report([(request.get("id"), 127 if isinstance(exc, FileNotFoundError) else 126)])


DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class Dirs:
    """The directories of one request (its mkdirs, its cwd, its outputs' directories), each
    reached from / without following any link: a command that replaced a directory with a
    link must not steer this root agent anywhere. Each is opened once per request: a task's
    directory, its wd and the directory of its stdout.txt and stderr.txt share one walk.
    With `kept`, the walk to the parent of the request's first directory to make starts
    from there when it is kept (see KeptDirs)."""

    def __init__(self, kept=None):
        self.fds = {}
        self.kept = kept
        self.lent = None  # the kept directory's parts: left open by close()

    def open(self, path, create):
        return self._open(_parts(path), create)

    def make(self, path):
        """Opens path, made first: a task's directories are new, so opening one first would
        fail every time. An existing directory, or the kept parent, serves as it is."""
        parts = _parts(path)
        if parts and parts not in self.fds:
            parent = parts[:-1]
            first = self.kept is not None and self.lent is None
            fd = self._open_kept(parent) if first else self._open(parent, True)
            try:
                os.mkdir(parts[-1], 0o755, dir_fd=fd)
            except FileExistsError:
                pass
        return self._open(parts, True)

    def _open_kept(self, parts):
        """The directory at parts (made if missing), lent by self.kept when it keeps it, else
        walked to and then kept."""
        fd = self.kept.lend(parts)
        if fd is None:
            fd = self._open(parts, True)
            self.kept.keep(parts, fd)
        self.fds[parts] = fd
        self.lent = parts
        return fd

    def _open(self, parts, create):
        fd = self.fds.get(parts)
        if fd is None:
            if parts:
                fd = child_dir(self._open(parts[:-1], create), parts[-1], create)
            else:
                fd = os.open("/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            self.fds[parts] = fd
        return fd

    def close(self):
        for parts, fd in self.fds.items():
            if parts != self.lent:
                os.close(fd)
        self.fds.clear()


def _parts(path):
    parts = tuple(p for p in path.split("/") if p not in ("", "."))
    if ".." in parts:
        raise PermissionError(errno.EACCES, "a path may not climb with ..")
    return parts


class KeptDirs:
    """Directories the agent keeps open between requests: the parent of each request's first
    directory to make, so a task's job directory, which every task of the job makes its
    own directory in. The walk down to one (7 opens and 7 closes) is made once per job, not
    once per task. One is lent to a request only while its path still names it, checked
    with one lstat: one removed, moved or replaced with a link since it was walked to is
    closed, and the walk made again (which refuses the link)."""

    LIMIT = 16  # the most recently lent ones: the jobs a node runs tasks of

    def __init__(self):
        self.entries = {}  # parts -> (fd, st_dev, st_ino), the most recently lent last

    def lend(self, parts):
        entry = self.entries.pop(parts, None)
        if entry is None:
            return None
        fd, dev, ino = entry
        try:
            now = os.stat("/" + "/".join(parts), follow_symlinks=False)
        except OSError:
            now = None
        if now is None or (now.st_dev, now.st_ino) != (dev, ino):
            os.close(fd)
            return None
        self.entries[parts] = entry
        return fd

    def keep(self, parts, fd):
        kept = os.fstat(fd)
        self.entries[parts] = (fd, kept.st_dev, kept.st_ino)
        while len(self.entries) > self.LIMIT:
            os.close(self.entries.pop(next(iter(self.entries)))[0])


KEPT_DIRS = KeptDirs()  # the agent's own: one process, one request at a time


def child_dir(parent, name, create):
    try:
        return os.open(name, DIR_FLAGS, dir_fd=parent)
    except FileNotFoundError:
        if not create:
            raise
        try:
            os.mkdir(name, 0o755, dir_fd=parent)
        except FileExistsError:
            pass
        return os.open(name, DIR_FLAGS, dir_fd=parent)


def open_outputs(request, dirs, uid, gid):
    """The request's mkdirs made (its user's), and its stdout and stderr files opened (None
    for one it does not name)."""
    for path in request.get("mkdirs") or ():
        fd = dirs.make(path)
        if uid is not None:
            os.fchown(fd, uid, gid if gid is not None else -1)
    outputs = []
    try:
        for name in ("stdout", "stderr"):
            outputs.append(open_output(dirs, request[name], uid, gid) if request.get(name) else None)
    except BaseException:
        for out in outputs:
            if out is not None:
                os.close(out)
        raise
    return outputs


def open_output(dirs, path, uid, gid):
    """O_NONBLOCK: a task owns its directory, and may leave a FIFO where its next attempt's
    output goes. Opened to write, a FIFO waits for a reader (forever, the agent with it);
    this way the open fails at once (ENXIO), and one that a process the task left holds
    open is refused after it: only that attempt does not start. The flag is taken off
    again: the command's output is an ordinary file, as it expects."""
    parent, _, name = path.rpartition("/")
    out = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644,
                  dir_fd=dirs.open(parent or "/", create=True))
    try:
        if not stat.S_ISREG(os.fstat(out).st_mode):  # a FIFO a process of the task holds open, say
            raise OSError(errno.EINVAL, "%s is not a regular file" % path)
        fcntl.fcntl(out, fcntl.F_SETFL, os.O_APPEND)
        if uid is not None:
            os.fchown(out, uid, gid if gid is not None else -1)
    except BaseException:
        os.close(out)
        raise
    return out


def spawn(request, devnull):
    """posix_spawn, not fork: no copy of this interpreter's memory for each command. The
    agent is single-threaded, so it can lend the command its directory and user ids for
    the instant of the spawn and take them back."""
    uid, gid = request.get("uid"), request.get("gid")
    dirs = Dirs(KEPT_DIRS)
    opened = []
    try:
        outputs = open_outputs(request, dirs, uid, gid)
        actions = [(os.POSIX_SPAWN_DUP2, devnull, 0)]
        for fd, out in ((1, outputs[0]), (2, outputs[1])):
            if out is None:
                out = os.open("/dev/null", os.O_WRONLY | os.O_CLOEXEC)
            opened.append(out)
            actions.append((os.POSIX_SPAWN_DUP2, out, fd))
        cwd = request.get("cwd") or "/"
        try:
            os.fchdir(dirs.open(cwd, create=False))
        except OSError:
            cwd = "/"
            os.chdir("/")
        if gid is not None:
            os.setgroups([])
            os.setresgid(gid, gid, 0)
        if uid is not None:
            os.setresuid(uid, uid, 0)
        try:
            return start(request["argv"], request.get("env") or {}, cwd, actions)
        finally:
            os.setresuid(0, 0, 0)
            os.setresgid(0, 0, 0)
    finally:
        for out in opened:
            os.close(out)
        dirs.close()
        os.chdir("/")


def start(argv, env, cwd, actions):
    """Starts argv, or the program it names when argv is a shell running one plain call:
    Azure's node agent runs a command line without a shell, so a line that names one
    program and its plain arguments runs that program, as there, with PWD set as the
    shell would have set it. (It saves the shell's start, or a whole exec for a program that
    is not one of the shell's builtins.) When there is no such program on the command's
    PATH, or the kernel will not run it (a script without a #! line, say), the shell runs
    the line, as before, and says what it says about it."""
    words = plain_call(argv)
    if words is not None:
        # posix_spawnp looks the program up on this process's PATH: the command's, here
        # (the agent's environment serves nothing else).
        os.environ["PATH"] = env.get("PATH") or DEFAULT_PATH
        try:
            return os.posix_spawnp(words[0], words, {**env, "PWD": os.path.normpath(cwd)}, **_spawned(actions))
        except OSError:
            pass
    return os.posix_spawn(argv[0], argv, env, **_spawned(actions))


def _spawned(actions):
    return {"file_actions": actions, "setsid": True, "setsigdef": (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGCHLD)}


# One plain program call: words of characters no shell gives a meaning to (no quotes,
# escapes, variables, globs, redirections, separators, comments or newlines), the first
# not an assignment.
PLAIN_CALL = re.compile(r"[ \t]*[\w./,:+@%-]+(?:[ \t]+[\w./,:+@%=-]+)*[ \t]*", re.ASCII)


def plain_call(argv):
    """The words of LINE when argv is `/bin/sh -c LINE` and LINE is one plain call; else None."""
    if len(argv) != 3 or argv[0] != "/bin/sh" or argv[1] != "-c" or not PLAIN_CALL.fullmatch(argv[2]):
        return None
    return argv[2].split()


def report(exits):
    """Journals, then reports, exits: (request id, code) pairs, in one write to each, as
    the service's reader wakes for each write it gets."""
    lines = "".join(json.dumps({"id": request_id, "exit": code}) + "\n" for request_id, code in exits).encode()
    if JOURNAL is not None:
        try:
            JOURNAL.write(lines)
        except OSError:
            pass  # a full disk: the exit is still reported, only a crash now would lose it
    try:
        write_all(1, lines)
    except OSError:
        pass  # the service is gone: the journal has it


def write_all(fd, data):
    """A write of more than the pipe's atomic 4 KiB (many exits at once) may stop part way
    when a signal (SIGCHLD, here) comes in: the rest follows."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def reap(running):
    """Reaps every command that has ended since the last reap and reports them together."""
    ended = []
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            break
        request_id = running.pop(pid, None)  # orphans of commands are reaped silently
        if request_id is not None:
            ended.append((request_id, 128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)))
    if ended:
        report(ended)


def main():
    global JOURNAL
    spec = json.loads(sys.argv[1])
    if spec.get("exits"):  # host files: opened before entering the machine, never inherited by commands
        JOURNAL = Journal([os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
                           for path in spec["exits"]])
    for procs in spec.get("cgroup") or ():  # the machine's limits hold this process and all it starts
        with open(procs, "w") as f:
            f.write(str(os.getpid()))
    meminfo = MemInfo(spec["meminfo"]) if spec.get("meminfo") else None  # host files, read before entering
    seccomp = None
    if spec.get("seccomp"):
        with open(spec["seccomp"], "rb") as f:
            seccomp = f.read()
    net = os.open(spec["network"], os.O_RDONLY) if spec.get("network") else None  # a host path: open it first
    channel = socket.socket(fileno=spec["containers"]) if spec.get("containers") is not None else None
    ns = os.open(spec["namespace"], os.O_RDONLY)
    check(libc.setns(ns, CLONE_NEWNS), "setns")
    os.close(ns)
    if net is not None:
        check(libc.setns(net, CLONE_NEWNET), "setns network")
        os.close(net)
    check(libc.unshare(CLONE_NEWNS | CLONE_NEWPID), "unshare")
    pid = os.fork()
    if pid == 0:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        try:
            child(spec, meminfo, seccomp, channel)
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
