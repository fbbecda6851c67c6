"""The one ASGI application: token endpoint, ARM, uploads, Batch and the portal on one port."""

from __future__ import annotations

import uuid

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Host, Match, Route

from .. import azure_names
from ..services.errors import InvalidInput, NotFound, ServiceError
from . import metadata, portal, principals, tokens, uploads
from .arm import batch as arm_batch
from .arm import batch_applications as arm_batch_applications
from .arm import batch_pools as arm_batch_pools
from .arm import authorization as arm_authorization
from .arm import batch_locations, compute, galleries, providers, resources
from .arm.router import ArmRouter, collapse_slashes
from .batch.router import error_response as batch_error_response
from .errors import arm_error
from .http_protocol import HeadSizeLimit
from .batch import applications as batch_applications
from .batch import files as batch_files
from .batch import job_schedules as batch_job_schedules
from .batch import jobs as batch_jobs
from .batch import pools as batch_pools
from .batch import unsupported as batch_unsupported
from .batch.page_readers import PageReaders
from .batch.router import BatchRouter


def build_arm_router() -> ArmRouter:
    router = ArmRouter()
    resources.register(router)
    compute.register(router)
    galleries.register(router)
    arm_batch.register(router)
    arm_batch_pools.register(router)
    arm_batch_applications.register(router)
    batch_locations.register(router)
    arm_authorization.register(router)
    providers.register(router)  # describes the routes above, read when asked
    return router


async def health(request: Request) -> JSONResponse:
    """A liveness probe, open to anyone: it says only that the server answers."""
    return JSONResponse({"status": "ok"})


def build_batch_router() -> BatchRouter:
    router = BatchRouter()
    batch_pools.register(router)
    batch_jobs.register(router)
    batch_job_schedules.register(router)
    batch_files.register(router)
    batch_applications.register(router)
    batch_unsupported.register(router)
    return router


def create_app(services) -> CollapseArmSlashes:
    arm = build_arm_router()
    batch = build_batch_router()

    async def batch_endpoint(request: Request):
        return await batch.dispatch(request)

    async def arm_endpoint(request: Request):
        return await arm.dispatch(request)

    async def batch_host(scope, receive, send):
        """A host-style account endpoint: the account is the first label of the host."""
        request = Request(scope, receive)
        params = scope["path_params"]
        response = await batch.dispatch(request, host_account=params["account"], host_region=params.get("region"))
        await response(scope, receive, send)

    settings = services.settings
    # Host-style account endpoints come first: every path on them is the account's.
    hosts = [Host("{account}." + settings.batch_host_suffix, app=batch_host)]
    if settings.azure_hostnames:
        hosts.append(Host("{account}.{region}." + azure_names.BATCH_SUFFIX, app=batch_host))

    arm_methods = ["GET", "PUT", "POST", "PATCH", "DELETE", "HEAD"]
    app = Starlette(routes=[
        *hosts,
        Route("/_health", health, methods=["GET"]),
        *uploads.routes,
        *metadata.routes,
        # ARM's tenant-level paths as well as everything under a subscription
        Route("/subscriptions", arm_endpoint, methods=arm_methods),
        Route("/subscriptions/{rest:path}", arm_endpoint, methods=arm_methods),
        Route("/tenants", arm_endpoint, methods=arm_methods),
        Route("/providers", arm_endpoint, methods=arm_methods),
        Route("/providers/{rest:path}", arm_endpoint, methods=arm_methods),
        Route("/batch/{rest:path}", batch_endpoint, methods=arm_methods),
        *principals.routes,
        *portal.routes,
        *tokens.routes,
    ], exception_handlers={404: _outside_routes, 405: _outside_routes})
    app.state.services = services
    app.state.batch_hosts = hosts
    app.state.page_readers = PageReaders(services.db.path, settings.list_concurrency, settings.list_nice)
    app.add_middleware(HeadSizeLimit, max_bytes=services.settings.max_header_bytes,
                       refuse=lambda scope, limit: _head_too_large(scope, limit, hosts))
    return CollapseArmSlashes(app)


async def _outside_routes(request: Request, exc: HTTPException) -> Response:
    """404/405 for paths no router serves, in the shape the client of that path reads."""
    if exc.status_code == 405:
        error: ServiceError = InvalidInput(
            "UnsupportedHttpMethod", f"The requested resource does not support http method '{request.method}'.")
    else:
        error = NotFound("NotFound", f"The requested path '{request.url.path}' was not found.")
    return _in_plane(request.scope, request.app.state.batch_hosts, error, exc.status_code)


def _head_too_large(scope, limit: int, batch_hosts: list[Host]) -> Response:
    error = InvalidInput("RequestHeaderFieldsTooLarge",
                         f"The request's target and headers together are larger than {limit} bytes.")
    return _in_plane(scope, batch_hosts, error, 431)


def _in_plane(scope, batch_hosts: list[Host], error: ServiceError, status: int) -> Response:
    """An error no router answered, in the shape its client reads: Batch's for a Batch
    path or an account's host name (one the account endpoints' routes match), ARM's for
    anything else."""
    if scope["path"].startswith("/batch/") or any(host.matches(scope)[0] == Match.FULL for host in batch_hosts):
        return batch_error_response(error, status, str(uuid.uuid4()))
    return arm_error(error, status)


class CollapseArmSlashes:
    """ARM reads '//subscriptions//x' as '/subscriptions/x'; routing must see it so too.
    Batch paths are left as sent: SharedKey signs them as they are."""

    _ARM_ROOTS = ("subscriptions", "tenants", "providers", "metadata")

    def __init__(self, app: Starlette):
        self.app = app
        self.state = app.state

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and "//" in scope["path"]:
            path = collapse_slashes(scope["path"])
            if path.split("/", 2)[1].lower() in self._ARM_ROOTS:
                scope = {**scope, "path": path}
        await self.app(scope, receive, send)
