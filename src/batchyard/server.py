"""`batchyard serve`: start everything on one port, announce it in connection.json."""

from __future__ import annotations

import asyncio
import fcntl
import gc
import json
import logging
import os
import signal
import socket
from pathlib import Path

import uvicorn
from rich.console import Console

from . import azure_names, defaults
from .api.app import create_app
from .bootstrap import Services, build
from .api.http_protocol import protocol_with_timeouts
from .config import Settings
from .private_files import private_dir, tighten, write_private
from .runtime.host import enter_private_mount_namespace
from .services.operations import Operations
from .tls import ensure_certificates, server_names

log = logging.getLogger("batchyard")


def connection_info(services: Services, ca_bundle: Path | None) -> dict:
    s = services.settings
    base = s.base_url
    info = {
        "arm_endpoint": base,
        "batch_endpoint": f"{base}/batch/{defaults.BATCH_ACCOUNT}",
        # the same account, host-style: {account}.{suffix} must resolve to this server
        "batch_host_endpoint": f"{s.scheme}://{s.batch_host(defaults.BATCH_ACCOUNT)}:{s.port}",
        "batch_host_suffix": s.batch_host_suffix,
        "batch_account": defaults.BATCH_ACCOUNT,
        # the current primary key: it may have been regenerated since the first start
        "batch_account_key": services.accounts.keys(defaults.BATCH_ACCOUNT)[0],
        "subscription_id": defaults.SUBSCRIPTION_ID,
        "resource_group": defaults.RESOURCE_GROUP,
        "location": defaults.LOCATION,
        "tenant_id": defaults.TENANT_ID,
        "authority": base,
        "client_id": defaults.CLIENT_ID,
        "client_secret": services.client_secret,
        "portal_url": f"{base}/portal/",
        "machines": services.provider.mode,
        "pid": os.getpid(),
    }
    if ca_bundle:
        info["ca_bundle"] = str(ca_bundle)
    if s.azure_hostnames:
        info["azure_hostnames"] = {
            "address": s.azure_hostnames_address,
            "arm_endpoint": f"https://{azure_names.ARM_HOST}",
            "authority": f"https://{azure_names.LOGIN_HOST}",
            "batch_endpoint": "https://" + azure_names.batch_host(defaults.BATCH_ACCOUNT, defaults.LOCATION),
        }
    return info


def certificate_names(services: Services) -> list[str]:
    s = services.settings
    extra = [s.batch_host_suffix, f"*.{s.batch_host_suffix}"]
    if s.azure_hostnames:
        extra += azure_names.certificate_names({a.body.get("location", "") for a in services.accounts.all()})
    return server_names(s.public_host.strip("[]"), extra)


def listen(host: str, port: int) -> socket.socket:
    """A listening socket; OSError says why not (the port is taken, or 443 needs root)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # "::" takes IPv4 too, as it did when uvicorn bound the socket.
    dualstack = host == "::" and socket.has_dualstack_ipv6()
    sock = socket.create_server((host, port), family=family, backlog=2048, dualstack_ipv6=dualstack)
    # Accepted connections inherit this; the event loop does not set it on sockets it is
    # handed, and without it every small response waits out delayed ACKs (~40 ms).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def write_connection_file(path: Path, data: dict) -> None:
    write_private(path, (json.dumps(data, indent=2) + "\n").encode())  # it holds the credentials


class DataDirectoryUnusable(Exception):
    """The data directory cannot be made, or another `batchyard serve` holds it."""


def hold_data_directory(data_dir: Path) -> int:
    """An exclusive lock on the data directory for as long as this process lives (the kernel
    drops it however the process ends; the descriptor is close-on-exec, and every process the
    service starts is exec'd). A second `batchyard serve` on the same directory would reclaim
    the first's scratch trees and machines and write its database and connection.json."""
    try:
        private_dir(data_dir)
        fd = os.open(data_dir / "serve.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise DataDirectoryUnusable(f"cannot use {data_dir} as the data directory: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise DataDirectoryUnusable(f"{data_dir} is the data directory of a batchyard serve that is running") from None
    return fd


def serve(settings: Settings) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    hold_data_directory(settings.data_dir)  # held until the process ends
    # Before any thread exists: the service's mounts stay private and vanish with it.
    namespaces = enter_private_mount_namespace()
    tighten(settings.data_dir)  # data directories from before every file was private, mount points included
    services = build(settings, namespaces)
    services.operations = Operations(services.db)
    ca_bundle = cert = key = None
    if settings.tls:
        ca_bundle, cert, key = ensure_certificates(settings.data_dir / "tls", certificate_names(services))
    tighten(settings.data_dir)  # what this start made (the machines' mount points are skipped now)
    app = create_app(services)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level="warning",
                            ssl_certfile=str(cert) if cert else None, ssl_keyfile=str(key) if key else None,
                            http=protocol_with_timeouts(settings.header_timeout, settings.body_timeout),
                            limit_concurrency=settings.max_connections,
                            timeout_keep_alive=settings.keep_alive_timeout,
                            h11_max_incomplete_event_size=settings.max_header_bytes,
                            timeout_graceful_shutdown=1)  # idle keep-alive clients need no wait
    server = uvicorn.Server(config)
    connection_file = settings.data_dir / "connection.json"
    connection_file.unlink(missing_ok=True)
    sockets: list[socket.socket] = []
    try:
        sockets.append(listen(settings.host, settings.port))
        if settings.azure_hostnames:
            sockets.append(listen(settings.azure_hostnames_address, azure_names.HTTPS_PORT))
    except OSError as exc:
        for sock in sockets:
            sock.close()
        app.state.page_readers.close()
        services.close()
        where = f"{settings.azure_hostnames_address}:443" if sockets else f"{settings.host}:{settings.port}"
        raise SystemExit(f"batchyard: cannot listen on {where}: {exc}") from None
    settings.port = sockets[0].getsockname()[1]  # the one the kernel chose, for port 0

    async def main() -> None:
        serving = asyncio.create_task(server.serve(sockets=sockets))
        while not server.started:
            if serving.done():
                serving.result()  # raises why it could not start (e.g. the port is taken)
                return
            await asyncio.sleep(0.02)
        services.provider.open_gateway(settings.port, (settings.public_host.strip("[]"), settings.port))
        info = connection_info(services, ca_bundle)
        # before connection.json: whoever waits on it can read the banner
        _banner(info, services.provider_note, settings.dev_credentials, services.auto_storage.storage.describe())
        write_connection_file(connection_file, info)
        # What the start made lives as long as the process: frozen out of the collector's
        # reach (some 90,000 objects), so its full collections, which a task run sets off
        # again and again, no longer walk them (about 5% of the service's CPU a task).
        gc.collect()
        gc.freeze()
        await serving

    # uvicorn stops gracefully on SIGTERM or SIGINT, then raises the signal again under the
    # handler that was in place before it: with the defaults the process dies right there
    # (SIGTERM) or unwinds with a traceback (SIGINT). This handler makes both an ordinary exit
    # through the cleanup below.
    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop_signal, _exit_cleanly)
    try:
        asyncio.run(main())
    finally:
        connection_file.unlink(missing_ok=True)
        for sock in sockets:
            sock.close()
        app.state.page_readers.close()
        services.close()


def _exit_cleanly(signum, frame) -> None:
    raise SystemExit(0)


def _banner(info: dict, machines_note: str, dev_credentials: bool, storage_note: str) -> None:
    console = Console(stderr=True)
    console.print(f"[bold]Batchyard[/bold] listening on {info['arm_endpoint']}")
    console.print(f"  ARM (azure-mgmt-*) base_url : {info['arm_endpoint']}")
    console.print(f"  Batch endpoint              : {info['batch_endpoint']}")
    console.print(f"  Batch endpoint, host-style  : {info['batch_host_endpoint']}")
    if "azure_hostnames" in info:
        console.print(f"  also as Azure's host names  : on {info['azure_hostnames']['address']}:443 "
                      "(`batchyard hosts` prints the /etc/hosts lines)")
    console.print(f"  token authority             : {info['authority']}  tenant {info['tenant_id']}")
    console.print(f"  client id                   : {info['client_id']} (secret and account key in connection.json)")
    console.print(f"  subscription                : {info['subscription_id']}")
    if "ca_bundle" in info:
        console.print(f"  CA bundle                   : {info['ca_bundle']}")
    console.print(f"  {machines_note}")
    console.print(f"  {storage_note}")
    if dev_credentials:
        console.print("  [bold red]WARNING[/bold red]: --dev-credentials: the client secret and the account key are "
                      "the PUBLISHED development values; anyone (and any task on this host) who knows them controls "
                      "this service")
    console.print("  credentials and details: connection.json in the data directory (0600). Ctrl-C stops.")
