"""Waiting for the disk to settle before a benchmark whose every task makes files.

An ext4 without a journal (this machine's root) will not reuse an inode freed in the last
minute, or the last six while its inode-table block is dirty (the kernel's
`recently_deleted`): a new file or directory looks up every such inode of its block group,
one at a time, before the one it gets. After anything deleted many files (a test suite, an
earlier benchmark's cleanup), and for minutes after, a new file costs 10 - 50 times more:
measured here, 6 us of CPU settled and 50 - 350 us unsettled for each of a task's four (its
directory, its wd, its stdout.txt and stderr.txt), which moves the task figures by up to a
fifth. A journalled ext4, XFS or tmpfs never pays it.

So before measuring, the benchmark makes two batches of empty files where its data
directory will be, and judges by the second (the first reads what a dropped page cache
lost). When a new file costs more than on a settled disk, something freed inodes within
the kernel's longest memory of them, and it waits that long, once. It is a sample: the
probe's block groups are not always the tasks', so a settled probe is likely, not sure,
to mean settled tasks (the bench prints each run's agent CPU a task, which tells).

Later probes are no guide: once those inode-table blocks are written back, the kernel
remembers a freed inode for a minute only, and a probe's few files find none; but the
tasks' thousands of files make the blocks dirty again, and then it remembers them for six.
The files are kept (deleting them would free inodes again) and go with the benchmark's
directory at its end.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

FILES_PER_PROBE = 400
SETTLED_MICROSECONDS = 15.0  # wall time; a settled ext4 here: 9 - 15 us a file, unsettled 17 - 350
LONGEST_MEMORY_SECONDS = 370.0  # the kernel's: 60 s, plus 300 s while the inode's block is dirty


def file_cost(directory: Path) -> float:
    """Microseconds of wall time to make one empty file in a new subdirectory of `directory`."""
    probe = directory / f"probe-{time.monotonic_ns()}"
    probe.mkdir()
    start = time.perf_counter()
    for n in range(FILES_PER_PROBE):
        os.close(os.open(probe / str(n), os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600))
    return (time.perf_counter() - start) / FILES_PER_PROBE * 1e6


def wait_until_settled(directory: Path) -> Path:
    """`directory`, once no inode freed before the call that the probe found is one the
    kernel still skips; prints what it found."""
    probes = directory / "disk-probes"
    probes.mkdir(exist_ok=True)
    file_cost(probes)  # reads the bitmaps and inode tables a dropped page cache lost
    cost = file_cost(probes)
    if cost <= SETTLED_MICROSECONDS:
        print(f"disk: a new file costs {cost:.0f} us: settled", flush=True)
    else:
        print(f"disk: a new file costs {cost:.0f} us: inodes were freed in the last minutes (see "
              f"bench/disk_settle.py); waiting {LONGEST_MEMORY_SECONDS:.0f} s", flush=True)
        time.sleep(LONGEST_MEMORY_SECONDS)
    return directory
