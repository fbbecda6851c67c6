"""Subscriptions and resource groups."""

from __future__ import annotations

import time
from typing import Callable

from ..store.db import Database
from ..store.resources import Resource, ResourceStore
from .arm_ids import ResourceId, check_resource_group_name
from .arm_resources import check_tags, new_resource, normalize_location, require_object
from .batch.odata import compile_filter
from .delete_gate import DeleteGate
from .errors import Conflict, InvalidInput, NotFound

GROUP_TYPE = "Microsoft.Resources/resourceGroups"
# A group's delete goes over what the group holds at most this many times (see delete),
# pausing before each pass after one that was held up: 0.2, 0.4, 0.8, 1.6 s.
DELETE_PASSES = 5
PASS_PAUSE_SECONDS = 0.1


class ResourceGroups:
    def __init__(self, db: Database, store: ResourceStore):
        self.db = db
        self.store = store
        # Services that own resources inside groups register how to delete them, in order.
        self._cascade: list[Callable[[str, str], None]] = []
        # Writes into a group against its delete (delete_gate.py); the gate's lock also
        # orders every change of a group's state.
        self._gate = DeleteGate()
        # A delete does not survive a restart (its operation is reported failed, see
        # operations.py): its group is open again, as ARM rolls back a delete it could not end.
        for rg in self.store.list(type=GROUP_TYPE):
            if _deleting(rg):
                self._set_state(rg, "Succeeded")

    # subscriptions ----------------------------------------------------------------------

    def ensure_subscription(self, subscription_id: str, tenant_id: str, name: str) -> None:
        subs = self.db.get_setting("subscriptions") or {}
        if subscription_id.lower() not in subs:
            subs[subscription_id.lower()] = {"subscriptionId": subscription_id, "tenantId": tenant_id, "displayName": name}
            self.db.set_setting("subscriptions", subs)

    def subscriptions(self, tenant_id: str | None = None) -> list[dict]:
        """Every subscription, or those of one tenant (what a token of that tenant may list)."""
        subs = (self.db.get_setting("subscriptions") or {}).values()
        return [s for s in subs if tenant_id is None or s["tenantId"].lower() == tenant_id.lower()]

    def check_subscription(self, subscription_id: str) -> dict:
        subs = self.db.get_setting("subscriptions") or {}
        found = subs.get(subscription_id.lower())
        if found is None:
            raise NotFound("SubscriptionNotFound", f"The subscription '{subscription_id}' could not be found.")
        return found

    # resource groups --------------------------------------------------------------------

    def on_delete(self, delete_contents: Callable[[str, str], None]) -> None:
        self._cascade.append(delete_contents)

    def _id(self, subscription: str, name: str) -> ResourceId:
        return ResourceId(subscription, name)

    def get(self, subscription: str, name: str) -> Resource:
        self.check_subscription(subscription)
        found = self.store.get(str(self._id(subscription, name)))
        if found is None:
            raise NotFound("ResourceGroupNotFound", f"Resource group '{name}' could not be found.")
        return found

    def require_open(self, subscription: str, name: str) -> Resource:
        """The group, when something may be made or changed in it: ARM refuses that from
        the moment the group's delete is asked for."""
        rg = self.get(subscription, name)
        if _deleting(rg):
            raise Conflict("ResourceGroupBeingDeleted",
                           f"The resource group '{rg.name}' is in deprovisioning state and cannot perform this operation.")
        return rg

    def begin_write(self, subscription: str, name: str) -> str:
        """Lets a create or change in the group in, while the group is open; its delete,
        asked for meanwhile, waits for it to end (end_write). Gives what end_write takes."""
        return self._gate.begin_write(str(self._id(subscription, name)).lower(),
                                      lambda: self.require_open(subscription, name))

    def end_write(self, key: str) -> None:
        self._gate.end_write(key)

    def exists(self, subscription: str, name: str) -> bool:
        self.check_subscription(subscription)
        return self.store.get(str(self._id(subscription, name))) is not None

    def create_or_update(self, subscription: str, name: str, body: dict) -> tuple[Resource, bool]:
        self.check_subscription(subscription)
        check_resource_group_name(name)
        body = require_object(body, "body")
        location = normalize_location(body.get("location"))
        tags = check_tags(body.get("tags"))
        with self._gate.lock:
            return self._create_or_update(subscription, name, body, location, tags)

    def _create_or_update(self, subscription: str, name: str, body: dict, location: str,
                          tags: dict) -> tuple[Resource, bool]:
        existing = self.store.get(str(self._id(subscription, name)))
        if existing is not None:
            self.require_open(subscription, name)
            if existing.body["location"] != location:
                raise InvalidInput(
                    "InvalidResourceGroupLocation",
                    f"Invalid resource group location '{location}'. The Resource group already exists in location "
                    f"'{existing.body['location']}'.",
                )
            existing.body["tags"] = tags
            return self.store.put(existing), False
        rg = new_resource(self._id(subscription, name), location, {"provisioningState": "Succeeded"}, tags)
        rg.body.pop("type")
        rg.body["type"] = GROUP_TYPE
        if body.get("managedBy"):
            rg.body["managedBy"] = body["managedBy"]
        return self.store.put(rg), True

    def list(self, subscription: str) -> list[Resource]:
        self.check_subscription(subscription)
        return self.store.list(type=GROUP_TYPE, subscription=subscription)

    def mark_deleting(self, subscription: str, name: str) -> None:
        """The group's delete is asked for: ARM shows it `Deleting` until it is gone, and
        refuses from now on to make or change anything in it (require_open)."""
        with self._gate.lock:
            self._set_state(self.get(subscription, name), "Deleting")

    def delete(self, subscription: str, name: str) -> bool:
        """Deletes the group and everything in it, as ARM does. False when it did not exist
        (or another delete of it, asked for first, has deleted it meanwhile).

        It begins once the writes let into the group before its mark have ended. A create
        may still be making its resource in the background then (a VM not listed yet whose
        disk cannot be deleted while it holds it, say): whatever one pass over the group
        could not delete, or found new, the next pass takes, up to DELETE_PASSES; past them
        the delete fails and the group is open again, as ARM rolls back a delete it could
        not end (ResourceGroupDeletionBlocked)."""
        self.check_subscription(subscription)
        key = str(self._id(subscription, name)).lower()
        rg = self._gate.begin_delete(key, lambda: self._close(key))
        if rg is None:
            return False
        try:
            self._delete_contents(subscription, rg)
        except BaseException:
            self._reopen(key)
            raise
        finally:
            self._gate.end_delete(key)
        return True

    def _close(self, key: str) -> Resource | None:
        """The group marked Deleting (again, if an earlier delete rolled back); None when gone."""
        rg = self.store.get(key)
        if rg is not None:
            self._set_state(rg, "Deleting")
        return rg

    def _delete_contents(self, subscription: str, rg: Resource) -> None:
        left, reason = None, None
        for attempt in range(DELETE_PASSES):
            if attempt:
                time.sleep(PASS_PAUSE_SECONDS * 2 ** attempt)  # for what is in flight to end
            try:
                for delete_contents in self._cascade:
                    delete_contents(subscription, rg.name)
            except (Conflict, NotFound) as exc:
                reason = exc  # held by, or deleted meanwhile with, what the pass came too early for
                continue
            before, left = left, self._contents(subscription, rg.name)
            if not left or left == before:  # empty, or only what no service deletes
                with self._gate.lock:
                    self.store.delete(rg.id)
                return
        details = [{"code": reason.code, "message": reason.message, "target": reason.target}] if reason else []
        raise Conflict("ResourceGroupDeletionBlocked",
                       f"Deletion of resource group '{rg.name}' failed as resources in it could not be deleted. "
                       "The provisioning state of the resource group will be rolled back.", details=details)

    def _contents(self, subscription: str, name: str) -> set[str]:
        return {r.id for r in self.store.list(subscription=subscription, resource_group=name)
                if r.type.lower() != GROUP_TYPE.lower()}

    def _reopen(self, key: str) -> None:
        with self._gate.lock:
            current = self.store.get(key)
            if current is not None and _deleting(current):
                self._set_state(current, "Succeeded")

    def _set_state(self, rg: Resource, state: str) -> None:
        rg.body["properties"]["provisioningState"] = state
        self.store.put(rg)

    def resources_in(self, subscription: str, name: str) -> list[Resource]:
        self.get(subscription, name)
        return [r for r in self.store.list(subscription=subscription, resource_group=name)]

    def resources_in_subscription(self, subscription: str, odata_filter: str | None) -> list[Resource]:
        """Every resource of the subscription but its groups, as `GET .../resources` lists
        them; `$filter` compares resourceType, resourceGroup, name and location, without
        regard to case as ARM does."""
        self.check_subscription(subscription)
        keep = compile_filter(odata_filter.lower() if odata_filter else None)
        return [r for r in self.store.list(subscription=subscription)
                if r.type.lower() != GROUP_TYPE.lower() and keep(_filterable(r))]


def _deleting(rg: Resource) -> bool:
    return rg.body["properties"].get("provisioningState") == "Deleting"


def _filterable(resource: Resource) -> dict:
    """The fields ARM's resource $filter reads, lower-cased (the filter text is too)."""
    return {"resourcetype": resource.type.lower(), "resourcegroup": (resource.resource_group or "").lower(),
            "name": resource.name.lower(), "location": str(resource.body.get("location", "")).lower()}
