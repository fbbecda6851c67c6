"""Resource providers as ARM describes them (`/subscriptions/{s}/providers[/{namespace}]`,
`/providers/{namespace}/operations`): the resource types, api-versions and operations are
read from the routes this server registered and from versions.py, so what is advertised
is what is served. Clients read it to pick an api-version (`az resource create`) and to
see that a provider is registered."""

from __future__ import annotations

import re
from dataclasses import dataclass

from starlette.responses import JSONResponse, Response

from ...services import locations
from ...services.errors import NotFound
from . import versions
from .router import ArmContext, ArmRouter, ArmRoute

NS = "Microsoft.Resources"
SUB = "/subscriptions/{subscription}"
_VERBS = {"GET": "read", "HEAD": "read", "PUT": "write", "PATCH": "write", "DELETE": "delete"}
_PARAM = re.compile(r"^\{\w+\}$")


@dataclass(frozen=True)
class Operation:
    namespace: str
    resource_type: str  # "" for the provider itself
    verb: str  # read, write, delete or "{action}/action"


def _operation(route: ArmRoute) -> Operation | None:
    """What a route does to which resource type, read the way ARM reads a path: after
    `providers/{namespace}` (or from the root for Microsoft.Resources' own paths) come
    pairs of type and name; a trailing segment of a POST is an action. None for paths
    that are no resource type: fixed-name children (artifacttypes/vmimage) and views."""
    segments = route.template.strip("/").split("/")
    lowered = [s.lower() for s in segments]
    namespace, rest = route.namespace, segments
    if "providers" in lowered:
        i = lowered.index("providers")
        if i + 1 < len(segments) and not _PARAM.match(segments[i + 1]):
            namespace, rest = segments[i + 1], segments[i + 2:]
        else:  # Microsoft.Resources' own providers API
            rest = segments[:i + 1]
    types: list[str] = []
    for k in range(0, len(rest), 2):
        kind, name = rest[k], rest[k + 1] if k + 1 < len(rest) else None
        if _PARAM.match(kind):
            return None
        if name is None and route.method == "POST":
            return Operation(namespace, "/".join(types), f"{kind}/action")
        if name is not None and not _PARAM.match(name):
            return None
        types.append(kind)
    if route.view or route.method not in _VERBS:
        return None
    return Operation(namespace, "/".join(types), _VERBS[route.method])


def served(router: ArmRouter) -> dict[str, dict[str, set[str]]]:
    """namespace -> resource type -> the verbs served on it."""
    out: dict[str, dict[str, set[str]]] = {ns: {} for ns in versions.ADVERTISED}
    for route in router.routes:
        op = _operation(route)
        if op is not None and op.namespace in out:
            out[op.namespace].setdefault(op.resource_type, set()).add(op.verb)
    return out


def _tenant_level(resource_type: str) -> bool:
    # types outside any subscription (operations, tenants) have no location
    return resource_type.lower() in ("operations", "tenants", "subscriptions")


def provider_view(router: ArmRouter, namespace: str, subscription: str | None) -> dict:
    canonical = next((ns for ns in versions.ADVERTISED if ns.lower() == namespace.lower()), None)
    if canonical is None:
        raise NotFound("InvalidResourceNamespace", f"The resource namespace '{namespace}' is invalid.")
    api_versions = versions.ADVERTISED[canonical]
    types = [{"resourceType": t, "locations": [] if _tenant_level(t) else locations.display_names(),
              "apiVersions": api_versions, "defaultApiVersion": api_versions[0], "capabilities": "None"}
             for t in sorted(served(router)[canonical]) if t]
    body = {"namespace": canonical, "registrationState": "Registered", "registrationPolicy": "RegistrationRequired",
            "resourceTypes": types}
    if subscription:
        body = {"id": f"/subscriptions/{subscription}/providers/{canonical}", **body}
    return body


def operations(router: ArmRouter, namespace: str) -> list[dict]:
    """The provider's operations list (`az provider operation`, Compute's operations API)."""
    provider = namespace.split(".", 1)[-1]
    found = sorted({(t, verb) for t, verbs in served(router)[namespace].items() for verb in verbs})
    out = []
    for resource_type, verb in found:
        name = "/".join(p for p in (namespace, resource_type, verb) if p)
        out.append({"name": name, "isDataAction": False, "origin": "user,system",
                    "display": {"provider": f"Microsoft {provider}", "resource": resource_type or namespace,
                                "operation": name, "description": f"{verb.split('/')[0].capitalize()} "
                                                                  f"{resource_type or namespace}"}})
    return out


def register(router: ArmRouter) -> None:
    """Registered after every other provider: the handlers read router.routes when called."""
    async def list_providers(ctx: ArmContext) -> Response:
        sub = ctx.params.get("subscription")
        return JSONResponse({"value": [provider_view(router, ns, sub) for ns in versions.ADVERTISED]})

    async def get_provider(ctx: ArmContext) -> Response:
        return JSONResponse(provider_view(router, ctx.params["namespace"], ctx.params.get("subscription")))

    for base in (SUB, ""):
        router.add("GET", base + "/providers", list_providers, NS)
        router.add("GET", base + "/providers/{namespace}", get_provider, NS)
    # Registration is instant: every provider here is always registered.
    router.add("POST", SUB + "/providers/{namespace}/register", get_provider, NS)
    for namespace in ("Microsoft.Compute", "Microsoft.Batch"):
        router.add("GET", f"/providers/{namespace}/operations", _operations_handler(router, namespace), namespace)


def _operations_handler(router: ArmRouter, namespace: str):
    async def list_operations(ctx: ArmContext) -> Response:
        return JSONResponse({"value": operations(router, namespace)})
    return list_operations
