"""A Batch account's auto-storage account: where `autoStorageContainerName` resource files
and application packages live. `autoStorage.storageAccountId` names a storage account by
its ARM id; it resolves to the storage account this service knows by that name
(services/storage_accounts.py). Azure keeps the storage keys itself and refreshes them on
`syncAutoStorageKeys`; here the key comes from the settings, so a sync records the time."""

from __future__ import annotations

from ...store.resources import Resource
from ..arm_ids import parse
from ..errors import Conflict
from ..storage_accounts import StorageAccount, StorageAccounts
from .accounts import BatchAccounts


class AutoStorage:
    def __init__(self, accounts: BatchAccounts, storage: StorageAccounts):
        self.accounts = accounts
        self.storage = storage

    def of(self, account: Resource | str) -> StorageAccount:
        """The account's auto-storage account; 409 when it has none or names one unknown here."""
        if isinstance(account, str):
            found = self.accounts.by_name(account)
            if found is None:
                raise Conflict("AutoStorageNotConfigured", "The Batch account has no auto-storage account.")
            account = found
        settings = account.properties.get("autoStorage")
        if not settings:
            raise Conflict("AutoStorageNotConfigured", f"The Batch account '{account.name}' has no auto-storage "
                           "account: set properties.autoStorage.storageAccountId on the account.")
        name = parse(settings["storageAccountId"]).name
        storage = self.storage.get(name)
        if storage is None:
            known = ", ".join(self.storage.names()) or "none: set BATCHYARD_STORAGE_CONNECTION_STRING or " \
                                                        "BATCHYARD_STORAGE_BLOB_ENDPOINT"
            raise Conflict("AutoStorageAccountNotFound", f"The auto-storage account '{name}' of Batch account "
                           f"'{account.name}' is not a storage account this service knows (known: {known}).")
        return storage

    def synchronize_keys(self, account: Resource) -> None:
        self.of(account)
        self.accounts.record_key_sync(parse(account.id))
