"""Subscriptions and resource groups."""

from __future__ import annotations

from typing import Callable

from ..store.db import Database
from ..store.resources import Resource, ResourceStore
from .arm_ids import ResourceId, check_resource_group_name
from .arm_resources import check_tags, new_resource, normalize_location, require_object
from .batch.odata import compile_filter
from .errors import InvalidInput, NotFound

GROUP_TYPE = "Microsoft.Resources/resourceGroups"


class ResourceGroups:
    def __init__(self, db: Database, store: ResourceStore):
        self.db = db
        self.store = store
        # Services that own resources inside groups register how to delete them, in order.
        self._cascade: list[Callable[[str, str], None]] = []

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

    def exists(self, subscription: str, name: str) -> bool:
        self.check_subscription(subscription)
        return self.store.get(str(self._id(subscription, name))) is not None

    def create_or_update(self, subscription: str, name: str, body: dict) -> tuple[Resource, bool]:
        self.check_subscription(subscription)
        check_resource_group_name(name)
        body = require_object(body, "body")
        location = normalize_location(body.get("location"))
        tags = check_tags(body.get("tags"))
        existing = self.store.get(str(self._id(subscription, name)))
        if existing is not None:
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

    def delete(self, subscription: str, name: str) -> bool:
        """Deletes the group and everything in it, as ARM does. False when it did not exist."""
        self.check_subscription(subscription)
        rg = self.store.get(str(self._id(subscription, name)))
        if rg is None:
            return False
        for delete_contents in self._cascade:
            delete_contents(subscription, rg.name)
        self.store.delete(rg.id)
        return True

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


def _filterable(resource: Resource) -> dict:
    """The fields ARM's resource $filter reads, lower-cased (the filter text is too)."""
    return {"resourcetype": resource.type.lower(), "resourcegroup": (resource.resource_group or "").lower(),
            "name": resource.name.lower(), "location": str(resource.body.get("location", "")).lower()}
