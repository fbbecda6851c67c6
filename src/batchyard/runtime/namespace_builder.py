"""Machines' mount namespaces built by the service's own threads, without a process each.

Starting an interpreter to build a namespace (mounter.py as a script) costs about 15 ms of
CPU a machine: most of what a node costs to start. A thread can do the same work itself,
because Linux keeps a mount namespace, a root and a working directory per thread once the
thread no longer shares them (`unshare(CLONE_FS)`):

- enter the template: a mount namespace copied from the service's when the provider
  started, before any machine. A new namespace is a copy of the one it is made in, so
  made from the service's own it would copy every machine's namespace files bound there
  (thousands of mounts on a large pool: the cost of each machine would grow with the
  machines already made); made from the template it copies a handful;
- make the machine's namespace there and build its root (`mounter.build_root`);
- go back to the service's namespace (and working directory) and bind the new namespace
  to its file: the kernel allows that only from an older namespace, and the service's is.

Between the root's move and the way back the thread sees the machine's files only: nothing
is imported or logged there (`mounter.build_root` is plain system calls), and the way back
is taken whatever happened.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from . import linux, mounter

CLONE_FS = 0x00000200


class NamespaceBuilder:
    def __init__(self) -> None:
        self._service_ns = os.open("/proc/self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
        self._template_ns: int | None = None
        made: list[int | BaseException] = []
        thread = threading.Thread(target=self._make_template, args=(made,), name="namespace-template")
        thread.start()
        thread.join()
        if isinstance(made[0], BaseException):
            os.close(self._service_ns)
            raise made[0]
        self._template_ns = made[0]

    def _make_template(self, made: list) -> None:
        """A thread that ends when done: its namespace lives on through the descriptor."""
        try:
            linux.unshare(linux.CLONE_NEWNS)
            linux.mount("none", "/", None, linux.MS_REC | linux.MS_PRIVATE)
            made.append(os.open("/proc/thread-self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC))
        except BaseException as exc:
            made.append(exc)

    def build(self, spec: dict, ns_file: Path) -> None:
        """The machine's namespace (see mounter.build_root for `spec`), bound at `ns_file`."""
        # every time: a thread this one started since shares its root and working directory
        linux.unshare(CLONE_FS)
        cwd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        allowed = os.sched_getaffinity(0)
        machine_ns = None
        try:
            linux.setns(self._template_ns, linux.CLONE_NEWNS)
            try:
                os.sched_setaffinity(0, {linux.NAMESPACE_CPU})  # see linux.NAMESPACE_CPU
                linux.unshare(linux.CLONE_NEWNS)
                os.sched_setaffinity(0, allowed)
                machine_ns = os.open("/proc/thread-self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)  # no /proc after
                mounter.build_root(spec)
            finally:
                self._return(cwd, allowed)
            linux.mount(f"/proc/self/fd/{machine_ns}", str(ns_file), None, linux.MS_BIND)
        finally:
            os.close(cwd)
            if machine_ns is not None:
                os.close(machine_ns)

    def _return(self, cwd: int, allowed: set[int]) -> None:
        """Back in the service's namespace, root and working directory. A thread that cannot
        get back must not go on running the service's code in a machine's tree."""
        try:
            linux.setns(self._service_ns, linux.CLONE_NEWNS)
            os.fchdir(cwd)
            os.sched_setaffinity(0, allowed)
        except BaseException:
            os._exit(70)  # EX_SOFTWARE: nothing sane is left to do in this process

    def close(self) -> None:
        for fd in (self._template_ns, self._service_ns):
            if fd is not None:
                os.close(fd)
        self._template_ns = None
