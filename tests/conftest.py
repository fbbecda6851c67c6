"""A live server per test session, driven through the real Azure SDKs."""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from azure.batch import BatchClient
from azure.core.credentials import AzureNamedKeyCredential
from azure.identity import ClientSecretCredential
from azure.mgmt.batch import BatchManagementClient
from azure.mgmt.compute import ComputeManagementClient
from azure.mgmt.resource.resources import ResourceManagementClient


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`batchyard serve` as a real process; restartable on the same data directory."""

    def __init__(self, data_dir: Path, extra_env: dict | None = None, tls: bool = True,
                 args: list[str] | None = None, log: Path | None = None):
        """log: where the server's output goes (default: beside the data directory)."""
        self.data_dir = data_dir
        self.args = list(args or [])
        self.port = free_port()
        self.env = {**os.environ, **(extra_env or {})}
        self.tls = tls
        self.proc: subprocess.Popen | None = None
        self.log = log or data_dir.parent / f"{data_dir.name}.log"

    def start(self) -> dict:
        cmd = [sys.executable, "-m", "batchyard.cli", "serve", "--data-dir", str(self.data_dir),
               "--port", str(self.port)] + ([] if self.tls else ["--no-tls"]) + self.args
        self.proc = subprocess.Popen(cmd, env=self.env, stdout=open(self.log, "ab"), stderr=subprocess.STDOUT)
        connection = self.data_dir / "connection.json"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:  # a killed server's stale file goes when the new one starts: read it once
                info = json.loads(connection.read_text())
            except FileNotFoundError:
                info = {}
            if info.get("pid") == self.proc.pid:
                self.info = info
                return self.info
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()[-3000:]}")
            time.sleep(0.05)
        raise RuntimeError("server did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def set_quotas(self, account: str, *options: str) -> str:
        """`batchyard quota set --account ACCOUNT OPTIONS...` against this server; its output."""
        done = subprocess.run([sys.executable, "-m", "batchyard.cli", "quota", "set", "--account", account,
                               "--data-dir", str(self.data_dir), *options],
                              env=self.env, capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"quota set failed: {done.stderr}")
        return done.stdout

    def restart(self) -> dict:
        self.stop()
        return self.start()

    def __enter__(self) -> "Server":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def with_hosts(hosts_file: Path, argv: list[str]) -> list[str]:
    """argv run in a private mount namespace whose /etc/hosts is `hosts_file`: names resolve
    there without touching the machine's resolver (needs root, as the machines do)."""
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c",
            'mount --bind "$0" /etc/hosts && exec "$@"', str(hosts_file), *argv]


class Clients:
    def __init__(self, info: dict):
        self.info = info
        ca = info.get("ca_bundle")
        self.credential = ClientSecretCredential(
            info["tenant_id"], info["client_id"], info["client_secret"], authority=info["authority"],
            disable_instance_discovery=True, connection_verify=ca)
        self.resource = ResourceManagementClient(self.credential, info["subscription_id"],
                                                 base_url=info["arm_endpoint"], connection_verify=ca)
        self.compute = ComputeManagementClient(self.credential, info["subscription_id"],
                                               base_url=info["arm_endpoint"], connection_verify=ca)
        self.batch_mgmt = BatchManagementClient(self.credential, info["subscription_id"],
                                                base_url=info["arm_endpoint"], connection_verify=ca)
        # the data plane, signed with the account key and with a bearer token
        self.batch_key = BatchClient(info["batch_endpoint"], AzureNamedKeyCredential(
            info["batch_account"], info["batch_account_key"]), connection_verify=ca)
        self.batch = BatchClient(info["batch_endpoint"], self.credential, connection_verify=ca)
        self.subscription = info["subscription_id"]
        self.location = info["location"]


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    with Server(tmp_path_factory.mktemp("server") / "data") as srv:
        # Every module shares this server and leaves its pools and jobs there: the account's
        # default quotas (100 pools, 300 active jobs, 900 cores) would depend on test order.
        # tests/test_quotas.py checks the quotas on a server of its own.
        srv.set_quotas(srv.info["batch_account"], "--pools", "10000", "--active-jobs", "100000",
                       "--dedicated-cores", "10000000", "--low-priority-cores", "10000000")
        yield srv


@pytest.fixture(scope="session")
def clients(server) -> Clients:
    return Clients(server.info)


def base_image_reference(compute, location: str) -> dict:
    publisher = compute.virtual_machine_images.list_publishers(location)[0].name
    offer = compute.virtual_machine_images.list_offers(location, publisher)[0].name
    sku = compute.virtual_machine_images.list_skus(location, publisher, offer)[0].name
    return {"publisher": publisher, "offer": offer, "sku": sku, "version": "latest"}


def vm_body(location: str, image: dict, data_disks: list | None = None, os_disk: dict | None = None) -> dict:
    storage = {"imageReference": image, "osDisk": {"createOption": "FromImage", **(os_disk or {})}}
    if data_disks is not None:
        storage["dataDisks"] = data_disks
    return {"location": location, "properties": {"hardwareProfile": {"vmSize": "Standard_D2s_v3"},
                                                 "storageProfile": storage}}


def run_script(compute, rg: str, vm: str, *lines: str) -> str:
    """stdout of a RunShellScript, parsed out of the agent's message as callers do."""
    result = compute.virtual_machines.begin_run_command(
        rg, vm, {"commandId": "RunShellScript", "script": list(lines)}).result()
    message = result.value[0].message
    return message.split("[stdout]\n", 1)[1].split("\n[stderr]\n", 1)[0]


def image_of_vm(compute, location: str, rg: str, vm, image: str):
    """A managed image `image` from a snapshot of the VM's OS disk (named `{image}-os`)."""
    snap = compute.snapshots.begin_create_or_update(rg, f"{image}-os", {"location": location, "properties": {
        "creationData": {"createOption": "Copy", "sourceResourceId": vm.storage_profile.os_disk.managed_disk.id}}}
    ).result()
    return compute.images.begin_create_or_update(rg, image, {"location": location, "properties": {
        "storageProfile": {"osDisk": {"osType": "Linux", "osState": "Generalized",
                                      "snapshot": {"id": snap.id}}}}}).result()


def build_flow(clients, rg: str) -> dict:
    """VM from a base image -> software and data -> snapshots -> later change -> image -> VM."""
    c = clients.compute
    clients.resource.resource_groups.create_or_update(rg, {"location": clients.location})
    base = base_image_reference(c, clients.location)
    builder = c.virtual_machines.begin_create_or_update(rg, "builder", vm_body(
        clients.location, base, data_disks=[{"lun": 0, "createOption": "Empty", "diskSizeGB": 8}])).result()
    out = run_script(c, rg, "builder",
                     "mkdir -p /opt/tool",
                     "printf '#!/bin/sh\\necho tool-v1 \"$@\"\\n' > /opt/tool/run",
                     "chmod +x /opt/tool/run",
                     "echo reference-data > /datadisks/lun0/input.txt",
                     "/opt/tool/run installed")
    assert out.strip() == "tool-v1 installed"
    os_snap = c.snapshots.begin_create_or_update(rg, "snap-os", {
        "location": clients.location, "properties": {"creationData": {
            "createOption": "Copy", "sourceResourceId": builder.storage_profile.os_disk.managed_disk.id}}}).result()
    data_snap = c.snapshots.begin_create_or_update(rg, "snap-data", {
        "location": clients.location, "properties": {"creationData": {
            "createOption": "Copy", "sourceResourceId": builder.storage_profile.data_disks[0].managed_disk.id}}}).result()
    run_script(c, rg, "builder", "echo after-snapshot > /opt/tool/later", "rm /datadisks/lun0/input.txt")
    image = c.images.begin_create_or_update(rg, "tool-image", {
        "location": clients.location, "properties": {"hyperVGeneration": "V2", "storageProfile": {
            "osDisk": {"osType": "Linux", "osState": "Generalized", "snapshot": {"id": os_snap.id}},
            "dataDisks": [{"lun": 0, "snapshot": {"id": data_snap.id}}]}}}).result()
    worker = c.virtual_machines.begin_create_or_update(rg, "worker", vm_body(
        clients.location, {"id": image.id})).result()
    return {"builder": builder, "image": image, "worker": worker, "snapshots": (os_snap, data_snap)}


def wait_for(condition, timeout: float = 60.0, interval: float = 0.1, what: str = "condition"):
    """Poll until `condition()` returns something truthy; returns it."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


def connect_raw(info: dict) -> socket.socket:
    """A plain socket to the server (TLS when it serves TLS), for requests no client would send."""
    url = urlsplit(info["arm_endpoint"])
    sock = socket.create_connection((url.hostname, url.port), timeout=30)
    if url.scheme == "https":
        sock = ssl.create_default_context(cafile=info["ca_bundle"]).wrap_socket(sock, server_hostname=url.hostname)
    return sock


def agents_of(machine: str) -> list[int]:
    """The pids of a machine's command agents (runtime/launcher.py), found by the exit journal
    each is given (the machine's key is in its path): the agent an idle close ended is gone."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if f"{machine}/exits.0".encode() in cmdline.read_bytes():
                pids.append(int(cmdline.parent.name))
        except OSError:
            continue  # gone meanwhile
    return pids


def marketplace_pool(batch, pool_id: str, vm_size: str = "standard_a1_v2", dedicated: int = 0, **extra) -> None:
    """A pool of the first image the account supports (through the data plane's client)."""
    image = next(iter(batch.list_supported_images()))
    ref = image.image_reference
    batch.create_pool({"id": pool_id, "vmSize": vm_size, "targetDedicatedNodes": dedicated, **extra,
                       "virtualMachineConfiguration": {"imageReference": {
                           "publisher": ref.publisher, "offer": ref.offer, "sku": ref.sku},
                           "nodeAgentSKUId": image.node_agent_sku_id}})


def pool_settled(batch, pool_id: str, states=("idle",)):
    """The pool is steady and every node is in one of `states`; returns (pool, nodes)."""
    def check():
        pool = batch.get_pool(pool_id)
        nodes = list(batch.list_nodes(pool_id))
        if pool.allocation_state == "steady" and all(n.state in states for n in nodes):
            return pool, nodes
        return None
    return wait_for(check, what=f"pool {pool_id} to settle")


def tools_dir() -> Path:
    """Where tests/clients/install.sh puts the external clients the tests drive."""
    return Path(os.environ.get("BATCHYARD_TOOLS") or Path(__file__).resolve().parent.parent / ".tools")


def tool(name: str, executable: str) -> Path:
    """An executable of an installed external client; the test fails (never skips) without it."""
    path = tools_dir() / name / executable
    if not path.exists() or not (tools_dir() / name / ".complete").exists():
        pytest.fail(f"{path} is missing: run tests/clients/install.sh")
    return path


@contextlib.contextmanager
def serving(body: bytes):
    """One body over HTTP on loopback (a resource file's httpUrl); yields its URL."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/data.bin"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()

