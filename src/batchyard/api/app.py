"""The one ASGI application: token endpoint, ARM, uploads (and later Batch and the portal)
on one port."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from . import tokens, uploads
from .arm import compute, resources
from .arm.router import ArmRouter


def build_arm_router() -> ArmRouter:
    router = ArmRouter()
    resources.register(router)
    compute.register(router)
    return router


async def health(request: Request) -> JSONResponse:
    services = request.app.state.services
    return JSONResponse({"status": "ok", "machines": services.provider.mode})


def create_app(services) -> Starlette:
    arm = build_arm_router()

    async def arm_endpoint(request: Request):
        return await arm.dispatch(request)

    arm_methods = ["GET", "PUT", "POST", "PATCH", "DELETE", "HEAD"]
    app = Starlette(routes=[
        Route("/_health", health, methods=["GET"]),
        *uploads.routes,
        Route("/subscriptions/{rest:path}", arm_endpoint, methods=arm_methods),
        *tokens.routes,
    ])
    app.state.services = services
    return app
