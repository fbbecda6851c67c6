"""Large output files to Azure Storage: a task writes a file of --size MiB (default 1 GiB),
its outputFiles entry uploads it to a container SAS in Azurite's blob service, and the
service's peak resident memory during the upload is compared with before (VmHWM after
resetting it through /proc/PID/clear_refs; needs root, as the machines do). The upload goes
a 4 MiB block at a time, so the growth stays far below the file. Target: under 64 MiB.
Also reports the upload's throughput and checks the blob byte for byte (SHA-256).

Usage: bench/storage_bench.py [--size 1024]
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from azure.storage.blob import BlobServiceClient, ContainerSasPermissions, generate_container_sas  # noqa: E402

from azurite import ACCOUNT, KEY, Azurite  # noqa: E402
from conftest import Clients, Server, pool_settled  # noqa: E402
from test_batch_pools import base_pool  # noqa: E402


def status_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=1024, help="MiB")
    size = parser.parse_args().size
    with tempfile.TemporaryDirectory(prefix="batchyard-bench-") as tmp, Azurite(Path(tmp) / "azurite") as azurite, \
            Server(Path(tmp) / "data", extra_env={"BATCHYARD_STORAGE_BLOB_ENDPOINT": azurite.endpoint}) as server:
        clients = Clients(server.info)
        batch = clients.batch_key
        blobs = BlobServiceClient.from_connection_string(azurite.connection_string)
        blobs.create_container("large")
        sas = generate_container_sas(ACCOUNT, "large", account_key=KEY, permission=ContainerSasPermissions(
            read=True, write=True, list=True), expiry=datetime.now(timezone.utc) + timedelta(hours=2))
        batch.create_pool(base_pool(clients, "bench", dedicated=1))
        pool_settled(batch, "bench")
        batch.create_job({"id": "large", "poolInfo": {"poolId": "bench"}})
        pid = server.proc.pid
        with open(f"/proc/{pid}/clear_refs", "w") as clear:
            clear.write("5")
        before = status_kib(pid, "VmRSS")
        batch.create_task("large", {
            "id": "big", "commandLine": f"/bin/sh -c 'head -c {size}M /dev/urandom > big.bin && "
                                        "sha256sum big.bin && date +%s.%N'",
            "outputFiles": [{"filePattern": "big.bin", "destination": {"container": {
                "containerUrl": f"{blobs.url.rstrip('/')}/large?{sas}"}},
                "uploadOptions": {"uploadCondition": "taskSuccess"}}]})
        while (task := batch.get_task("large", "big")).state != "completed":
            time.sleep(0.2)
        ended = time.time()
        peak = status_kib(pid, "VmHWM")
        assert task.execution_info.result == "success", task.execution_info.failure_info
        out = b"".join(batch.download_task_file("large", "big", "stdout.txt")).decode().split()
        written, file_done = out[0], float(out[2])
        digest = hashlib.sha256()
        for chunk in blobs.get_blob_client("large", "big.bin").download_blob().chunks():
            digest.update(chunk)
        assert digest.hexdigest() == written, "the blob differs from the file"
        growth = (peak - before) / 1024
        print(f"output of {size} MiB uploaded in blocks, checked byte for byte (SHA-256)")
        print(f"upload: about {size / max(ended - file_done, 1e-3):.0f} MiB/s "
              f"(from the file's end to the task's completion seen by the client)")
        print(f"service memory: {before / 1024:.0f} MiB before, peak {peak / 1024:.0f} MiB: growth {growth:.1f} MiB "
              f"(target < 64 MiB) {'OK' if growth < 64 else 'OVER'}")


if __name__ == "__main__":
    main()
