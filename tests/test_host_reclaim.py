"""A host daemon of a Ray cluster (runtime/host_daemon.py) that dies without stopping (killed
with its raylet) leaves its machines' cgroups and its outbound NAT table on the host, named
after its directory, which no later daemon takes: Ray gives a node that comes back a new id.
The next daemon to start on the host takes them back, and leaves a live daemon's alone."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from batchyard.runtime import cgroups
from batchyard.runtime.cgroups import Limits
from batchyard.runtime.host import tag
from batchyard.runtime.host_daemon import LOCK, reclaim_dead_siblings

HOLD_LOCK = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(120)
"""


def left_by(host: Path) -> list[str]:
    """What a daemon of `host` keeps on the host: its cgroups and its NAT table."""
    name = tag(host)
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, check=True).stdout
    return [str(p) for p in Path("/sys/fs/cgroup").glob(f"*/batchyard-{name}")] + \
        [line for line in tables.splitlines() if line.endswith(f"batchyard_{name}")]


def daemon_state(host: Path) -> subprocess.Popen:
    """The directory, lock file, a machine's cgroup with a process in it, and the NAT table
    a daemon of `host` had; returns the machine's process."""
    host.mkdir(parents=True)
    (host / LOCK).touch()
    backend, _ = cgroups.detect(f"batchyard-{tag(host)}")
    backend.create("machine1", Limits(cores=1, memory_mib=64))
    process = subprocess.Popen(["sleep", "120"])
    for procs in backend.procs_files("machine1"):
        Path(procs).write_text(str(process.pid))
    subprocess.run(["nft", "add", "table", "inet", f"batchyard_{tag(host)}"], check=True)
    return process


def test_a_starting_daemon_takes_back_what_dead_daemons_left_and_only_theirs(tmp_path):
    hosts = tmp_path / "hosts"
    dead, alive, starting = hosts / "0a1dead", hosts / "0b2alive", hosts / "0c3starting"
    dead_machine, alive_machine = daemon_state(dead), daemon_state(alive)
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(alive / LOCK)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"  # alive's daemon lives: it holds its lock
        assert left_by(dead) and left_by(alive)

        assert reclaim_dead_siblings(starting) == [dead.name]
        assert left_by(dead) == [] and dead_machine.wait(timeout=10) == -9  # its machine's process ended
        assert not (dead / LOCK).exists() and dead.is_dir()  # looked at once; its files stay
        assert left_by(alive) and alive_machine.poll() is None
        assert reclaim_dead_siblings(starting) == []
    finally:
        holder.kill()
        holder.wait()
    # once its daemon has ended, the live one's turn comes
    assert reclaim_dead_siblings(starting) == [alive.name]
    assert left_by(alive) == [] and alive_machine.wait(timeout=10) == -9
    assert sorted(os.listdir(hosts)) == [dead.name, alive.name]  # nothing was made there
