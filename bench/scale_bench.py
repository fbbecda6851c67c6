"""The figures of large pools, large jobs and heavy clients, in one run: pools of 100, 1,000
and 2,500 nodes to idle and the cost per node (batch_bench.py), a page of 100 tasks in a
job of 100,000 (list_bench.py), and task throughput idle, under 16 listing clients, with 4
and 16 slots a node, and against Ray (task_bench.py). Each runs in its own process, as
when run alone, and prints its own figures and targets.

Before each, when run as root, the page cache is dropped after a sync: this machine's ext4
has no journal, so while the inode-table blocks of files deleted in the last minutes are
cached, each new file or directory is checked against them (the kernel's
`recently_deleted`), and the tasks' directories cost several times more right after a
benchmark before it deleted its own.

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
        ["batch_bench.py", "--sizes", "100,1000" if args.quick else "100,1000,2500", "--start-nodes", "0",
         "--one-image"],
        ["list_bench.py", "--tasks", "20000" if args.quick else "100000"],
        ["task_bench.py", "--no-slurm", *(["--no-ray"] if args.no_ray else [])],
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
