"""Host-style account endpoints (https://{account}.{suffix}:{port}/) and `serve
--azure-hostnames`, driven by clients that know nothing of Batchyard: the Node.js Batch SDK
from npm, and the Python SDKs with Azure's default public-cloud endpoints. Names resolve
through a private /etc/hosts in a mount namespace of the client's own."""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from conftest import Server, tool, with_hosts

CLIENTS = Path(__file__).resolve().parent / "clients"


def steps(output: str) -> dict:
    return {line["step"]: line for line in map(json.loads, output.splitlines())}


def test_node_sdk_drives_the_host_style_endpoint(server, tmp_path):
    info = server.info
    host = f"{info['batch_account']}.{info['batch_host_suffix']}"
    assert info["batch_host_endpoint"] == f"https://{host}:{server.port}"
    hosts = tmp_path / "hosts"
    hosts.write_text(f"127.0.0.1 localhost\n127.0.0.1 {host}\n")
    node_modules = tool("node", "node_modules")
    run = uuid.uuid4().hex[:8]
    result = subprocess.run(
        with_hosts(hosts, ["node", str(CLIENTS / "batch_node.js"), info["batch_host_endpoint"],
                           info["batch_account"], info["batch_account_key"], run]),
        env={**os.environ, "NODE_PATH": str(node_modules), "NODE_EXTRA_CA_CERTS": info["ca_bundle"]},
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    seen = steps(result.stdout)
    assert seen["images"]["count"] >= 1
    # URLs in responses name the endpoint the client used.
    assert seen["pool"]["url"] == f"{info['batch_host_endpoint']}/pools/node-pool-{run}"
    assert seen["task"]["url"] == f"{info['batch_host_endpoint']}/jobs/node-job-{run}/tasks/hello"
    assert (seen["task"]["state"], seen["task"]["exitCode"]) == ("completed", 0)
    assert seen["tasks"]["ids"] == ["hello"]
    assert seen["task-deleted"]["remaining"] == 0
    assert "job-deleted" in seen
    assert seen["pool-deleted"]["exists"] == 404
