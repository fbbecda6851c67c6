"""The one ASGI application: token endpoint, ARM, uploads (and later Batch and the portal)
on one port."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Host, Route

from .. import azure_names
from . import tokens, uploads
from .arm import batch as arm_batch
from .arm import compute, resources
from .arm.router import ArmRouter
from .batch import files as batch_files
from .batch import jobs as batch_jobs
from .batch import pools as batch_pools
from .batch.router import BatchRouter


def build_arm_router() -> ArmRouter:
    router = ArmRouter()
    resources.register(router)
    compute.register(router)
    arm_batch.register(router)
    return router


async def health(request: Request) -> JSONResponse:
    services = request.app.state.services
    return JSONResponse({"status": "ok", "machines": services.provider.mode})


def build_batch_router() -> BatchRouter:
    router = BatchRouter()
    batch_pools.register(router)
    batch_jobs.register(router)
    batch_files.register(router)
    return router


def create_app(services) -> Starlette:
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
        Route("/subscriptions/{rest:path}", arm_endpoint, methods=arm_methods),
        Route("/batch/{rest:path}", batch_endpoint, methods=arm_methods),
        *tokens.routes,
    ])
    app.state.services = services
    return app
