"""Settings: command-line options plus environment variables."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from . import azure_names


def _env_float(name: str, default: float) -> float:
    return _env(name, float, default)


def _env_int(name: str, default: int | None = None) -> int | None:
    return _env(name, int, default)


def _env(name: str, kind, default):
    """The environment variable `name` read as `kind`, else `default`; ValueError naming the
    variable when it is set to something else (the command line says so, no traceback)."""
    value = os.environ.get(name)
    if not value:
        return default
    try:
        return kind(value)
    except ValueError:
        raise ValueError(f"{name}={value!r} is not {'an integer' if kind is int else 'a number'}") from None


@dataclass
class Settings:
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 8443
    tls: bool = True
    # Keep the published development secret and account key (defaults.py) instead of random
    # ones per data directory.
    dev_credentials: bool = False
    # "auto" runs isolated machines where the host allows them; "off" acts as a host that
    # forbids namespaces, for tests of the fallback.
    isolation: str = field(default_factory=lambda: os.environ.get("BATCHYARD_ISOLATION", "auto"))
    # Limits from the VM size (cgroups) and a network namespace per machine: "on" where the
    # host allows them; "off" for the comparison in bench/ (machines then share the host's).
    node_cgroups: str = field(default_factory=lambda: os.environ.get("BATCHYARD_NODE_CGROUPS", "on"))
    node_networks: str = field(default_factory=lambda: os.environ.get("BATCHYARD_NODE_NETWORKS", "on"))
    # Outbound NAT through the host for machines on private networks: "auto" when the host
    # has a default route, "on" whenever nft is there, "off" never.
    outbound_nat: str = field(default_factory=lambda: os.environ.get("BATCHYARD_OUTBOUND_NAT", "auto"))
    # The fallback runs machines through fakechroot; with none, machines are unavailable.
    fakechroot: str | None = field(default_factory=lambda: os.environ.get("BATCHYARD_FAKECHROOT") or shutil.which("fakechroot"))
    run_command_timeout: float = field(default_factory=lambda: _env_float("BATCHYARD_RUN_COMMAND_TIMEOUT", 5400))
    # How long an ARM request waits for its work before answering 202 and letting the
    # client poll (the work goes on either way).
    sync_wait_seconds: float = field(default_factory=lambda: _env_float("BATCHYARD_SYNC_WAIT", 20))

    # Batch: Azure's custom-image node limits (its pages say 2,000 or 2,500 dedicated).
    custom_image_max_dedicated: int = field(
        default_factory=lambda: _env_int("BATCHYARD_CUSTOM_IMAGE_MAX_DEDICATED", 2500))
    custom_image_max_low_priority: int = field(
        default_factory=lambda: _env_int("BATCHYARD_CUSTOM_IMAGE_MAX_LOW_PRIORITY", 1000))
    # Azure refuses a resizeTimeout under 5 minutes; tests lower it so a timeout is quick to see.
    min_resize_timeout: timedelta = field(
        default_factory=lambda: timedelta(seconds=_env_float("BATCHYARD_MIN_RESIZE_TIMEOUT", 300)))
    # Autoscale: Azure's least evaluation interval (5 minutes), its metric sampling period
    # (30 s) and its least time between two enableautoscale calls on a pool (30 s); tests
    # lower them.
    min_autoscale_interval: timedelta = field(
        default_factory=lambda: timedelta(seconds=_env_float("BATCHYARD_MIN_AUTOSCALE_INTERVAL", 300)))
    autoscale_sample_seconds: float = field(
        default_factory=lambda: _env_float("BATCHYARD_AUTOSCALE_SAMPLE_SECONDS", 30))
    autoscale_enable_gap_seconds: float = field(
        default_factory=lambda: _env_float("BATCHYARD_AUTOSCALE_ENABLE_GAP_SECONDS", 30))
    # Job schedules: Azure's least recurrence interval (1 minute); tests may lower it.
    min_recurrence_interval: timedelta = field(
        default_factory=lambda: timedelta(seconds=_env_float("BATCHYARD_MIN_RECURRENCE_INTERVAL", 60)))
    # The hosts' capacity for nodes: what each host reports (cores, memory), times this
    # factor. An idle node costs almost nothing here, so the default overcommits a host
    # 4096 times: enough for the documented limits of 2,500 dedicated + 1,000 low-priority
    # nodes of common sizes on one machine.
    host_overcommit: int = field(default_factory=lambda: _env_int("BATCHYARD_HOST_OVERCOMMIT", 4096))
    # Caps on the total (None: what the hosts report, overcommitted).
    host_cores: int | None = field(default_factory=lambda: _env_int("BATCHYARD_HOST_CORES"))
    host_memory_mib: int | None = field(default_factory=lambda: _env_int("BATCHYARD_HOST_MEMORY_MIB"))
    # The CA bundle that image pulls from container registries trust over HTTPS (None: the
    # system's); plain HTTP is used only for registries on loopback addresses.
    registry_ca_bundle: str | None = field(default_factory=lambda: os.environ.get("BATCHYARD_REGISTRY_CA_BUNDLE"))
    # Host-style account endpoints: https://{account}.{suffix}:{port}/ (the TLS certificate
    # covers *.{suffix}); "host" makes them what accountEndpoint names, "path" keeps
    # https://{host}:{port}/batch/{account}, the form the SDKs already use.
    batch_host_suffix: str = field(default_factory=lambda: Settings.default_batch_host_suffix())
    account_endpoints: str = field(default_factory=lambda: os.environ.get("BATCHYARD_ACCOUNT_ENDPOINTS", "path"))
    # Also answer as Azure's public-cloud host names on port 443 of this address.
    azure_hostnames: bool = False
    azure_hostnames_address: str = field(default_factory=lambda: Settings.default_azure_hostnames_address())
    # The Azure Storage account (Azure's or Azurite's) that Batch accounts' autoStorage, application
    # packages and container names resolve to (services/storage_accounts.py): a connection string,
    # or a blob endpoint with an account and key (Azurite's development account by default).
    storage_connection_string: str | None = field(
        default_factory=lambda: os.environ.get("BATCHYARD_STORAGE_CONNECTION_STRING") or None, repr=False)
    storage_blob_endpoint: str | None = field(
        default_factory=lambda: os.environ.get("BATCHYARD_STORAGE_BLOB_ENDPOINT") or None)
    storage_account: str | None = field(default_factory=lambda: os.environ.get("BATCHYARD_STORAGE_ACCOUNT") or None)
    storage_account_key: str | None = field(
        default_factory=lambda: os.environ.get("BATCHYARD_STORAGE_ACCOUNT_KEY") or None, repr=False)
    # A Ray cluster to run machines on (ADDRESS or "auto"); None: this host. Each Ray node
    # keeps its layer cache and machines under ray_host_dir/{node id} on its own host.
    ray_address: str | None = None
    ray_host_dir: Path = Path("/var/lib/batchyard-host")
    ray_placement: str = "spread"  # or "pack": how machines are placed on the cluster's nodes
    # Seconds a node whose host was lost stays unusable before it is made again elsewhere.
    lost_node_grace: float = field(default_factory=lambda: _env_float("BATCHYARD_LOST_NODE_GRACE", 3.0))
    # Threads that make, change and remove node machines.
    node_workers: int = field(default_factory=lambda: _env_int("BATCHYARD_NODE_WORKERS", 4))

    # HTTP admission: connections beyond this many are answered 503; a request head must
    # arrive within header_timeout seconds of the connection opening (or of the previous
    # response), at most max_header_bytes long; a request body may pause at most
    # body_timeout seconds between bytes; an idle keep-alive connection is closed after
    # keep_alive_timeout seconds.
    max_connections: int = field(default_factory=lambda: _env_int("BATCHYARD_MAX_CONNECTIONS", 1000))
    header_timeout: float = field(default_factory=lambda: _env_float("BATCHYARD_HEADER_TIMEOUT", 30))
    body_timeout: float = field(default_factory=lambda: _env_float("BATCHYARD_BODY_TIMEOUT", 60))
    keep_alive_timeout: float = field(default_factory=lambda: _env_float("BATCHYARD_KEEP_ALIVE_TIMEOUT", 120))
    max_header_bytes: int = field(default_factory=lambda: _env_int("BATCHYARD_MAX_HEADER_BYTES", 64 * 1024))
    # The list readers (api/batch/page_readers.py): how many processes render pages of tasks,
    # nodes, jobs and pools at once (more pages wait their turn), and their CPU priority (a nice value:
    # on a busy host, running work goes before pages).
    list_concurrency: int = field(default_factory=lambda: _env_int("BATCHYARD_LIST_CONCURRENCY", 2))
    list_nice: int = field(default_factory=lambda: _env_int("BATCHYARD_LIST_NICE", 10))

    # Failed client-secret sign-ins (token endpoint and portal) allowed per client id and per
    # remote address within the window before further attempts are refused with 429
    # (services/sign_in_limits.py).
    sign_in_failures_per_client: int = field(
        default_factory=lambda: _env_int("BATCHYARD_SIGN_IN_FAILURES_PER_CLIENT", 10))
    sign_in_failures_per_address: int = field(
        default_factory=lambda: _env_int("BATCHYARD_SIGN_IN_FAILURES_PER_ADDRESS", 30))
    sign_in_window_seconds: float = field(
        default_factory=lambda: _env_float("BATCHYARD_SIGN_IN_WINDOW_SECONDS", 300))

    @staticmethod
    def default_batch_host_suffix() -> str:
        return os.environ.get("BATCHYARD_BATCH_HOST_SUFFIX", "batch.localhost").lower()

    @staticmethod
    def default_azure_hostnames_address() -> str:
        return os.environ.get("BATCHYARD_AZURE_HOSTNAMES_ADDRESS", "127.0.0.1")

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def public_host(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else "::1" if self.host == "::" else self.host
        return f"[{host}]" if ":" in host else host

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://{self.public_host}:{self.port}"

    def batch_host(self, account: str) -> str:
        return f"{account}.{self.batch_host_suffix}"

    def account_endpoint(self, account: str, location: str) -> str:
        """accountEndpoint as Azure gives it: a host (and here a port or path) without scheme."""
        if self.azure_hostnames:
            return azure_names.batch_host(account, location)
        if self.account_endpoints == "host":
            return f"{self.batch_host(account)}:{self.port}"
        return f"{self.public_host}:{self.port}/batch/{account}"

    def check(self) -> None:
        """Raises ValueError for settings that cannot work together."""
        if not azure_names.is_host_suffix(self.batch_host_suffix):
            raise ValueError(f"batch host suffix '{self.batch_host_suffix}': give a DNS name of at least two "
                             "labels (a certificate for *.{suffix} is refused by clients otherwise)")
        if self.outbound_nat not in ("auto", "on", "off"):
            raise ValueError(f"outbound NAT '{self.outbound_nat}': give 'auto', 'on' or 'off'")
        if self.account_endpoints not in ("path", "host"):
            raise ValueError(f"account endpoints '{self.account_endpoints}': give 'path' or 'host'")
        from .services.storage_accounts import configured
        configured(self.storage_connection_string, self.storage_blob_endpoint, self.storage_account,
                   self.storage_account_key)  # a ValueError names what is wrong with the storage settings
        if min(self.sign_in_failures_per_client, self.sign_in_failures_per_address) < 1 \
                or self.sign_in_window_seconds <= 0:
            raise ValueError("sign-in limits: give at least 1 failure per client and per address, and a window "
                             "of more than 0 seconds")
        if self.azure_hostnames and not self.tls:
            raise ValueError("--azure-hostnames needs TLS: Azure's host names are only reached over HTTPS")
