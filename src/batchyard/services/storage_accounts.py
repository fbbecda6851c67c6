"""The Azure Storage accounts this service knows: where a Batch account's autoStorage
points, where application packages are kept, and whose containers resource files and
output files may name without a SAS.

Batchyard does not serve Azure Storage itself; it uses a real one (Azure Storage, or
Azurite, the emulator users already run) through azure-storage-blob. The operator names it
with a setting (Settings.storage_*):
- BATCHYARD_STORAGE_CONNECTION_STRING: a connection string, as the portal or Azurite gives it;
- or BATCHYARD_STORAGE_BLOB_ENDPOINT (the account's blob endpoint, e.g. Azurite's
  `http://127.0.0.1:10000/devstoreaccount1`) with BATCHYARD_STORAGE_ACCOUNT and
  BATCHYARD_STORAGE_ACCOUNT_KEY, which default to Azurite's published development account.
A Batch account's `autoStorage.storageAccountId` resolves to it by the account's name (the
last segment of the id), as Azure resolves the id to its storage account.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from urllib.parse import quote

from azure.storage.blob import (BlobSasPermissions, BlobServiceClient, ContainerClient, ContainerSasPermissions,
                                generate_blob_sas, generate_container_sas)

# azure-core logs every storage request and its headers at INFO (SAS redacted): the service's
# log keeps its own lines; transfer failures are reported in the task's failureInfo.
logging.getLogger("azure.core.pipeline.policies.http_logging_policy").setLevel(logging.WARNING)

# Azurite's well-known development account (published in its README, like Azure's emulator).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

# Blob transfers hold at most one block in memory: 4 MiB, not the library's 32/64 MiB first request.
BLOCK_SIZE = 4 * 1024 * 1024
TRANSFER_OPTIONS = {"max_single_get_size": BLOCK_SIZE, "max_chunk_get_size": BLOCK_SIZE,
                    "max_single_put_size": BLOCK_SIZE, "max_block_size": BLOCK_SIZE}


@dataclass(frozen=True)
class StorageAccount:
    name: str
    blob_endpoint: str  # without a trailing slash
    key: str

    def __repr__(self) -> str:  # never the key
        return f"StorageAccount({self.name!r}, {self.blob_endpoint!r})"

    @property
    def credential(self) -> dict:
        return {"account_name": self.name, "account_key": self.key}

    def container_url(self, container: str) -> str:
        return f"{self.blob_endpoint}/{quote(container, safe='')}"

    def blob_url(self, container: str, blob: str) -> str:
        return f"{self.container_url(container)}/{quote(blob, safe='/')}"

    def container(self, container: str, **options) -> ContainerClient:
        return ContainerClient(self.blob_endpoint, container, credential=self.credential,
                               **{**TRANSFER_OPTIONS, **options})

    def owns(self, url: str) -> bool:
        """Is this URL one of this account's containers or blobs?"""
        base = url.split("?", 1)[0]
        return base.lower().startswith(self.blob_endpoint.lower() + "/")

    def blob_sas(self, container: str, blob: str, permission: str, lifetime: timedelta) -> tuple[str, datetime]:
        expiry = datetime.now(timezone.utc) + lifetime
        token = generate_blob_sas(self.name, container, blob, account_key=self.key,
                                  permission=BlobSasPermissions.from_string(permission), expiry=expiry)
        return f"{self.blob_url(container, blob)}?{token}", expiry

    def container_sas(self, container: str, permission: str, lifetime: timedelta) -> str:
        expiry = datetime.now(timezone.utc) + lifetime
        token = generate_container_sas(self.name, container, account_key=self.key,
                                       permission=ContainerSasPermissions.from_string(permission), expiry=expiry)
        return f"{self.container_url(container)}?{token}"


def configured(connection_string: str | None, blob_endpoint: str | None, name: str | None,
               key: str | None) -> StorageAccount | None:
    """The storage account the settings name, or None when they name none."""
    if connection_string:
        service = BlobServiceClient.from_connection_string(connection_string)
        account_key = getattr(service.credential, "account_key", None)
        if not account_key:
            raise ValueError("the storage connection string has no AccountKey")
        return StorageAccount(service.account_name, service.url.split("?", 1)[0].rstrip("/"), account_key)
    if blob_endpoint:
        name = name or AZURITE_ACCOUNT
        key = key or (AZURITE_KEY if name == AZURITE_ACCOUNT else None)
        if not key:
            raise ValueError("BATCHYARD_STORAGE_ACCOUNT_KEY is required for a storage account other than "
                             f"{AZURITE_ACCOUNT}")
        return StorageAccount(name, blob_endpoint.rstrip("/"), key)
    return None


class StorageAccounts:
    """The known storage accounts by name (one today: the configured one)."""

    def __init__(self, accounts: list[StorageAccount]):
        self.by_name = {a.name.lower(): a for a in accounts}

    def get(self, name: str) -> StorageAccount | None:
        return self.by_name.get(name.lower())

    def owner_of(self, url: str) -> StorageAccount | None:
        return next((a for a in self.by_name.values() if a.owns(url)), None)

    def names(self) -> list[str]:
        return sorted(a.name for a in self.by_name.values())

    def describe(self) -> str:
        """For the banner: which storage account auto-storage and packages use (never its key)."""
        if not self.by_name:
            return ("Azure Storage: none (set BATCHYARD_STORAGE_CONNECTION_STRING or BATCHYARD_STORAGE_BLOB_ENDPOINT "
                    "for auto-storage and application packages)")
        return "Azure Storage: " + ", ".join(f"{a.name} at {a.blob_endpoint}" for a in self.by_name.values())
