"""The one ASGI application: token endpoint, ARM, uploads (and later Batch and the portal)
on one port."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from . import tokens, uploads
from .arm import batch as arm_batch
from .arm import compute, resources
from .arm.router import ArmRouter
from .http_protocol import HeadSizeLimit
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

    arm_methods = ["GET", "PUT", "POST", "PATCH", "DELETE", "HEAD"]
    app = Starlette(routes=[
        Route("/_health", health, methods=["GET"]),
        *uploads.routes,
        Route("/subscriptions/{rest:path}", arm_endpoint, methods=arm_methods),
        Route("/batch/{rest:path}", batch_endpoint, methods=arm_methods),
        *tokens.routes,
    ])
    app.state.services = services
    app.add_middleware(HeadSizeLimit, max_bytes=services.settings.max_header_bytes)
    return app
