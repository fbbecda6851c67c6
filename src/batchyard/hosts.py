"""`batchyard hosts`: the /etc/hosts lines that make Azure's public-cloud host names (and the
host-style account endpoints) reach this server, read from a data directory."""

from __future__ import annotations

import json
from pathlib import Path

from . import azure_names
from .services.batch.accounts import ACCOUNT_TYPE
from .store.db import Database
from .store.resources import ResourceStore

LOOPBACK = "127.0.0.1"


def _accounts(data_dir: Path) -> list[tuple[str, str]]:
    """(name, location) of every Batch account, without starting the service."""
    db = Database(data_dir / "batchyard.db")
    try:
        return [(a.name.lower(), a.body.get("location", "")) for a in ResourceStore(db).list(type=ACCOUNT_TYPE)]
    finally:
        db.close()


def running_address(data_dir: Path) -> str | None:
    """The address a running `serve --azure-hostnames` answers on, from its connection.json."""
    try:
        return json.loads((data_dir / "connection.json").read_text())["azure_hostnames"]["address"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def hosts_lines(data_dir: Path, host_suffix: str, azure_address: str) -> str:
    ca = data_dir / "tls" / "ca.pem"
    if not (data_dir / "batchyard.db").exists() or not ca.exists():
        raise FileNotFoundError(f"{data_dir} holds no Batchyard data: start `batchyard serve --data-dir {data_dir}` "
                                "once first (with TLS)")
    accounts = _accounts(data_dir)
    out = ["# Batchyard: Azure's public-cloud names, answered by `batchyard serve --azure-hostnames`.",
           "# Everything on this machine that talks to these names reaches Batchyard instead of Azure;",
           "# remove these lines to undo.",
           f"{azure_address} {azure_names.ARM_HOST}",
           f"{azure_address} {azure_names.LOGIN_HOST}"]
    out += [f"{azure_address} {azure_names.batch_host(name, location)}" for name, location in accounts]
    out += ["# Batchyard: host-style account endpoints (https://{account}." + host_suffix + ":{port}/)."]
    out += [f"{LOOPBACK} {name}.{host_suffix}" for name, _ in accounts]
    out += [f"# Trust this CA (e.g. REQUESTS_CA_BUNDLE, connection_verify=, NODE_EXTRA_CA_CERTS): {ca}"]
    return "\n".join(out) + "\n"
