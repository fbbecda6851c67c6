"""Preparing this host to run machines: a private mount namespace for the service and a
check of what the kernel allows, which picks the machine provider."""

from __future__ import annotations

import logging
import os
import tempfile
import zlib
from pathlib import Path

from . import cgroups as cgroup_backends
from . import linux
from .directories import DirectoryMachineProvider
from .layers import LayerStore
from .machines import MachineProvider, NamespaceMachineProvider, UnavailableMachineProvider
from .tunnels import Tunnel

log = logging.getLogger("batchyard.runtime")


def enter_private_mount_namespace() -> bool:
    """Give the service its own mount namespace, before it starts any thread: every overlay
    and namespace file it mounts is then invisible to the host and vanishes with it."""
    allowed = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {linux.NAMESPACE_CPU})
        linux.unshare(linux.CLONE_NEWNS)
        linux.mount("none", "/", None, linux.MS_REC | linux.MS_PRIVATE)
        return True
    except OSError as exc:
        log.warning("no private mount namespace (%s)", exc)
        return False
    finally:
        os.sched_setaffinity(0, allowed)


def overlay_works(scratch: Path) -> str | None:
    """None when overlay mounts work here, else the reason they do not."""
    with tempfile.TemporaryDirectory(dir=scratch) as tmp:
        dirs = {name: Path(tmp) / name for name in ("lower", "upper", "work", "merged")}
        for d in dirs.values():
            d.mkdir()
        try:
            linux.mount("overlay", str(dirs["merged"]), "overlay", 0,
                        f"lowerdir={dirs['lower']},upperdir={dirs['upper']},workdir={dirs['work']}")
        except OSError as exc:
            return str(exc)
        linux.umount(str(dirs["merged"]), linux.MNT_DETACH)
    return None


def tag(runtime_root: Path) -> str:
    """Names this service's things on the host (cgroups, the NAT uplink and its table) after
    its data directory, so a restart finds its own and two services never share one."""
    return f"{zlib.crc32(str(runtime_root.resolve()).encode()):08x}"


def machine_cgroups(runtime_root: Path, wanted: bool) -> tuple[cgroup_backends.Cgroups | None, str]:
    """The cgroups of this service's machines, named after its data directory so a restart
    finds its own, and a sentence on what they enforce."""
    if not wanted:
        return None, "NO limits from the VM size (switched off)"
    name = f"batchyard-{tag(runtime_root)}"
    backend, how = cgroup_backends.detect(name)
    if backend is None:
        return None, f"NO limits from the VM size ({how})"
    return backend, f"VM size limits by {how}"


def choose_provider(runtime_root: Path, layers: LayerStore, namespaces: bool,
                    fakechroot: str | None, cgroups: bool = True, networks: bool = True,
                    outbound_nat: str = "auto", tunnel: Tunnel | None = None,
                    registry_ca_bundle: str | None = None) -> tuple[MachineProvider, str]:
    """Returns the provider and a sentence for the start banner: isolated machines where
    the kernel allows them, else the documented fallback (plain directories and copies,
    run through fakechroot), else none. A host of a cluster gives the `tunnel` that joins
    its networks to the other hosts' (tunnels.py)."""
    reason = None if namespaces else "this host allows no mount namespaces"
    if reason is None and os.geteuid() != 0:
        reason = "the service is not running as root"
    if reason is None:
        reason = overlay_works(layers.tmp)
    if reason is None:
        limits, limits_note = machine_cgroups(runtime_root, cgroups)
        provider = NamespaceMachineProvider(runtime_root, layers, limits, networks, outbound_nat, tag(runtime_root),
                                            tunnel, registry_ca_bundle)
        filtered = f"NO seccomp filter: {provider.seccomp_missing}" if provider.seccomp_missing else "seccomp"
        networked = f"NO private networks: {provider.networks_missing}" if provider.networks_missing else \
            f"private networks, service at {provider.service_address}, " + \
            (f"NO outbound NAT: {provider.outbound_missing}" if provider.outbound_missing else "outbound NAT")
        return provider, f"machines: isolated (mount+PID namespaces, overlayfs; {limits_note}; {filtered}; {networked})"
    if fakechroot and os.access(fakechroot, os.X_OK):
        return DirectoryMachineProvider(runtime_root, layers, fakechroot), \
            f"machines: NOT ISOLATED ({reason}): fallback to plain directories and copies through fakechroot, " \
            "slower; NOT enforced: VM size limits (cores, memory, processes), private networks (machines share the " \
            "host's network and loopback), capability and seccomp limits"
    return UnavailableMachineProvider(reason), f"machines: UNAVAILABLE on this host ({reason}; no fakechroot for " \
        "the fallback); Compute resources other than running VMs still work"
