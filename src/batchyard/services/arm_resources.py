"""What every ARM resource shares: location, tags, timestamps, body checks."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from ..store.resources import Resource, ResourceStore
from .arm_ids import ResourceId
from .errors import InvalidInput, NotFound
from .lenient import as_integer

_LOCATION = re.compile(r"^[a-z][a-z0-9]{1,40}$")


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat().replace("+00:00", "Z")


def normalize_location(value: Any, field: str = "location") -> str:
    """ARM accepts display names ('West US') and programmatic names ('westus')."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput("LocationRequired", "The location property is required for this definition.", target=field)
    name = value.replace(" ", "").lower()
    if not _LOCATION.fullmatch(name):
        raise InvalidInput(
            "LocationNotAvailableForResourceType",
            f"The provided location '{value}' is not available for resource type. ",
            target=field,
        )
    return name


def require_object(value: Any, field: str) -> dict:
    if not isinstance(value, dict):
        raise InvalidInput("InvalidRequestContent", f"The request content was invalid: '{field}' must be an object.",
                           target=field)
    return value


def optional_object(value: Any, field: str) -> dict:
    return {} if value is None else require_object(value, field)


def optional_list(value: Any, field: str) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidInput("InvalidParameter", f"'{field}' must be a list.", target=field)
    return value


def check_tags(tags: Any) -> dict:
    if tags is None:
        return {}
    if not isinstance(tags, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in tags.items()):
        raise InvalidInput("InvalidTag", "Tags must be an object of string names and string values.", target="tags")
    if len(tags) > 50:
        raise InvalidInput("InvalidTagCount", "The resource has more than 50 tags.", target="tags")
    return tags


def retag(store: ResourceStore, resource: Resource, body: dict) -> Resource:
    """PUT on a resource whose content never changes (snapshot, image): only tags change."""
    if "tags" in body:
        resource.body["tags"] = check_tags(body["tags"])
    return store.put(resource)


def new_resource(rid: ResourceId, location: str, properties: dict, tags: dict | None = None,
                 extra: dict | None = None, internal: dict | None = None) -> Resource:
    body: dict[str, Any] = {
        "id": str(rid),
        "name": rid.name,
        "type": rid.type,
        "location": location,
        "tags": tags or {},
    }
    body.update(extra or {})
    body["properties"] = properties
    return Resource(id=str(rid), type=rid.type, subscription=rid.subscription,
                    resource_group=rid.resource_group, name=rid.name, body=body, internal=internal or {})


def get_or_404(store: ResourceStore, rid: ResourceId) -> Resource:
    found = store.get(str(rid))
    if found is None:
        raise NotFound(
            "ResourceNotFound",
            f"The Resource '{rid.type}/{rid.name}' under resource group '{rid.resource_group}' was not found. "
            "For more details please go to https://aka.ms/ARMResourceNotFoundFix",
        )
    return found


# ARM's integers are int32 unless the API says int64.
INT32_MAX = 2**31 - 1


def int_field(given: Any, field: str, minimum: int = 0, maximum: int = INT32_MAX) -> int:
    value = as_integer(given)
    if value is None or not minimum <= value <= maximum:
        raise InvalidInput("InvalidParameter", f"The value of parameter {field} is invalid: it must be an integer "
                           f"between {minimum} and {maximum}.", target=field)
    return value
