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


def free_loopback_for_https() -> str:
    """A loopback address of our own whose port 443 is free: every 127/8 address is local, so
    the test needs neither 127.0.0.1:443 nor anything else already listening."""
    for _ in range(50):
        address = f"127.{random.randint(100, 250)}.{random.randint(0, 255)}.{random.randint(1, 254)}"
        with socket.socket() as s:
            try:
                s.bind((address, 443))
            except OSError:
                continue
        return address
    raise AssertionError("no loopback address with a free port 443")


@pytest.fixture(scope="module")
def azure_named(tmp_path_factory):
    """A server that also answers as Azure's public-cloud names on 443 of its own address."""
    address = free_loopback_for_https()
    data_dir = tmp_path_factory.mktemp("azure-named") / "data"
    with Server(data_dir, args=["--azure-hostnames", "--azure-hostnames-address", address]) as srv:
        yield srv, address


def test_azure_hostnames_serve_the_default_public_cloud(azure_named, tmp_path):
    from conftest import Clients

    srv, address = azure_named
    info = srv.info
    assert info["azure_hostnames"]["address"] == address
    clients = Clients(info)
    # A second account, in another region: `batchyard hosts` names it too.
    run = uuid.uuid4().hex[:8]
    name = f"pub{run}"
    clients.batch_mgmt.batch_account.begin_create(info["resource_group"], name, {"location": "eastus"}).result()

    # The running server's address is the default.
    hosts = subprocess.run([sys.executable, "-m", "batchyard.cli", "hosts", "--data-dir", str(srv.data_dir)],
                           capture_output=True, text=True, check=True).stdout
    lines = [line for line in hosts.splitlines() if line and not line.startswith("#")]
    assert f"{address} management.azure.com" in lines
    assert f"{address} login.microsoftonline.com" in lines
    assert f"{address} devbatch.westus.batch.azure.com" in lines
    assert f"{address} {name}.eastus.batch.azure.com" in lines
    assert f"127.0.0.1 {name}.batch.localhost" in lines
    assert info["ca_bundle"] in hosts
    hosts_file = tmp_path / "hosts"
    hosts_file.write_text(f"127.0.0.1 localhost\n{hosts}{address} nosuchaccount.eastus.batch.azure.com\n"
                          f"{address} {name}.westus.batch.azure.com\n")

    # The client trusts the CA through connection_verify= only (requests lets these override it).
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AZURE_", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_"))}
    result = subprocess.run(
        with_hosts(hosts_file, [sys.executable, str(CLIENTS / "azure_public_cloud.py"),
                                str(srv.data_dir / "connection.json"), name, info["resource_group"], run]),
        env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    seen = steps(result.stdout)
    tokens = [json.loads(line) for line in result.stdout.splitlines() if '"token"' in line]
    for token in tokens:
        assert token["iss"] == f"https://login.microsoftonline.com/{info['tenant_id']}/v2.0"
    assert [t["aud"] for t in tokens] == ["https://management.azure.com/", "https://batch.core.windows.net/"]
    assert seen["group"]["exists"] is True
    assert seen["account"]["endpoint"] == f"{name}.eastus.batch.azure.com"
    endpoint = f"https://{name}.eastus.batch.azure.com"
    assert seen["pool"]["url"] == f"{endpoint}/pools/public-pool-{run}"
    assert seen["pool"]["listed"] == [f"public-pool-{run}"]
    assert seen["pool-deleted"]["code"] == "PoolNotFound"
    for step in ("unknown-account", "other-region"):
        assert seen[step] == {"step": step, "status": 404, "code": "AccountNotFound"}
    assert seen["msal"]["aliases"] == [["login.microsoftonline.com"]]
    assert seen["msal"]["sources"] == ["identity_provider", "identity_provider"]
