"""The `batchyard` command line."""

from __future__ import annotations

from pathlib import Path

import click

from .config import Settings


@click.group()
def main() -> None:
    """Batchyard: Azure Compute and Azure Batch, self-hosted."""


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8443, show_default=True, type=click.IntRange(0, 65535), help="Port to listen on.")
@click.option("--data-dir", default="./batchyard-data", show_default=True, type=click.Path(file_okay=False, path_type=Path),
              help="Where state, disks and certificates live.")
@click.option("--no-tls", is_flag=True, help="Serve plain HTTP (bearer tokens then need the SDK's opt-out).")
def serve(host: str, port: int, data_dir: Path, no_tls: bool) -> None:
    """Start the service on one port."""
    from .server import serve as run

    run(Settings(data_dir=data_dir.resolve(), host=host, port=port, tls=not no_tls))


if __name__ == "__main__":
    main()
