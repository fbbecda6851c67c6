"""Settings: command-line options plus environment variables."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path


def _env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value else default


@dataclass
class Settings:
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 8443
    tls: bool = True
    # "auto" runs isolated machines where the host allows them; "off" acts as a host that
    # forbids namespaces, for tests of the fallback.
    isolation: str = field(default_factory=lambda: os.environ.get("BATCHYARD_ISOLATION", "auto"))
    # The fallback runs machines through fakechroot; with none, machines are unavailable.
    fakechroot: str | None = field(default_factory=lambda: os.environ.get("BATCHYARD_FAKECHROOT") or shutil.which("fakechroot"))
    run_command_timeout: float = field(default_factory=lambda: _env_float("BATCHYARD_RUN_COMMAND_TIMEOUT", 5400))
    # How long an ARM request waits for its work before answering 202 and letting the
    # client poll (the work goes on either way).
    sync_wait_seconds: float = field(default_factory=lambda: _env_float("BATCHYARD_SYNC_WAIT", 20))

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
