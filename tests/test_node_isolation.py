"""Nodes that cannot reach what they should not, through the real azure-batch client: the
attacks of issue 13, tried by ordinary tasks, and seen to fail. Each node runs under its VM
size's limits (cgroups), with a container runtime's capabilities and seccomp filter."""

from __future__ import annotations

import pytest

from conftest import pool_settled, wait_for
from test_batch_pools import base_pool

POOL = "isolated"  # Standard_A1_v2: 1 vCPU, 2 GiB
ADMIN = {"autoUser": {"scope": "task", "elevationLevel": "admin"}}


@pytest.fixture(scope="module")
def pool(clients):
    clients.batch_key.create_pool(base_pool(clients, POOL, dedicated=1))
    pool_settled(clients.batch_key, POOL)
    return POOL


def run(batch, job: str, task_id: str, command: str, admin: bool = False, **extra):
    """Runs one task to completion; returns (task, stdout, stderr)."""
    body = {"id": task_id, "commandLine": command, **extra}
    if admin:
        body["userIdentity"] = ADMIN
    batch.create_task(job, body)
    task = wait_for(lambda: (t := batch.get_task(job, task_id)).state == "completed" and t, timeout=120,
                    what=f"task {task_id}")
    out, err = (b"".join(batch.download_task_file(job, task_id, name)).decode() for name in ("stdout.txt", "stderr.txt"))
    return task, out, err


@pytest.fixture(scope="module")
def job(clients, pool):
    clients.batch_key.create_job({"id": "attacks", "poolInfo": {"poolId": pool}})
    return "attacks"


def test_node_tells_its_size(clients, job):
    task, out, _ = run(clients.batch_key, job, "size", "nproc; grep MemTotal /proc/meminfo; "
                                                       "grep -c ^processor /proc/cpuinfo >/dev/null; echo ok")
    nproc, memtotal, ok = out.splitlines()
    assert ok == "ok"
    assert nproc == "1"
    assert memtotal.split()[1] == str(2 * 1024 * 1024)  # kB: Standard_A1_v2 has 2 GiB


def test_meminfo_follows_usage(clients, job):
    # a task holding 512 MiB (tail keeps its input until the end) sees MemFree fall by that much
    task, out, _ = run(clients.batch_key, job, "usage",
                       "grep MemFree /proc/meminfo; (head -c 536870912 /dev/zero; sleep 60) | tail > /dev/null & "
                       "while [ $(awk '/MemFree/ {print $2}' /proc/meminfo) -gt 1572864 ]; do sleep 0.2; done; "
                       "grep MemFree /proc/meminfo; trap '' TERM; kill 0")
    before, after = (int(line.split()[1]) for line in out.splitlines())
    assert task.execution_info.exit_code == 0
    assert before > 1900000 and after <= 1572864


def test_memory_hog_is_killed_by_the_node_limit(clients, job):
    batch = clients.batch_key
    # `tail` keeps a line until its end: 3 GiB without a newline is 3 GiB held
    task, _, _ = run(batch, job, "hog", "head -c 3221225472 /dev/zero | tail > /dev/null", admin=True)
    info = task.execution_info
    assert info.result == "failure" and info.exit_code == 137
    assert info.failure_info.category == "usererror" and info.failure_info.code == "TaskOutOfMemory"
    assert "out of memory" in info.failure_info.message
    assert {d.name: d.value for d in info.failure_info.details}["MemoryLimitMiB"] == "2048"
    assert batch.get_pool(POOL).id == POOL  # the service still answers
    task, out, _ = run(batch, job, "after-hog", "echo fine")  # and the node still works
    assert task.execution_info.exit_code == 0 and out == "fine\n"


def test_fork_bomb_is_contained(clients, job):
    batch = clients.batch_key
    # bash lives on when a fork fails (dash would exit), until the wall clock ends the whole group
    task, _, err = run(batch, job, "bomb", "bash -c 'bomb() { bomb | bomb & }; bomb; while :; do sleep 1; done'",
                       constraints={"maxWallClockTime": "PT8S"})
    assert task.execution_info.failure_info.code == "MaxWallClockTimeExpiry"
    assert "fork" in err.lower() or "resource temporarily unavailable" in err.lower()
    assert batch.get_pool(POOL).id == POOL
    task, out, _ = run(batch, job, "after-bomb", "echo recovered")
    assert task.execution_info.exit_code == 0 and out == "recovered\n"


KEYCTL = "import ctypes, os; libc = ctypes.CDLL(None, use_errno=True); " \
         "r = libc.syscall(250, 0, -3, 0); print(r, os.strerror(ctypes.get_errno()))"  # keyctl(GET_KEYRING_ID)
PACKET = "import socket; socket.socket(socket.AF_PACKET, socket.SOCK_RAW)"


@pytest.mark.parametrize("name, command, refusal", [
    ("packet", f"python3 -c '{PACKET}'", "Operation not permitted"),
    ("fifo", "chrt -f 10 true", "Operation not permitted"),
    ("userns", "unshare -U true", "Operation not permitted"),
    ("keyring", f"python3 -c '{KEYCTL}' && exit 1", "-1 Operation not permitted"),
    ("mount", "mount -t tmpfs none /tmp", "ermission denied"),
    ("nice", "renice -n -5 -p $$", "Permission denied"),
])
def test_admin_task_cannot_reach_the_kernel(clients, job, name, command, refusal):
    task, out, err = run(clients.batch_key, job, f"admin-{name}", command, admin=True)
    assert task.execution_info.exit_code != 0, out + err
    assert refusal in out + err


def test_admin_task_keeps_what_a_container_keeps(clients, job):
    # root in a node still owns its files, changes users and binds low ports (in its own network)
    task, out, err = run(clients.batch_key, job, "admin-allowed",
                         "touch f && chown 10001:10001 f && stat -c %u f && setpriv --reuid 10001 id -u && "
                         "grep CapBnd /proc/self/status", admin=True)
    assert task.execution_info.exit_code == 0, err
    owner, uid, bounding = out.splitlines()
    assert owner == "10001" and uid == "10001"
    assert int(bounding.split()[1], 16) == sum(1 << c for c in (0, 1, 3, 4, 5, 6, 7, 8, 10, 18, 29, 31))
