"""Dispatch for everything under /subscriptions: match the path case-insensitively (ARM
does, and the SDKs differ in casing), check the bearer token, the subscription, the
caller's permission (RBAC), the resource group and the api-version, then call the handler
with a small request context."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from ... import defaults
from ...services.arm_ids import ResourceId
from ...services.authorization import Caller
from ...services.errors import InvalidInput, NotFound, PayloadTooLarge, ServiceError, Unauthenticated
from ..bodies import parse_json, read_body
from ..errors import arm_error, unexpected
from ..permissions import arm_permission
from . import versions

MAX_BODY_BYTES = 4 * 1024 * 1024  # ARM's request size limit


@dataclass
class ArmContext:
    request: Request
    params: dict[str, str]
    query: dict[str, str]
    claims: dict
    services: Any

    @property
    def base_url(self) -> str:
        """The address the client used (this server's own, or management.azure.com with
        --azure-hostnames), so the URLs it is given to follow reach the same place."""
        return f"{self.request.url.scheme}://{self.request.url.netloc}"

    async def json(self, optional: bool = False) -> Any:
        """The body as JSON; with `optional`, an empty body is {} (operations whose body the SDK may omit)."""
        raw = await read_body(self.request, MAX_BODY_BYTES, PayloadTooLarge(
            "RequestEntityTooLarge", "The request content size exceeds the maximum of 4 MB."))
        if optional and not raw.strip():
            return {}
        if not raw.strip():
            raise InvalidInput("InvalidRequestContent", "The request content was invalid: the body is empty.")
        try:
            return parse_json(raw)
        except (ValueError, RecursionError) as exc:
            raise InvalidInput(
                "InvalidRequestContent",
                f"The request content was invalid and could not be deserialized: '{exc}'.",
            )

    def rid(self, provider: str = "Microsoft.Compute", *types: str) -> ResourceId:
        """The resource id named by the path: types pair with the path params in order."""
        segments = tuple((t, self.params[t]) for t in types)
        return ResourceId(self.params["subscription"], self.params.get("resourceGroup"), provider, segments)

    async def call(self, fn: Callable, *args, **kwargs):
        return await run_in_threadpool(fn, *args, **kwargs)


Handler = Callable[[ArmContext], Awaitable[Response]]


@dataclass
class ArmRoute:
    method: str
    template: str
    pattern: re.Pattern
    handler: Handler
    namespace: str
    # a read-only view of its parent (a VM's instanceView), not a resource type of its own
    view: bool = False
    # the handler decides who may call it (operation status: whoever started the operation)
    own_check: bool = False


class ArmRouter:
    def __init__(self):
        self.routes: list[ArmRoute] = []

    def add(self, method: str, template: str, handler: Handler, namespace: str = "Microsoft.Compute",
            view: bool = False, own_check: bool = False) -> None:
        """Template segments in braces are parameters, e.g.
        /subscriptions/{subscription}/resourceGroups/{resourceGroup}/providers/Microsoft.Compute/disks/{disks}"""
        regex = re.sub(r"\{(\w+)\}", lambda m: f"(?P<{m[1]}>[^/]+)", template.rstrip("/"))
        self.routes.append(ArmRoute(method, template.rstrip("/"), re.compile(f"^{regex}/?$", re.IGNORECASE), handler,
                                  namespace, view, own_check))

    async def dispatch(self, request: Request) -> Response:
        try:
            return await self._dispatch(request)
        except ServiceError as exc:
            return arm_error(exc)
        except Exception as exc:  # noqa: BLE001 - answered in ARM's shape, never with a trace
            error = unexpected(request, exc) or ServiceError("InternalServerError", "Encountered internal server error.")
            return arm_error(error)

    async def _dispatch(self, request: Request) -> Response:
        services = request.app.state.services
        claims = self.authenticate(request, services)
        # the path as sent (decoded): request.url.path goes through urlsplit, which drops
        # tabs and newlines, so 'disk%0A' would be read as the name 'disk'
        path = request.scope["path"]
        method = "GET" if request.method == "HEAD" and not self._has_head(path) else request.method
        matched = [(r, m) for r in self.routes if (m := r.pattern.match(path))]
        if not matched:
            raise unknown_path(path, request.query_params.get("api-version"))
        route_match = next(((r, m) for r, m in matched if r.method == method), None)
        if route_match is None:
            raise InvalidInput("UnsupportedHttpMethod",
                               f"The requested resource does not support http method '{request.method}'.")
        route, match = route_match
        params = match.groupdict()
        query = {k.lower(): v for k, v in request.query_params.items()}
        if "subscription" in params:
            await run_in_threadpool(services.groups.check_subscription, params["subscription"])
            self._check_tenant(claims, params["subscription"], services)
        needed = arm_permission(request.method, path)
        # before the resource group is looked up: without access, nothing is learnt of it
        if needed and not route.own_check:
            await run_in_threadpool(services.authorization.require, Caller.bearer(claims), *needed)
        versions.check(request.query_params.get("api-version"), route.namespace)
        context = ArmContext(request, params, query, claims, services)
        if "resourceGroup" not in params or route.namespace == "Microsoft.Resources":
            response = await route.handler(context)
        elif request.method in ("PUT", "PATCH", "POST"):
            # a write in a group: refused once its delete is asked for, waited for by that delete
            write = await run_in_threadpool(services.groups.begin_write, params["subscription"], params["resourceGroup"])
            try:
                response = await route.handler(context)
            finally:
                services.groups.end_write(write)
        else:
            await run_in_threadpool(services.groups.get, params["subscription"], params["resourceGroup"])
            response = await route.handler(context)
        if request.method == "HEAD":
            response.body = b""
        return response

    def _has_head(self, path: str) -> bool:
        return any(r.method == "HEAD" and r.pattern.match(path) for r in self.routes)

    @staticmethod
    def authenticate(request: Request, services) -> dict:
        header = request.headers.get("authorization")
        if not header:
            raise Unauthenticated("AuthenticationFailed", "Authentication failed. The 'Authorization' header is missing.")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("AuthenticationFailed",
                                  "Authentication failed. The 'Authorization' header is provided in an invalid format.")
        return services.identity.verify_token(token.strip(), defaults.ARM_AUDIENCES)

    @staticmethod
    def _check_tenant(claims: dict, subscription: str, services) -> None:
        sub = services.groups.check_subscription(subscription)
        if claims.get("tid", "").lower() != sub["tenantId"].lower():
            raise Unauthenticated(
                "InvalidAuthenticationTokenTenant",
                f"The access token is from the wrong issuer '{claims.get('iss')}'. It must match the tenant "
                f"'{sub['tenantId']}' associated with this subscription.",
            )


def collapse_slashes(path: str) -> str:
    """ARM treats runs of slashes as one: '//subscriptions//x' is '/subscriptions/x'."""
    return re.sub(r"/{2,}", "/", path)


def unknown_path(path: str, api_version: str | None = None) -> ServiceError:
    """ARM's 404 for a path no route serves. Under a provider it names the full resource
    type the path asks for (a child type is 'virtualMachines/foo', not its parent), the way
    ARM reads a path: type, name, type, name..."""
    parts = path.strip("/").split("/")
    lowered = [p.lower() for p in parts]
    if "providers" not in lowered:
        return NotFound("NotFound", f"The requested path '{path}' was not found.")
    i = len(lowered) - 1 - lowered[::-1].index("providers")
    namespace = parts[i + 1] if len(parts) > i + 1 else ""
    if namespace.lower() not in {ns.lower() for ns in versions.ADVERTISED}:
        return NotFound("InvalidResourceNamespace", f"The resource namespace '{namespace}' is invalid.")
    kind = "/".join(parts[i + 2::2])
    suffix = f" for api version '{api_version}'" if api_version else ""
    return NotFound("InvalidResourceType",
                    f"The resource type '{kind}' could not be found in the namespace '{namespace}'{suffix}.")
