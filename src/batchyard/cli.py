"""The `batchyard` command line."""

from __future__ import annotations

import os
from pathlib import Path

import click

from .config import Settings

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
def serve(host: str, port: int, data_dir: Path, no_tls: bool, batch_host_suffix: str, account_endpoints: str,
          azure_hostnames: bool, azure_hostnames_address: str) -> None:
    """Start the service on one port."""
    from .server import serve as run

    settings = Settings(data_dir=data_dir.resolve(), host=host, port=port, tls=not no_tls,
                        batch_host_suffix=batch_host_suffix.lower(), account_endpoints=account_endpoints,
                        azure_hostnames=azure_hostnames, azure_hostnames_address=azure_hostnames_address)
    try:
        settings.check()
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    run(settings)


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


if __name__ == "__main__":
    main()
