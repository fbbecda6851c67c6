"""The server process itself: both stop signals end it cleanly."""

from __future__ import annotations

import json
import signal
import sqlite3

import pytest
from azure.core.exceptions import ResourceNotFoundError

from conftest import Clients, Server


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_stop_signals_shut_down_cleanly(tmp_path, stop_signal):
    server = Server(tmp_path / "data", tls=False)
    with server:
        connection = tmp_path / "data" / "connection.json"
        assert connection.exists()
        server.proc.send_signal(stop_signal)
        assert server.proc.wait(30) == 0
        # connection.json names a server that is gone once it stops: a clean stop removes it
        assert not connection.exists()


def test_start_reclaims_what_a_crash_left(tmp_path):
    """A crash between attaching a new VM's disks and recording the VM leaves disks attached
    to nothing; one mid-snapshot leaves a staging copy. The next start clears both."""
    with Server(tmp_path / "data") as server:
        clients = Clients(server.info)
        clients.resource.resource_groups.create_or_update("crash", {"location": clients.location})
        disk = clients.compute.disks.begin_create_or_update("crash", "left", {
            "location": clients.location, "properties": {"creationData": {"createOption": "Empty"},
                                                         "diskSizeGB": 4}}).result()
        server.proc.kill()  # SIGKILL: no cleanup of any kind
        server.proc.wait()
        ghost = f"/subscriptions/{clients.subscription}/resourceGroups/crash/providers/Microsoft.Compute/" \
                "virtualMachines/never-recorded"
        with sqlite3.connect(tmp_path / "data" / "batchyard.db") as db:
            (body,) = db.execute("SELECT body FROM resources WHERE key = ?", (disk.id.lower(),)).fetchone()
            body = json.loads(body)
            body["managedBy"] = ghost
            body["properties"]["diskState"] = "Attached"
            db.execute("UPDATE resources SET body = ? WHERE key = ?", (json.dumps(body), disk.id.lower()))
        staging = tmp_path / "data" / "runtime" / "layers" / "tmp" / "interrupted-snapshot"
        staging.mkdir()
        (staging / "half-copied").write_bytes(b"x" * (1 << 20))

        clients = Clients(server.start())
        assert not staging.exists()
        released = clients.compute.disks.get("crash", "left")
        assert released.managed_by is None and released.disk_state == "Unattached"
        clients.compute.disks.begin_delete("crash", "left").result()
        with pytest.raises(ResourceNotFoundError):
            clients.compute.disks.get("crash", "left")
