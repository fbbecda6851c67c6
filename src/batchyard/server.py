"""`batchyard serve`: start everything on one port, announce it in connection.json."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
from pathlib import Path

import uvicorn
from rich.console import Console

from . import defaults
from .api.app import create_app
from .bootstrap import Services, build
from .config import Settings
from .runtime.host import enter_private_mount_namespace
from .services.operations import Operations
from .tls import ensure_certificates

log = logging.getLogger("batchyard")


def connection_info(services: Services, ca_bundle: Path | None) -> dict:
    s = services.settings
    base = s.base_url
    info = {
        "arm_endpoint": base,
        "batch_endpoint": f"{base}/batch/{defaults.BATCH_ACCOUNT}",
        "batch_account": defaults.BATCH_ACCOUNT,
        # the current primary key: it may have been regenerated since the first start
        "batch_account_key": services.accounts.keys(defaults.BATCH_ACCOUNT)[0],
        "subscription_id": defaults.SUBSCRIPTION_ID,
        "resource_group": defaults.RESOURCE_GROUP,
        "location": defaults.LOCATION,
        "tenant_id": defaults.TENANT_ID,
        "authority": base,
        "client_id": defaults.CLIENT_ID,
        "client_secret": defaults.CLIENT_SECRET,
        "portal_url": f"{base}/",
        "machines": services.provider.mode,
        "pid": os.getpid(),
    }
    if ca_bundle:
        info["ca_bundle"] = str(ca_bundle)
    return info


def write_atomically(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.chmod(0o600)  # it holds the development credentials
    tmp.replace(path)


def serve(settings: Settings) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Before any thread exists: the service's mounts stay private and vanish with it.
    namespaces = enter_private_mount_namespace()
    services = build(settings, namespaces)
    services.operations = Operations(services.db)
    ca_bundle = cert = key = None
    if settings.tls:
        ca_bundle, cert, key = ensure_certificates(settings.data_dir / "tls", settings.public_host.strip("[]"))
    app = create_app(services)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level="warning",
                            ssl_certfile=str(cert) if cert else None, ssl_keyfile=str(key) if key else None,
                            timeout_graceful_shutdown=1)  # idle keep-alive clients need no wait
    server = uvicorn.Server(config)
    connection_file = settings.data_dir / "connection.json"
    connection_file.unlink(missing_ok=True)

    async def main() -> None:
        serving = asyncio.create_task(server.serve())
        while not server.started:
            if serving.done():
                serving.result()  # raises why it could not start (e.g. the port is taken)
                return
            await asyncio.sleep(0.02)
        if settings.port == 0:  # an ephemeral port: announce the one the kernel chose
            settings.port = server.servers[0].sockets[0].getsockname()[1]
        services.provider.open_gateway(settings.port, (settings.public_host.strip("[]"), settings.port))
        info = connection_info(services, ca_bundle)
        _banner(info, services.provider_note)  # before connection.json: whoever waits on it can read the banner
        write_atomically(connection_file, info)
        await serving

    # uvicorn stops on SIGTERM/SIGINT, then raises the signal again under the handler it
    # found: that must not end the process before the machines are stopped (their cgroups
    # outlive the process).
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    try:
        asyncio.run(main())
    finally:
        connection_file.unlink(missing_ok=True)
        services.close()


def _banner(info: dict, machines_note: str) -> None:
    console = Console(stderr=True)
    console.print(f"[bold]Batchyard[/bold] listening on {info['arm_endpoint']}")
    console.print(f"  ARM (azure-mgmt-*) base_url : {info['arm_endpoint']}")
    console.print(f"  Batch endpoint              : {info['batch_endpoint']}")
    console.print(f"  token authority             : {info['authority']}  tenant {info['tenant_id']}")
    console.print(f"  client id / secret          : {info['client_id']} / {info['client_secret']}")
    console.print(f"  subscription                : {info['subscription_id']}")
    if "ca_bundle" in info:
        console.print(f"  CA bundle                   : {info['ca_bundle']}")
    console.print(f"  {machines_note}")
    console.print("  development credentials; details in connection.json. Ctrl-C stops.")
