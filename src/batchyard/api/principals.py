"""Service principals over HTTP, for `batchyard principal` and operators' scripts (Entra ID
does this through Microsoft Graph; this is Batchyard's own small route, with Graph's field
names). An ARM bearer token is required, and the caller must be allowed to manage role
assignments on a subscription of its tenant (services/authorization.py). A secret appears
in the answer that makes it, and nowhere else.

    GET    /batchyard/principals                              list (secrets' metadata only)
    POST   /batchyard/principals              {displayName, endDateTime?}    create: 201
    GET    /batchyard/principals/{clientId}
    DELETE /batchyard/principals/{clientId}                   204; its role assignments go too
    POST   /batchyard/principals/{clientId}/secrets  {displayName?, endDateTime?}   201
    DELETE /batchyard/principals/{clientId}/secrets/{keyId}   204
"""

from __future__ import annotations

from datetime import datetime

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..services.authorization import Caller
from ..services.errors import InvalidInput, PayloadTooLarge, ServiceError
from ..services.identity import principal_wire
from .arm.router import ArmRouter
from .bodies import parse_json, read_body
from .errors import arm_error

MAX_BODY_BYTES = 64 * 1024
_VERBS = {"GET": "read", "POST": "write", "DELETE": "delete"}


def _handler(action):
    async def endpoint(request: Request) -> Response:
        services = request.app.state.services
        try:
            claims = ArmRouter.authenticate(request, services)
            caller = Caller.bearer(claims)
            await run_in_threadpool(services.authorization.require_principal_admin, caller,
                                    claims.get("tid", ""), _VERBS[request.method])
            return await action(request, services)
        except ServiceError as exc:
            return arm_error(exc)
    return endpoint


async def _body(request: Request) -> dict:
    raw = await read_body(request, MAX_BODY_BYTES, PayloadTooLarge("RequestEntityTooLarge", "The request body is "
                                                                                             "over 64 KB."))
    try:
        body = parse_json(raw) if raw.strip() else {}
    except (ValueError, RecursionError):
        raise InvalidInput("InvalidRequestContent", "The request body is not JSON.") from None
    if not isinstance(body, dict):
        raise InvalidInput("InvalidRequestContent", "The request body must be a JSON object.")
    return body


def _end(body: dict) -> datetime | None:
    text = body.get("endDateTime")
    if text is None:
        return None
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput("InvalidRequestContent", f"endDateTime '{text}' is not an ISO 8601 date and time.") \
            from None


async def _list(request: Request, services) -> Response:
    return JSONResponse({"value": await run_in_threadpool(services.identity.principals)})


async def _create(request: Request, services) -> Response:
    body = await _body(request)
    principal, credential, secret = await run_in_threadpool(services.identity.create_principal,
                                                            body.get("displayName"), _end(body))
    return JSONResponse({**principal_wire(principal), "clientSecret": secret,
                         "passwordCredentials": [credential]}, status_code=201,
                        headers={"Cache-Control": "no-store"})


async def _get(request: Request, services) -> Response:
    return JSONResponse(await run_in_threadpool(services.identity.principal_view, request.path_params["client"]))


async def _delete(request: Request, services) -> Response:
    await run_in_threadpool(services.identity.delete_principal, request.path_params["client"])
    return Response(status_code=204)


async def _add_secret(request: Request, services) -> Response:
    body = await _body(request)
    credential, secret = await run_in_threadpool(services.identity.add_secret, request.path_params["client"],
                                                 _end(body), str(body.get("displayName") or ""))
    return JSONResponse({**credential, "secretText": secret}, status_code=201, headers={"Cache-Control": "no-store"})


async def _remove_secret(request: Request, services) -> Response:
    await run_in_threadpool(services.identity.remove_secret, request.path_params["client"],
                            request.path_params["key"])
    return Response(status_code=204)


BASE = "/batchyard/principals"
routes = [
    Route(BASE, _handler(_list), methods=["GET"]),
    Route(BASE, _handler(_create), methods=["POST"]),
    Route(BASE + "/{client}", _handler(_get), methods=["GET"]),
    Route(BASE + "/{client}", _handler(_delete), methods=["DELETE"]),
    Route(BASE + "/{client}/secrets", _handler(_add_secret), methods=["POST"]),
    Route(BASE + "/{client}/secrets/{key}", _handler(_remove_secret), methods=["DELETE"]),
]
