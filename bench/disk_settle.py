"""Waiting for the disk to settle before a benchmark whose every task makes files.

An ext4 without a journal (this machine's root) will not reuse an inode freed in the last
minute, or the last six while its inode-table block is dirty (the kernel's
`recently_deleted`): a new file or directory looks up every such inode of its block group,
one at a time, before the one it gets. After anything deleted many files (a test suite, an
earlier benchmark's cleanup), and for minutes after, a new file costs 10 - 50 times more:
measured here, 6 us of CPU settled and 50 - 350 us unsettled for each of a task's four (its
directory, its wd, its stdout.txt and stderr.txt), which moves the task figures by up to a
fifth; it settles in 2 - 5 minutes. A journalled ext4, XFS or tmpfs never pays it.

So before measuring, the benchmark makes batches of empty files where its data directory
will be and waits until a new file costs what it does on a settled disk; the files are kept
(deleting them would free inodes again) and go with the benchmark's directory at its end.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

FILES_PER_PROBE = 400
SETTLED_MICROSECONDS = 15.0  # wall time; a settled ext4 here: 10 - 15 us a file, unsettled 20 - 350
PROBE_EVERY_SECONDS = 10.0
LONGEST_WAIT_SECONDS = 420.0  # the kernel's longest: 60 s, plus 300 s while the block is dirty


def file_cost(directory: Path) -> float:
    """Microseconds of wall time to make one empty file in a new subdirectory of `directory`."""
    probe = directory / f"probe-{time.monotonic_ns()}"
    probe.mkdir()
    start = time.perf_counter()
    for n in range(FILES_PER_PROBE):
        os.close(os.open(probe / str(n), os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600))
    return (time.perf_counter() - start) / FILES_PER_PROBE * 1e6


def wait_until_settled(directory: Path) -> Path:
    """`directory`, once a new file there costs a settled disk's, or after the longest the
    kernel remembers a freed inode; prints what it found and how long it waited."""
    probes = directory / "disk-probes"
    probes.mkdir(exist_ok=True)
    start = time.monotonic()
    first = cost = file_cost(probes)
    while cost > SETTLED_MICROSECONDS and time.monotonic() - start < LONGEST_WAIT_SECONDS:
        time.sleep(PROBE_EVERY_SECONDS)
        cost = file_cost(probes)
    waited = time.monotonic() - start
    if first <= SETTLED_MICROSECONDS:
        print(f"disk: a new file costs {cost:.0f} us: settled", flush=True)
    else:
        state = "settled" if cost <= SETTLED_MICROSECONDS else "still not settled"
        print(f"disk: a new file cost {first:.0f} us (inodes freed in the last minutes, see "
              f"bench/disk_settle.py); {state} after {waited:.0f} s: {cost:.0f} us", flush=True)
    return directory
