"""Credentials and the data directory: a random client secret and random account keys per
data directory (the published ones only with --dev-credentials), secrets never in the
database or the log in plaintext, every file private, and older data directories migrated."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import stat
from pathlib import Path

import pytest
from azure.batch import BatchClient
from azure.core.credentials import AzureNamedKeyCredential
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError
from azure.identity import ClientSecretCredential
from conftest import Clients, Server, pool_settled, wait_for

from batchyard import defaults
from batchyard.store.db import MIGRATIONS

RG = "credentials"


def published_secret_credential(info: dict) -> ClientSecretCredential:
    return ClientSecretCredential(info["tenant_id"], info["client_id"], defaults.CLIENT_SECRET,
                                  authority=info["authority"], disable_instance_discovery=True,
                                  connection_verify=info["ca_bundle"])


def assert_published_credentials_refused(info: dict) -> None:
    with pytest.raises(ClientAuthenticationError):
        published_secret_credential(info).get_token("https://management.azure.com/.default")
    keyed = BatchClient(info["batch_endpoint"], AzureNamedKeyCredential(info["batch_account"],
                                                                        defaults.BATCH_ACCOUNT_KEY),
                        connection_verify=info["ca_bundle"])
    with pytest.raises(HttpResponseError) as e:
        list(keyed.list_pools())
    assert e.value.status_code == 401 and e.value.error.code == "AuthenticationFailed"


def all_account_keys(clients: Clients) -> list[str]:
    accounts = clients.batch_mgmt.batch_account
    keys = []
    for account in accounts.list():
        rg = account.id.split("/resourceGroups/")[1].split("/")[0]
        pair = accounts.get_keys(rg, account.name)
        keys += [pair.primary, pair.secondary]
    return keys


def database_bytes(data_dir: Path) -> bytes:
    return b"".join(p.read_bytes() for p in data_dir.glob("batchyard.db*"))


def assert_no_secret_stored_in_plaintext(clients: Clients, data_dir: Path) -> None:
    stored = database_bytes(data_dir)
    secrets = all_account_keys(clients) + [clients.info["client_secret"]]
    assert len(secrets) >= 3
    for secret in secrets:
        assert secret.encode() not in stored
        assert secret.encode() not in (data_dir.parent / f"{data_dir.name}.log").read_bytes()


def modes_open_to_others(data_dir: Path) -> list[str]:
    """Everything the service keeps for itself, and the roots of the machines' trees (whose
    contents keep an ordinary system's modes behind them), with group or other bits."""
    found = []

    def check(path: Path) -> None:
        mode = path.lstat().st_mode
        if not stat.S_ISLNK(mode) and mode & 0o077:
            found.append(f"{path.relative_to(data_dir.parent)} {stat.filemode(mode)}")

    check(data_dir)
    for root, dirs, files in os.walk(data_dir):
        here = Path(root)
        if here == data_dir and "runtime" in dirs:
            dirs.remove("runtime")
            runtime = data_dir / "runtime"
            check(runtime)
            for child in runtime.iterdir():
                if child.is_dir() and not os.path.ismount(child):
                    check(child)
        for name in dirs + files:
            check(here / name)
    return found


def test_credentials_are_random_per_data_directory(server, clients, tmp_path_factory):
    with Server(tmp_path_factory.mktemp("credentials") / "data") as other:
        first, second = server.info, other.info
        assert first["client_secret"] != second["client_secret"]
        assert first["batch_account_key"] != second["batch_account_key"]
        for info in (first, second):
            assert info["client_secret"] != defaults.CLIENT_SECRET
            assert info["batch_account_key"] != defaults.BATCH_ACCOUNT_KEY
        # the other data directory's credentials open nothing here
        with pytest.raises(ClientAuthenticationError):
            ClientSecretCredential(first["tenant_id"], first["client_id"], second["client_secret"],
                                   authority=first["authority"], disable_instance_discovery=True,
                                   connection_verify=first["ca_bundle"]).get_token(defaults.BATCH_AUDIENCE + ".default")
        assert_published_credentials_refused(second)
        log = (other.data_dir.parent / f"{other.data_dir.name}.log").read_text()
        assert second["client_secret"] not in log and second["batch_account_key"] not in log
        assert "PUBLISHED" not in log


def test_connection_json_and_the_data_directory_are_private(server, clients):
    clients.resource.resource_groups.create_or_update(RG, {"location": clients.location})
    clients.batch_mgmt.batch_account.begin_create(RG, "acctprivate", {"location": clients.location}).result()
    clients.batch_mgmt.batch_account.regenerate_key(RG, "acctprivate", {"keyName": "Secondary"})
    assert stat.S_IMODE((server.data_dir / "connection.json").stat().st_mode) == 0o600
    assert stat.S_IMODE(server.data_dir.stat().st_mode) == 0o700
    assert modes_open_to_others(server.data_dir) == []


def test_keys_and_secrets_are_not_in_the_database_in_plaintext(server, clients):
    clients.resource.resource_groups.create_or_update(RG, {"location": clients.location})
    clients.batch_mgmt.batch_account.begin_create(RG, "acctsealed", {"location": clients.location}).result()
    assert_no_secret_stored_in_plaintext(clients, server.data_dir)


def test_dev_credentials_give_the_published_values(tmp_path_factory):
    with Server(tmp_path_factory.mktemp("devcreds") / "data", args=["--dev-credentials"]) as dev:
        info = dev.info
        assert info["client_secret"] == defaults.CLIENT_SECRET
        assert info["batch_account_key"] == defaults.BATCH_ACCOUNT_KEY
        clients = Clients(info)
        assert clients.batch_mgmt.batch_account.get(defaults.RESOURCE_GROUP, defaults.BATCH_ACCOUNT).name == \
            defaults.BATCH_ACCOUNT
        assert list(clients.batch_key.list_pools()) == []
        assert clients.info["batch_account_key"].encode() not in database_bytes(dev.data_dir)
        log = (dev.data_dir.parent / f"{dev.data_dir.name}.log").read_text()
        assert "WARNING" in log and "PUBLISHED" in log
        assert defaults.CLIENT_SECRET not in log and defaults.BATCH_ACCOUNT_KEY not in log


def _make_it_an_old_data_directory(data_dir: Path, plaintext: dict[str, list[str]]) -> None:
    """What an older Batchyard left: keys in plaintext, the published secret as a SHA-256,
    files readable by everyone."""
    db = sqlite3.connect(data_dir / "batchyard.db")
    with db:
        for key, keys in plaintext.items():
            internal = json.loads(db.execute("SELECT internal FROM resources WHERE key = ?", (key,)).fetchone()[0])
            internal.pop("sealed_keys")
            internal["keys"] = keys
            db.execute("UPDATE resources SET internal = ? WHERE key = ?", (json.dumps(internal), key))
        # before principals had several secrets and roles: one SHA-256 column, no assignments
        db.execute("DROP TABLE principal_secrets")
        db.execute("DROP TABLE role_assignments")
        db.execute("ALTER TABLE operations DROP COLUMN owner")
        db.execute("ALTER TABLE principals ADD COLUMN secret_sha256 TEXT NOT NULL DEFAULT ''")
        db.execute("UPDATE principals SET secret_sha256 = ?", (hashlib.sha256(defaults.CLIENT_SECRET.encode()).hexdigest(),))
        db.execute("DELETE FROM settings WHERE name IN ('development_client_secret', 'development_principal_roles')")
        # before node counts, node work and retired nodes were kept apart (migration 8)
        for trigger in ("batch_nodes_counted", "batch_nodes_uncounted", "batch_nodes_recounted"):
            db.execute(f"DROP TRIGGER {trigger}")
        for index in ("batch_nodes_undispatched", "batch_nodes_slots"):
            db.execute(f"DROP INDEX {index}")
        db.execute("ALTER TABLE batch_nodes DROP COLUMN work")
        db.execute("DROP TABLE batch_node_counts")
        db.execute("DROP TABLE batch_retired_nodes")
        # before task counts were kept (migration 10)
        for trigger in ("batch_tasks_counted", "batch_tasks_uncounted", "batch_tasks_recounted"):
            db.execute(f"DROP TRIGGER {trigger}")
        db.execute("DROP TABLE batch_task_counts")
        # before the jobs in motion were indexed by pool (migration 11)
        db.execute("DROP INDEX resources_moving_jobs")
        db.execute("ALTER TABLE resources DROP COLUMN moving_job_pool")
        # before the runnable index held the runnable tasks only (migration 12)
        db.execute("DROP INDEX batch_tasks_runnable")
        db.execute("CREATE INDEX batch_tasks_runnable ON batch_tasks (job_key, state, ready, seq)")
        # before a runnable multi-instance task was counted by its instances (migration 13)
        db.execute("DROP INDEX batch_tasks_runnable_instances")
        db.execute("ALTER TABLE batch_tasks DROP COLUMN instances")
        # as if the migration to salted hashes had not run yet
        before_hashes = next(i for i, script in enumerate(MIGRATIONS) if "secret_hash" in script)
        db.execute(f"PRAGMA user_version = {before_hashes}")
    db.close()
    for root, dirs, files in os.walk(data_dir):
        if Path(root) == data_dir and "runtime" in dirs:
            dirs.remove("runtime")
        for name in dirs:
            os.chmod(Path(root) / name, 0o755)
        for name in files:
            os.chmod(Path(root) / name, 0o644)
    os.chmod(data_dir, 0o755)


def test_an_older_data_directory_is_migrated(tmp_path_factory):
    server = Server(tmp_path_factory.mktemp("migrated") / "data", args=["--dev-credentials"])
    try:
        clients = Clients(server.start())
        clients.resource.resource_groups.create_or_update(RG, {"location": clients.location})
        account = clients.batch_mgmt.batch_account.begin_create(RG, "acctold", {"location": clients.location}).result()
        old_keys = clients.batch_mgmt.batch_account.get_keys(RG, "acctold")
        default_id = clients.batch_mgmt.batch_account.get(defaults.RESOURCE_GROUP, defaults.BATCH_ACCOUNT).id
        default_secondary = clients.batch_mgmt.batch_account.get_keys(defaults.RESOURCE_GROUP,
                                                                      defaults.BATCH_ACCOUNT).secondary
        server.stop()
        _make_it_an_old_data_directory(server.data_dir, {
            account.id.lower(): [old_keys.primary, old_keys.secondary],
            default_id.lower(): [defaults.BATCH_ACCOUNT_KEY, default_secondary]})
        assert old_keys.primary.encode() in database_bytes(server.data_dir)

        server.args = []  # started as an ordinary server now
        clients = Clients(server.start())
        info = clients.info
        assert info["client_secret"] != defaults.CLIENT_SECRET
        assert info["batch_account_key"] != defaults.BATCH_ACCOUNT_KEY
        assert_published_credentials_refused(info)
        kept = clients.batch_mgmt.batch_account.get_keys(RG, "acctold")
        assert (kept.primary, kept.secondary) == (old_keys.primary, old_keys.secondary)
        assert clients.batch_mgmt.batch_account.get_keys(defaults.RESOURCE_GROUP,
                                                         defaults.BATCH_ACCOUNT).secondary == default_secondary
        assert_no_secret_stored_in_plaintext(clients, server.data_dir)
        assert defaults.BATCH_ACCOUNT_KEY.encode() not in database_bytes(server.data_dir)
        assert modes_open_to_others(server.data_dir) == []

        # the new secret outlives a restart
        again = server.restart()
        assert again["client_secret"] == info["client_secret"]
        assert Clients(again).batch_mgmt.batch_account.get(RG, "acctold").name == "acctold"
    finally:
        server.stop()


# What an ordinary task tried before the credentials were random: a token from the
# service over 127.0.0.1 with the published secret. It prints the answer's status, or that
# the service cannot be reached at all (as it cannot once nodes have their own networks).
TOKEN_WITH_PUBLISHED_SECRET = (
    "import ssl, sys, urllib.error, urllib.parse, urllib.request\n"
    "form = urllib.parse.urlencode({'grant_type': 'client_credentials', 'client_id': sys.argv[2], "
    "'client_secret': 'batchyard-development-secret', 'scope': 'https://batch.core.windows.net//.default'})\n"
    "try:\n"
    "    urllib.request.urlopen(sys.argv[1], form.encode(), context=ssl._create_unverified_context())\n"
    "    print('token', 200)\n"
    "except urllib.error.HTTPError as e:\n"
    "    print('token', e.code)\n"
    "except OSError:\n"
    "    print('token unreachable')\n")


def test_a_task_cannot_get_a_token_with_the_published_secret(server, clients):
    batch = clients.batch
    image = next(iter(batch.list_supported_images()))
    ref = image.image_reference
    batch.create_pool({"id": "attacker", "vmSize": "standard_a1_v2", "targetDedicatedNodes": 1,
                       "virtualMachineConfiguration": {"imageReference": {
                           "publisher": ref.publisher, "offer": ref.offer, "sku": ref.sku, "version": "latest"},
                           "nodeAgentSKUId": image.node_agent_sku_id}})
    try:
        pool_settled(batch, "attacker")
        batch.create_job({"id": "attack", "poolInfo": {"poolId": "attacker"}})
        url = f"{server.info['authority']}/{server.info['tenant_id']}/oauth2/v2.0/token"
        batch.create_task("attack", {"id": "token", "commandLine":
                                     f"/bin/sh -c 'python3 -c \"$SCRIPT\" {url} {server.info['client_id']}'",
                                     "environmentSettings": [{"name": "SCRIPT", "value": TOKEN_WITH_PUBLISHED_SECRET}]})
        task = wait_for(lambda: (t := batch.get_task("attack", "token")).state == "completed" and t, what="task")
        out = b"".join(batch.download_task_file("attack", "token", "stdout.txt")).decode()
        err = b"".join(batch.download_task_file("attack", "token", "stderr.txt")).decode()
        assert task.execution_info.exit_code == 0, err
        assert out.strip() in ("token 401", "token unreachable")
    finally:
        batch.begin_delete_pool("attacker", polling_interval=0.1).result()
