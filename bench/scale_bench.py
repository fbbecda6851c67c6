"""The figures of large pools, large jobs and heavy clients, in one run: task throughput
idle, under 16 listing clients, with 4 and 16 slots a node, and against Ray
(task_bench.py), a page of 100 tasks in a job of 100,000 (list_bench.py), and pools of 100,
1,000 and 2,500 nodes to idle and the cost per node (batch_bench.py). Each runs in its own
process, as when run alone, and prints its own figures and targets.

Before each, when run as root, the page cache is dropped after a sync. This machine's ext4
has no journal, and then a new file costs many times more for minutes after anything
deleted many files (bench/disk_settle.py): the task benchmark checks, waits the kernel's
longest memory of a freed inode when it finds one, and runs first, before the other two
delete theirs; the node benchmark, whose figures have the widest margin, runs last.

Usage: bench/scale_bench.py [--no-ray] [--quick]   (--quick: 100 and 1,000 nodes, 20,000 tasks listed)
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def settle_the_disk() -> None:
    if os.geteuid() == 0:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--no-ray", action="store_true")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    runs = [
        ["task_bench.py", "--no-slurm", *(["--no-ray"] if args.no_ray else [])],
        ["list_bench.py", "--tasks", "20000" if args.quick else "100000"],
        ["batch_bench.py", "--sizes", "100,1000" if args.quick else "100,1000,2500", "--start-nodes", "0",
         "--one-image"],
    ]
    failed = []
    for script, *options in runs:
        print(f"== {script} {' '.join(options)}", flush=True)
        settle_the_disk()
        if subprocess.run([sys.executable, str(HERE / script), *options]).returncode != 0:
            failed.append(script)
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
