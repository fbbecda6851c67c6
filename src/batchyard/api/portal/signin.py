"""Signing in with a service principal's client id and secret, checked by the same code as
the token endpoint (Identity.authenticate_client: scrypt hashes, constant-time compares,
expired secrets refused) under the same limit on failed sign-ins (services/sign_in_limits.py);
signing out. The secret is never logged, echoed or kept."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from ... import defaults
from ...services.authorization import Caller
from ...services.errors import PayloadTooLarge, ServiceError, TooManyRequests
from ..tokens import remote_address
from .sessions import COOKIE, CSRF_FIELD, Session
from .web import PREFIX, page, read_form, redirect, refused, render, sessions_of, set_session_cookie


def _next(value: str | None) -> str:
    """Only a portal path: never another site (an open redirect)."""
    if value and value.startswith(PREFIX + "/") and not value.startswith("//") and "\\" not in value:
        return value
    return PREFIX + "/"


async def sign_in_form(request: Request) -> Response:
    sessions = sessions_of(request)
    session = sessions.find(request.cookies.get(COOKIE))
    new_id = None
    if session is None:
        new_id, session = sessions.new()
    response = render(request, session, "signin.html", next=_next(request.query_params.get("next")),
                      tenant=defaults.TENANT_ID, client_id="", error=None)
    if new_id:
        set_session_cookie(request, response, new_id)
    return response


async def sign_in(request: Request) -> Response:
    sessions = sessions_of(request)
    old_id = request.cookies.get(COOKIE)
    session = sessions.find(old_id)
    try:
        form = await read_form(request)
    except PayloadTooLarge as exc:
        return refused(request, exc.message)
    if session is None or not session.csrf_ok(form.get(CSRF_FIELD)):
        return refused(request, "The form's CSRF token is missing or wrong: reload the page and try again.")
    tenant = form.get("tenant", "").strip() or defaults.TENANT_ID
    client_id = form.get("client_id", "").strip()
    services = request.app.state.services
    try:
        principal = await run_in_threadpool(services.identity.authenticate_client, tenant, client_id,
                                            form.get("client_secret", ""), remote_address(request))
    except ServiceError as exc:
        # a locked sign-in is refused as the token endpoint refuses it: 429 and Retry-After
        throttled = isinstance(exc, TooManyRequests)
        response = render(request, session, "signin.html", 429 if throttled else 401, next=_next(form.get("next")),
                          tenant=tenant, client_id=client_id, error=exc.message.split(" Trace ID")[0])
        if throttled:
            response.headers["Retry-After"] = str(exc.retry_after)
        return response
    sessions.end(old_id)
    new_id, _ = sessions.new(Session(caller=Caller("AAD", principal.object_id.lower(), principal.client_id),
                                     name=principal.display_name or principal.client_id))
    response = redirect(_next(form.get("next"))[len(PREFIX):])
    set_session_cookie(request, response, new_id)
    return response


@page
async def sign_out(ctx) -> Response:
    sessions_of(ctx.request).end(ctx.request.cookies.get(COOKIE))
    response = redirect("/signin")
    response.delete_cookie(COOKIE, path=PREFIX)
    return response
