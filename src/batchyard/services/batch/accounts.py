"""Batch accounts: the ARM resource Microsoft.Batch/batchAccounts, its shared keys and quotas.

The data plane asks this service which account a request names (`by_name`), which keys
sign it (`keys`), which authentication modes it accepts (`allows`) and what its quotas are
(`quotas`). Keys live in the resource's private data only, sealed (services/secrets.py):
never in its wire body, never in a log line, never in the database in plaintext."""

from __future__ import annotations

import base64
import re
import secrets
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from ... import defaults
from ..secrets import SecretBox
from .vm_sizes import families
from ...store.resources import Resource, ResourceStore
from ..arm_ids import ResourceId, parse, parse_typed
from ..arm_resources import (check_tags, get_or_404, new_resource, normalize_location, now_iso, optional_object,
                             require_object)
from ..delete_gate import DeleteGate
from ..errors import Conflict, InvalidInput
from ..resource_groups import ResourceGroups

PROVIDER = "Microsoft.Batch"
ACCOUNT_TYPE = "Microsoft.Batch/batchAccounts"
POOL_ALLOCATION_MODES = ("BatchService", "UserSubscription")
AUTHENTICATION_MODES = ("SharedKey", "AAD", "TaskAuthenticationToken")
PUBLIC_NETWORK_ACCESS = ("Enabled", "Disabled", "SecuredByPerimeter")
IDENTITY_TYPES = ("None", "SystemAssigned", "UserAssigned")
KEY_NAMES = ("Primary", "Secondary")
# Azure's rule: the name is a DNS label of the account's endpoint.
_ACCOUNT_NAME = re.compile(r"^[a-z0-9]{3,24}$")
# What Azure gives a new BatchService account: the top of its documented default ranges
# ("Batch service quotas and limits": dedicated cores 90-900, low-priority cores 10-100,
# pools 20-100, active jobs and job schedules 100-300). The operator changes them with
# `batchyard quota set` (QUOTAS_ACTION below).
DEFAULT_QUOTAS = {"dedicatedCoreQuota": 900, "lowPriorityCoreQuota": 100, "poolQuota": 100,
                  "activeJobAndJobScheduleQuota": 300, "dedicatedCoreQuotaPerVMFamilyEnforced": False}
# A UserSubscription account's cores count against its subscription, so Azure shows no
# core quotas for it; its pool and job quotas are the account's as for any other.
CORE_QUOTAS = ("dedicatedCoreQuota", "lowPriorityCoreQuota", "dedicatedCoreQuotaPerVMFamily",
               "dedicatedCoreQuotaPerVMFamilyEnforced")
QUOTA_COUNTS = ("dedicatedCoreQuota", "lowPriorityCoreQuota", "poolQuota", "activeJobAndJobScheduleQuota")
# POST {account id}/batchyard.setQuotas: how the operator sets them (Azure has a support request).
QUOTAS_ACTION = "batchyard.setQuotas"
# Azure's own maximum for a quota it raises on request: the int32 of its wire format.
MAX_QUOTA = 2**31 - 1
# An account's delete goes over what it holds again every CONTENTS_PASS_SECONDS until all
# of it is gone, for at most CONTENTS_WAIT_SECONDS (see _delete_contents): 2,500 nodes are
# deleted here in about 15 s.
CONTENTS_PASS_SECONDS = 0.1
CONTENTS_WAIT_SECONDS = 300.0
# Accounts a subscription may hold per region, as Azure reports it (`locations/{l}/quotas`);
# reported, not enforced.
ACCOUNTS_PER_REGION = 50


def new_key() -> str:
    """A shared key as Azure makes them: 64 random bytes, base64."""
    return base64.b64encode(secrets.token_bytes(64)).decode()


def account_id(subscription: str, resource_group: str, name: str) -> ResourceId:
    return ResourceId(subscription, resource_group, PROVIDER, (("batchAccounts", name),))


def check_account_name(name: str) -> None:
    if not _ACCOUNT_NAME.fullmatch(name):
        raise InvalidInput(
            "AccountNameInvalid",
            f"The specified account name '{name}' is invalid. Batch account names must be between 3 and 24 "
            "characters in length and must use only numbers and lowercase letters.",
            target="accountName",
        )


def _deleting(account: Resource) -> bool:
    return account.properties.get("provisioningState") == "Deleting"


def _open(account: Resource) -> Resource:
    """The account, when something may be made or changed in it: ARM changes nothing in
    a resource whose delete has been asked for."""
    if _deleting(account):
        raise Conflict("AccountBeingDeleted", f"The Batch account '{account.name}' is being deleted.")
    return account


def _given(props: dict, field: str, default: str) -> Any:
    """A property's value; omitted or null means the default."""
    value = props.get(field)
    return default if value is None else value


def _choice(value: Any, allowed: tuple[str, ...], field: str) -> str:
    """An enum value, matched case-insensitively and returned in Azure's spelling."""
    for option in allowed:
        if isinstance(value, str) and value.lower() == option.lower():
            return option
    raise InvalidInput("InvalidParameter", f"The value '{value}' of parameter '{field}' is not valid. "
                       f"Allowed values are {', '.join(allowed)}.", target=field)


class BatchAccounts:
    def __init__(self, store: ResourceStore, groups: ResourceGroups, box: SecretBox):
        self.store = store
        self.groups = groups
        self.box = box
        # What is made in an account against the account's delete (delete_gate.py). Its lock
        # orders every change of an account too: names are unique server-wide, so a name's
        # check and the write must not interleave, and an account being deleted changes no more.
        self._gate = DeleteGate()
        self._lock = self._gate.lock
        # Services owning resources inside an account register their cleanup here, in order.
        self._cascade: list[Callable[[Resource], None]] = []
        # A delete does not survive a restart (as a resource group's): the account is open again.
        for account in self.store.list(type=ACCOUNT_TYPE):
            if _deleting(account):
                self._set_state(account, "Succeeded")

    # what the data plane asks ----------------------------------------------------------

    def all(self) -> list[Resource]:
        return self.store.list(type=ACCOUNT_TYPE)

    def by_name(self, name: str) -> Resource | None:
        """Asked by every data-plane request: only the named account is read and decoded,
        however many there are (names are unique across subscriptions, see
        name_availability)."""
        found = self.store.list(type=ACCOUNT_TYPE, name=name)
        return found[0] if found else None

    def keys(self, name: str) -> list[str]:
        """The account's current keys, primary first; none for an unknown account."""
        account = self.by_name(name)
        return self.keys_of(account) if account else []

    def keys_of(self, account: Resource) -> list[str]:
        return [self.box.open(sealed) for sealed in account.internal["sealed_keys"]]

    def _set_key(self, account: Resource, index: int, key: str) -> None:
        account.internal["sealed_keys"][index] = self.box.seal(key)

    def quotas(self, account: Resource) -> dict:
        """The account's quotas as batchAccount.get shows them; core quotas only for a
        BatchService account."""
        props = account.properties
        out = {name: props.get(name, DEFAULT_QUOTAS[name]) for name in ("poolQuota", "activeJobAndJobScheduleQuota")}
        if props.get("poolAllocationMode") != "UserSubscription":
            for name in ("dedicatedCoreQuota", "lowPriorityCoreQuota", "dedicatedCoreQuotaPerVMFamilyEnforced"):
                out[name] = props.get(name, DEFAULT_QUOTAS[name])
            per_family = props.get("dedicatedCoreQuotaPerVMFamily") or {}
            out["dedicatedCoreQuotaPerVMFamily"] = [
                {"name": family, "coreQuota": per_family.get(family, out["dedicatedCoreQuota"])}
                for family in families()]
        return out

    @staticmethod
    def allows(account: Resource, mode: str) -> bool:
        """Whether the account's allowedAuthenticationModes hold `mode`."""
        return mode.lower() in (m.lower() for m in account.properties.get("allowedAuthenticationModes", []))

    def name_availability(self, name: str) -> dict:
        """checkNameAvailability: names are unique across every subscription, as Azure's
        account host names are."""
        if not isinstance(name, str) or not _ACCOUNT_NAME.fullmatch(name):
            return {"nameAvailable": False, "reason": "Invalid",
                    "message": "Batch account names must be between 3 and 24 characters in length and must use "
                               "only numbers and lowercase letters."}
        if self.by_name(name) is not None:
            return {"nameAvailable": False, "reason": "AlreadyExists",
                    "message": f"An account named '{name}' is already in use."}
        return {"nameAvailable": True}

    def on_delete(self, delete_contents: Callable[[Resource], None]) -> None:
        self._cascade.append(delete_contents)

    # rendering -------------------------------------------------------------------------

    def view(self, account: Resource, endpoint: str) -> dict:
        """endpoint: accountEndpoint, a host without scheme as Azure gives it (Settings.account_endpoint)."""
        body = dict(account.body)
        props = {k: v for k, v in account.properties.items() if k not in (*QUOTA_COUNTS, *CORE_QUOTAS)}
        body["properties"] = {"accountEndpoint": endpoint, **props, **self.quotas(account)}
        return body

    # ARM operations --------------------------------------------------------------------

    def get(self, rid: ResourceId) -> Resource:
        return get_or_404(self.store, rid)

    def list(self, subscription: str, resource_group: str | None) -> list[Resource]:
        return self.store.list(type=ACCOUNT_TYPE, subscription=subscription, resource_group=resource_group)

    def create_or_update(self, rid: ResourceId, body: dict) -> tuple[Resource, bool]:
        """PUT: a new account, or (same id) a replacement of what may change."""
        check_account_name(rid.name)
        body = require_object(body, "body")
        location = normalize_location(body.get("location"))
        props = optional_object(body.get("properties"), "properties")
        tags = check_tags(body.get("tags"))
        with self._lock:
            existing = self.store.get(str(rid))
            if existing is not None:
                return self._replace(_open(existing), location, props, tags, body.get("identity")), False
            taken = self.by_name(rid.name)
            if taken is not None:
                raise Conflict("AccountAlreadyExists", f"An account named '{rid.name}' is already in use.",
                               target="accountName")
            properties = {
                "provisioningState": "Succeeded",
                "poolAllocationMode": _choice(_given(props, "poolAllocationMode", "BatchService"),
                                              POOL_ALLOCATION_MODES, "properties.poolAllocationMode"),
                **self._settable(props, {}),
                **DEFAULT_QUOTAS,
            }
            identity = self._identity(body.get("identity"), rid, None)
            account = new_resource(rid, location, properties, tags, extra={"identity": identity},
                                   internal={"sealed_keys": [self.box.seal(new_key()), self.box.seal(new_key())]})
            return self.store.put(account), True

    def _replace(self, account: Resource, location: str, props: dict, tags: dict, identity: Any) -> Resource:
        if location != account.body["location"]:
            raise InvalidInput("InvalidParameter", "Changing property 'location' is not allowed.", target="location")
        mode = account.properties["poolAllocationMode"]
        field = "properties.poolAllocationMode"
        if _choice(_given(props, "poolAllocationMode", mode), POOL_ALLOCATION_MODES, field) != mode:
            raise Conflict("PropertyChangeNotAllowed", "Changing property 'poolAllocationMode' is not allowed.",
                           target=field)
        settable = self._settable(props, account.properties)
        for optional in ("keyVaultReference", "autoStorage"):  # a PUT replaces: what it omits goes
            if optional not in settable:
                account.properties.pop(optional, None)
        account.properties.update(settable)
        account.body["tags"] = tags
        account.body["identity"] = self._identity(identity, parse(account.id), account.body.get("identity"))
        return self.store.put(account)

    def update(self, rid: ResourceId, body: dict) -> Resource:
        """PATCH: only what the body names changes."""
        body = require_object(body, "body")
        with self._lock:
            account = _open(self.get(rid))
            props = optional_object(body.get("properties"), "properties")
            if "tags" in body:
                account.body["tags"] = check_tags(body["tags"])
            account.properties.update(self._settable(props, account.properties, patch=True))
            if "identity" in body:
                account.body["identity"] = self._identity(body["identity"], rid, account.body.get("identity"))
            return self.store.put(account)

    def _settable(self, props: dict, current: dict, patch: bool = False) -> dict:
        """The properties a client may set, checked; on PUT what is omitted takes its default,
        on PATCH it keeps its current value."""
        out: dict[str, Any] = {}
        if "allowedAuthenticationModes" in props or not patch:
            out["allowedAuthenticationModes"] = self._auth_modes(props.get("allowedAuthenticationModes"))
        if "publicNetworkAccess" in props or not patch:
            out["publicNetworkAccess"] = _choice(_given(props, "publicNetworkAccess", "Enabled"),
                                                 PUBLIC_NETWORK_ACCESS, "properties.publicNetworkAccess")
        if props.get("keyVaultReference") is not None:
            out["keyVaultReference"] = self._key_vault(props["keyVaultReference"])
        if props.get("autoStorage") is not None:
            out["autoStorage"] = self._auto_storage(props["autoStorage"], current.get("autoStorage"))
        if not patch:
            out["encryption"] = {"keySource": "Microsoft.Batch"}
        return out

    @staticmethod
    def _auth_modes(value: Any) -> list[str]:
        if value is None:
            return list(AUTHENTICATION_MODES)
        field = "properties.allowedAuthenticationModes"
        if not isinstance(value, list):
            raise InvalidInput("InvalidParameter", f"The value of parameter '{field}' must be an array.", target=field)
        return list(dict.fromkeys(_choice(m, AUTHENTICATION_MODES, field) for m in value))

    @staticmethod
    def _key_vault(value: Any) -> dict:
        field = "properties.keyVaultReference"
        ref = require_object(value, field)
        parse_typed(ref.get("id"), "Microsoft.KeyVault/vaults", f"{field}.id")
        if not isinstance(ref.get("url"), str) or not ref["url"].startswith("https://"):
            raise InvalidInput("InvalidParameter", f"The value '{ref.get('url')}' of parameter '{field}.url' is not "
                               "a valid key vault URL.", target=f"{field}.url")
        return {"id": ref["id"], "url": ref["url"]}

    @staticmethod
    def _auto_storage(value: Any, current: dict | None) -> dict:
        """Recorded as given: there is no storage service here to check it against."""
        field = "properties.autoStorage"
        storage = require_object(value, field)
        parse_typed(storage.get("storageAccountId"), "Microsoft.Storage/storageAccounts", f"{field}.storageAccountId")
        out = {"storageAccountId": storage["storageAccountId"],
               "authenticationMode": storage.get("authenticationMode") or "StorageKeys",
               "lastKeySync": (current or {}).get("lastKeySync") or now_iso()}
        if storage.get("nodeIdentityReference") is not None:
            out["nodeIdentityReference"] = require_object(storage["nodeIdentityReference"],
                                                          f"{field}.nodeIdentityReference")
        return out

    def _identity(self, value: Any, rid: ResourceId, current: dict | None) -> dict:
        """Echoed as Azure shows it; a system-assigned identity keeps its principal across updates."""
        if value is None:
            return current or {"type": "None"}
        value = require_object(value, "identity")
        kind = _choice(value.get("type"), IDENTITY_TYPES, "identity.type")
        out: dict[str, Any] = {"type": kind}
        if kind == "SystemAssigned":
            same = current if current and current.get("type") == kind else {}
            out["principalId"] = same.get("principalId") or str(uuid.uuid4())
            out["tenantId"] = same.get("tenantId") or self.groups.check_subscription(rid.subscription)["tenantId"]
        elif kind == "UserAssigned":
            given = require_object(value.get("userAssignedIdentities"), "identity.userAssignedIdentities")
            before = (current or {}).get("userAssignedIdentities", {})
            out["userAssignedIdentities"] = {
                uid: before.get(uid) or {"principalId": str(uuid.uuid4()), "clientId": str(uuid.uuid4())}
                for uid in given}
        return out

    @contextmanager
    def writing(self, account: Resource) -> Iterator[None]:
        """Around what makes something in the account (a pool, a job, a job schedule, an
        application): refused once the account's delete is asked for, and waited for by
        that delete, so nothing is made in an account after its contents went."""
        key = account.id.lower()
        self._gate.begin_write(key, lambda: _open(self.get(parse(account.id))))
        try:
            yield
        finally:
            self._gate.end_write(key)

    def delete(self, rid: ResourceId) -> bool:
        """False when there was no such account (answered 204, as for compute resources).
        The account shows Deleting, takes no new contents, and what it holds goes first:
        its job schedules, jobs, pools and applications (nothing is left without its
        account, to reappear in a new one of the same name)."""
        key = str(rid).lower()
        account = self._gate.begin_delete(key, lambda: self._close(key))
        if account is None:
            return False
        try:
            self._delete_contents(account)
            return self.store.delete(account.id)
        except BaseException:
            with self._lock:
                if (current := self.store.get(key)) is not None:
                    self._set_state(current, "Succeeded")  # as a group's delete that could not end
            raise
        finally:
            self._gate.end_delete(key)

    def _delete_contents(self, account: Resource) -> None:
        """Every service's part, again until nothing is left in the account. What it holds
        goes in the background (a pool once its nodes are deleted, a job once its tasks have
        ended), and the account must not go before it: a new account of the same id would
        find it. A pass also takes what a write let in before the mark, which outlived the
        gate's wait, made after the last. Past CONTENTS_WAIT_SECONDS, the delete fails."""
        deadline = time.monotonic() + CONTENTS_WAIT_SECONDS
        while True:
            for delete_contents in self._cascade:
                delete_contents(account)
            left = self.store.held_by(account.id, 1)
            if not left:
                return
            if time.monotonic() > deadline:
                raise Conflict("AccountDeletionBlocked", f"Deletion of Batch account '{account.name}' did not end "
                               f"within {CONTENTS_WAIT_SECONDS:.0f} s: what it holds is still being deleted "
                               f"({left[0][len(account.id) + 1:]}). The account is open again; delete it again later.")
            time.sleep(CONTENTS_PASS_SECONDS)

    def _close(self, key: str) -> Resource | None:
        """The account marked Deleting; None when there is none."""
        account = self.store.get(key)
        if account is not None:
            self._set_state(account, "Deleting")
        return account

    def _set_state(self, account: Resource, state: str) -> None:
        account.properties["provisioningState"] = state
        self.store.put(account)

    def delete_in_group(self, subscription: str, resource_group: str) -> None:
        for account in self.list(subscription, resource_group):
            self.delete(parse(account.id))

    # keys ------------------------------------------------------------------------------

    def list_keys(self, rid: ResourceId) -> dict:
        account = self.get(rid)
        primary, secondary = self.keys_of(account)
        return {"accountName": account.name, "primary": primary, "secondary": secondary}

    def regenerate_key(self, rid: ResourceId, body: dict) -> dict:
        body = require_object(body, "body")
        which = _choice(body.get("keyName"), KEY_NAMES, "keyName")
        with self._lock:
            account = _open(self.get(rid))
            self._set_key(account, KEY_NAMES.index(which), new_key())
            self.store.put(account)
        return self.list_keys(rid)

    def record_key_sync(self, rid: ResourceId) -> None:
        """syncAutoStorageKeys: the moment is kept on the account as it is now (read under
        the lock, as every change of an account: a copy read earlier would undo a change
        made meanwhile, or bring back an account deleted meanwhile)."""
        with self._lock:
            account = _open(self.get(rid))
            if "autoStorage" in account.properties:
                account.properties["autoStorage"]["lastKeySync"] = now_iso()
                self.store.put(account)

    # quotas --------------------------------------------------------------------------------

    def set_quotas(self, rid: ResourceId, body: dict) -> Resource:
        """The operator's change (Azure's is a support request): the counts given, per-family
        core quotas ({family: cores}) and whether they are enforced."""
        body = require_object(body, "body")
        unknown = set(body) - {*QUOTA_COUNTS, "dedicatedCoreQuotaPerVMFamily", "dedicatedCoreQuotaPerVMFamilyEnforced"}
        if unknown:
            raise InvalidInput("InvalidParameter", f"Unknown quota '{sorted(unknown)[0]}'.", target=sorted(unknown)[0])
        changes: dict[str, Any] = {name: _quota_count(body[name], name) for name in QUOTA_COUNTS if name in body}
        if "dedicatedCoreQuotaPerVMFamilyEnforced" in body:
            enforced = body["dedicatedCoreQuotaPerVMFamilyEnforced"]
            if not isinstance(enforced, bool):
                raise InvalidInput("InvalidParameter", "dedicatedCoreQuotaPerVMFamilyEnforced must be true or false.",
                                   target="dedicatedCoreQuotaPerVMFamilyEnforced")
            changes["dedicatedCoreQuotaPerVMFamilyEnforced"] = enforced
        given = optional_object(body.get("dedicatedCoreQuotaPerVMFamily"), "dedicatedCoreQuotaPerVMFamily")
        known = {f.lower(): f for f in families()}
        for family, cores in given.items():
            if family.lower() not in known:
                raise InvalidInput("InvalidParameter", f"'{family}' is not a VM family of this service's sizes.",
                                   target="dedicatedCoreQuotaPerVMFamily")
            _quota_count(cores, f"dedicatedCoreQuotaPerVMFamily.{family}")
        with self._lock:
            account = _open(self.get(rid))
            account.properties.update(changes)
            per_family = account.properties.setdefault("dedicatedCoreQuotaPerVMFamily", {})
            per_family.update({known[f.lower()]: cores for f, cores in given.items()})
            return self.store.put(account)

    # the published development account -------------------------------------------------

    def ensure_default(self, dev_credentials: bool) -> Resource:
        """defaults.BATCH_ACCOUNT, made on first start (and again if it was deleted) with
        random keys, or with the published primary key when `dev_credentials`; an existing
        one keeps its keys (regenerated ones included), except that the published key is
        replaced when the development credentials are not asked for."""
        account = self.by_name(defaults.BATCH_ACCOUNT)
        if account is None:
            rid = account_id(defaults.SUBSCRIPTION_ID, defaults.RESOURCE_GROUP, defaults.BATCH_ACCOUNT)
            account, _ = self.create_or_update(rid, {"location": defaults.LOCATION})
            if dev_credentials:
                self._set_key(account, 0, defaults.BATCH_ACCOUNT_KEY)
                self.store.put(account)
            return account
        if not dev_credentials and self.keys_of(account)[0] == defaults.BATCH_ACCOUNT_KEY:
            self._set_key(account, 0, new_key())
            self.store.put(account)
        return account

    def seal_plaintext_keys(self) -> bool:
        """Data directories from before sealing kept keys in plaintext: seal them. True when
        something changed (the caller then compacts the database)."""
        changed = False
        for account in self.store.list(type=ACCOUNT_TYPE):
            plain = account.internal.pop("keys", None)
            if plain is not None:
                account.internal["sealed_keys"] = [self.box.seal(k) for k in plain]
                self.store.put(account)
                changed = True
        return changed


def _quota_count(value: Any, field: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_QUOTA:
        raise InvalidInput("InvalidParameter", f"The quota '{field}' must be an integer from 0 to {MAX_QUOTA}.",
                           target=field)
    return value
