"""Which permission a request needs, read from its method and path the way Azure names
operations, and at which scope it is checked.

ARM: after `providers/{namespace}` come pairs of type and name; the operation is
`{namespace}/{type}/{child type}/.../{read|write|delete}`, and a trailing segment of a POST
is an action (`Microsoft.Compute/virtualMachines/runCommand/action`). Paths of
Microsoft.Resources itself read from the subscription (`Microsoft.Resources/subscriptions/
resourceGroups/read`). The scope is the resource the request names (its parent for a
list); for subscription-level provider paths (locations, SKUs, usages) the subscription.

Batch data plane (learn.microsoft.com, "Role-based access control for Azure Batch
service"): pools and nodes are management actions (`Microsoft.Batch/batchAccounts/pools/
write`), jobs, tasks and job schedules are data actions (`.../jobs/read`), at the account.
"""

from __future__ import annotations

_VERBS = {"GET": "read", "HEAD": "read", "PUT": "write", "PATCH": "write", "DELETE": "delete"}
_CANONICAL = {"subscriptions": "subscriptions", "resourcegroups": "resourceGroups", "resources": "resources",
              "locations": "locations", "providers": "providers", "tagnames": "tagNames"}


def arm_permission(method: str, path: str) -> tuple[str, str] | None:
    """(action, scope) for a request under /subscriptions/{id}; None for tenant-level paths,
    which any signed-in caller may read (its subscriptions, tenants, provider operations)."""
    parts = [p for p in path.split("/") if p]
    if len(parts) < 2 or parts[0].lower() != "subscriptions":
        return None
    # ARM's own words in their usual casing (the SDKs send 'resourcegroups'); names as sent
    parts = [_CANONICAL.get(p.lower(), p) if k % 2 == 0 and k < 4 else p for k, p in enumerate(parts)]
    verb = _VERBS.get(method.upper(), "write")
    lowered = [p.lower() for p in parts]
    subscription = f"/subscriptions/{parts[1]}"
    if "providers" not in lowered[2:]:
        rest = parts[2:]
        types = ["subscriptions"] + [_CANONICAL.get(t.lower(), t) for t in rest[0::2]]
        named = rest if len(rest) % 2 == 0 else rest[:-1]
        return f"Microsoft.Resources/{'/'.join(types)}/{verb}", "/".join([subscription, *named])
    i = len(lowered) - 1 - lowered[::-1].index("providers")
    above = parts[:i]
    if i + 1 >= len(parts):  # the list of providers
        return "Microsoft.Resources/subscriptions/providers/read", subscription
    namespace, tail = parts[i + 1], parts[i + 2:]
    if method.upper() == "POST" and len(tail) % 2 == 1:
        named = tail[:-1]
        operation = "/".join([namespace, *named[0::2], tail[-1], "action"])
    elif not tail:
        return "Microsoft.Resources/subscriptions/providers/read", subscription
    else:
        named = tail if len(tail) % 2 == 0 else tail[:-1]
        operation = "/".join([namespace, *tail[0::2], verb])
    target = "/" + "/".join([*above, "providers", namespace, *named]) if named else "/" + "/".join(above)
    in_group = len(above) >= 4 and above[2].lower() == "resourcegroups"
    if not in_group and namespace.lower() != "microsoft.authorization":
        target = subscription  # locations, SKUs, usages, operation results: nothing below the subscription
    return operation, target


_BATCH_DATA = {"jobs": "jobs", "jobschedules": "jobSchedules", "outputs": "jobs"}
_BATCH_ACTIONS = {"pools": "pools", "nodecounts": "pools", "poolusagemetrics": "pools",
                  "certificates": "certificates", "applications": "applications"}


def batch_permission(method: str, rest: str) -> tuple[str, bool]:
    """(operation, is a data action) for a Batch data-plane path under the account."""
    first = next((p for p in rest.split("/") if p), "").lower()
    verb = _VERBS.get(method.upper(), "write")
    if first in _BATCH_DATA:
        return f"Microsoft.Batch/batchAccounts/{_BATCH_DATA[first]}/{verb}", True
    if first in _BATCH_ACTIONS:
        return f"Microsoft.Batch/batchAccounts/{_BATCH_ACTIONS[first]}/{verb}", False
    # supportedimages, nodeagentskus and the like: reading the account
    return "Microsoft.Batch/batchAccounts/read", False
