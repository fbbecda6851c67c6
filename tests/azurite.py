"""Azurite's blob service as a real process for a test: on a free loopback port, with a
temporary workspace, stopped at the end. Installed by tests/clients/install.sh."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from pathlib import Path

from conftest import free_port, tool

ACCOUNT = "devstoreaccount1"
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
STORAGE_ID = ("/subscriptions/00000000-0000-0000-0000-0000000000b1/resourceGroups/batchyard/providers/"
              f"Microsoft.Storage/storageAccounts/{ACCOUNT}")


class Azurite:
    def __init__(self, workspace: Path):
        self.workspace = workspace
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/{ACCOUNT}"

    @property
    def connection_string(self) -> str:
        return (f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={KEY};"
                f"BlobEndpoint={self.endpoint};")

    def __enter__(self) -> "Azurite":
        self.workspace.mkdir(parents=True, exist_ok=True)
        log = open(self.workspace.parent / f"{self.workspace.name}.log", "ab")
        self.proc = subprocess.Popen(
            [str(tool("azurite", "node_modules/.bin/azurite-blob")), "--blobHost", "127.0.0.1", "--blobPort",
             str(self.port), "--location", str(self.workspace), "--silent", "--skipApiVersionCheck",
             "--disableTelemetry", "--loose"], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"azurite exited with {self.proc.returncode}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("azurite did not start")

    def __exit__(self, *exc) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
