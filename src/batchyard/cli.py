"""The `batchyard` command line."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from .config import Settings
from .runtime.provider import MachineError

DATA_DIR = click.option("--data-dir", default="./batchyard-data", show_default=True,
                        type=click.Path(file_okay=False, path_type=Path), help="Where state, disks and certificates live.")
HOST_SUFFIX = click.option("--batch-host-suffix", default=lambda: Settings.default_batch_host_suffix(),
                           show_default="batch.localhost, or $BATCHYARD_BATCH_HOST_SUFFIX",
                           help="Host-style account endpoints are https://{account}.{suffix}:{port}/.")
AZURE_ADDRESS = click.option("--azure-hostnames-address", default=lambda: Settings.default_azure_hostnames_address(),
                             show_default="127.0.0.1, or $BATCHYARD_AZURE_HOSTNAMES_ADDRESS",
                             help="The address Azure's host names point at (port 443 there).")


@click.group()
def main() -> None:
    """Batchyard: Azure Compute and Azure Batch, self-hosted."""


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8443, show_default=True, type=click.IntRange(0, 65535), help="Port to listen on.")
@DATA_DIR
@click.option("--no-tls", is_flag=True, help="Serve plain HTTP (bearer tokens then need the SDK's opt-out).")
@HOST_SUFFIX
@click.option("--account-endpoints", type=click.Choice(["path", "host"]),
              default=lambda: os.environ.get("BATCHYARD_ACCOUNT_ENDPOINTS", "path"),
              show_default="path, or $BATCHYARD_ACCOUNT_ENDPOINTS",
              help="The form of accountEndpoint in Batch accounts: /batch/{account} or {account}.{suffix}.")
@click.option("--azure-hostnames", is_flag=True,
              help="Also answer as management.azure.com, login.microsoftonline.com and "
                   "{account}.{region}.batch.azure.com on port 443 (see `batchyard hosts`).")
@AZURE_ADDRESS
@click.option("--dev-credentials", is_flag=True,
              help="Use the published development client secret and account key instead of random ones.")
@click.option("--outbound-nat", type=click.Choice(["auto", "on", "off"]),
              default=lambda: os.environ.get("BATCHYARD_OUTBOUND_NAT", "auto"),
              show_default="auto, or $BATCHYARD_OUTBOUND_NAT",
              help="Machines reach beyond the host through NAT: when the host has a default route, always, never.")
@click.option("--ray-address", default=None, metavar="ADDRESS|auto",
              help="Run machines on the nodes of this Ray cluster (needs the [ray] extra).")
@click.option("--ray-host-dir", default=None, type=click.Path(file_okay=False, path_type=Path),
              help="Where each Ray node keeps its layers and machines [default: /var/lib/batchyard-host].")
@click.option("--ray-placement", type=click.Choice(["spread", "pack"]), default="spread", show_default=True,
              help="Machines on the Ray node with the most room, or on the fullest that fits.")
def serve(host: str, port: int, data_dir: Path, no_tls: bool, batch_host_suffix: str, account_endpoints: str,
          azure_hostnames: bool, azure_hostnames_address: str, dev_credentials: bool, outbound_nat: str,
          ray_address: str | None, ray_host_dir: Path | None, ray_placement: str) -> None:
    """Start the service on one port."""
    from .server import DataDirectoryUnusable, serve as run

    try:  # (the settings read BATCHYARD_* variables too: one set to a word is said here)
        settings = Settings(data_dir=data_dir.resolve(), host=host, port=port, tls=not no_tls,
                            batch_host_suffix=batch_host_suffix.lower(), account_endpoints=account_endpoints,
                            azure_hostnames=azure_hostnames, azure_hostnames_address=azure_hostnames_address,
                            dev_credentials=dev_credentials, outbound_nat=outbound_nat, ray_address=ray_address,
                            ray_placement=ray_placement,
                            ray_host_dir=ray_host_dir.resolve() if ray_host_dir else Path("/var/lib/batchyard-host"))
        settings.check()
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    try:
        run(settings)
    except (MachineError, DataDirectoryUnusable) as exc:  # no machines where they were asked for (--ray-address),
        raise click.ClickException(str(exc)) from None   # or no data directory to have


@main.command()
@DATA_DIR
@HOST_SUFFIX
@click.option("--azure-hostnames-address", default=None,
              help="The address Azure's host names point at [default: the running server's, else 127.0.0.1 "
                   "or $BATCHYARD_AZURE_HOSTNAMES_ADDRESS].")
def hosts(data_dir: Path, batch_host_suffix: str, azure_hostnames_address: str | None) -> None:
    """Print the /etc/hosts lines that point Azure's host names (for `serve --azure-hostnames`)
    and the host-style account endpoints at this server, and the CA to trust."""
    from .hosts import hosts_lines, running_address

    data_dir = data_dir.resolve()
    address = azure_hostnames_address or running_address(data_dir) or Settings.default_azure_hostnames_address()
    try:
        text = hosts_lines(data_dir, batch_host_suffix.lower(), address)
    except FileNotFoundError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(text, nl=False)


@main.group()
def quota() -> None:
    """Batch account quotas."""


@quota.command("set")
@click.option("--account", required=True, help="The Batch account's name.")
@DATA_DIR
@click.option("--dedicated-cores", type=click.IntRange(0), help="dedicatedCoreQuota")
@click.option("--low-priority-cores", type=click.IntRange(0), help="lowPriorityCoreQuota")
@click.option("--pools", type=click.IntRange(0), help="poolQuota")
@click.option("--active-jobs", type=click.IntRange(0), help="activeJobAndJobScheduleQuota")
@click.option("--family", "families", multiple=True, metavar="FAMILY=CORES",
              help="A dedicated core quota per VM family, e.g. standardDSv3Family=64 (repeatable).")
@click.option("--enforce-families/--no-enforce-families", default=None,
              help="dedicatedCoreQuotaPerVMFamilyEnforced")
def quota_set(account: str, data_dir: Path, dedicated_cores, low_priority_cores, pools, active_jobs, families,
              enforce_families) -> None:
    """Set an account's quotas on the running server of DATA_DIR (it reads connection.json)."""
    body = {name: value for name, value in (
        ("dedicatedCoreQuota", dedicated_cores), ("lowPriorityCoreQuota", low_priority_cores),
        ("poolQuota", pools), ("activeJobAndJobScheduleQuota", active_jobs),
        ("dedicatedCoreQuotaPerVMFamilyEnforced", enforce_families)) if value is not None}
    per_family = {}
    for item in families:
        family, _, cores = item.partition("=")
        if not (cores.isascii() and cores.isdigit() and len(cores) <= 18):  # "²" is a digit to isdigit
            raise click.BadParameter(f"{item!r}: give FAMILY=CORES", param_hint="--family")
        per_family[family] = int(cores)
    if per_family:
        body["dedicatedCoreQuotaPerVMFamily"] = per_family
    if not body:
        raise click.UsageError("Give at least one quota to set.")
    properties = _operator(data_dir).set_quotas(account, body)["properties"]
    shown = {k: v for k, v in properties.items() if "Quota" in k and k != "dedicatedCoreQuotaPerVMFamily"}
    click.echo(json.dumps(shown, indent=2))


@main.group()
def principal() -> None:
    """Service principals: who may sign in (`batchyard serve` must be running)."""


END_DATE = click.option("--end-date", default=None, metavar="ISO8601",
                        help="When the secret stops working, e.g. 2027-01-31T00:00:00Z [default: in two years].")


def _operator(data_dir: Path):
    from .operator_client import OperatorClient

    return OperatorClient(data_dir.resolve() / "connection.json")


@principal.command("create")
@click.option("--name", required=True, help="The principal's display name.")
@DATA_DIR
@END_DATE
def principal_create(name: str, data_dir: Path, end_date: str | None) -> None:
    """Create a principal with a client secret; prints clientId, clientSecret (shown this
    once), objectId and tenantId as JSON. It has no role until one is assigned."""
    made = _operator(data_dir).create_principal(name, end_date)
    click.echo(json.dumps({k: made[k] for k in ("clientId", "clientSecret", "objectId", "tenantId")}
                          | {"secretEndDateTime": made["passwordCredentials"][0]["endDateTime"]}, indent=2))


@principal.command("list")
@DATA_DIR
def principal_list(data_dir: Path) -> None:
    """Every principal with its secrets' ids, hints and end dates (never the secrets)."""
    click.echo(json.dumps(_operator(data_dir).list_principals(), indent=2))


@principal.command("delete")
@click.option("--client-id", required=True)
@DATA_DIR
def principal_delete(client_id: str, data_dir: Path) -> None:
    """Delete a principal, its secrets and its role assignments."""
    _operator(data_dir).delete_principal(client_id)


@principal.group("secret")
def principal_secret() -> None:
    """A principal's client secrets."""


@principal_secret.command("add")
@click.option("--client-id", required=True)
@click.option("--name", default="", help="A display name for the secret.")
@DATA_DIR
@END_DATE
def secret_add(client_id: str, name: str, data_dir: Path, end_date: str | None) -> None:
    """Add a client secret; prints it (shown this once) with its keyId and end date."""
    click.echo(json.dumps(_operator(data_dir).add_secret(client_id, end_date, name), indent=2))


@principal_secret.command("delete")
@click.option("--client-id", required=True)
@click.option("--key-id", required=True)
@DATA_DIR
def secret_delete(client_id: str, key_id: str, data_dir: Path) -> None:
    """Remove one client secret: it stops working at once."""
    _operator(data_dir).remove_secret(client_id, key_id)


if __name__ == "__main__":
    main()
