"""What every portal page shares: the session (sessions.py) read from the cookie, sign-in
required, the CSRF token checked on every POST, forms read with a limit, templates rendered
with autoescaping, and service errors shown as a page in the portal's own shape."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Awaitable, Callable
from urllib.parse import parse_qs, quote

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from ...services.errors import PayloadTooLarge, ServiceError
from ..bodies import read_body
from ..errors import status_of, unexpected
from .sessions import COOKIE, CSRF_FIELD, Session, Sessions, cookie_settings

MAX_FORM_BYTES = 256 * 1024
PREFIX = "/portal"
log = logging.getLogger("batchyard.portal")

templates = Environment(loader=PackageLoader("batchyard.api.portal", "templates"),
                        autoescape=select_autoescape(default=True), trim_blocks=True, lstrip_blocks=True)
templates.filters["q"] = lambda s: quote(str(s), safe="")


@dataclass
class PortalContext:
    request: Request
    session: Session
    services: Any
    form: dict[str, str]

    @property
    def caller(self):
        return self.session.caller

    @property
    def params(self) -> dict:
        return self.request.path_params

    async def call(self, fn, *args, **kwargs):
        return await run_in_threadpool(fn, *args, **kwargs)

    def render(self, template: str, status: int = 200, **values) -> HTMLResponse:
        return render(self.request, self.session, template, status, **values)


def sessions_of(request: Request) -> Sessions:
    state = request.app.state
    if not hasattr(state, "portal_sessions"):
        state.portal_sessions = Sessions()
    return state.portal_sessions


def render(request: Request, session: Session | None, template: str, status: int = 200, **values) -> HTMLResponse:
    html = templates.get_template(template).render(
        session=session, csrf=session.csrf if session else "", prefix=PREFIX, csrf_field=CSRF_FIELD,
        path=request.url.path, **values)
    return HTMLResponse(html, status_code=status, headers=_NO_STORE)


# Pages are private to the signed-in user and never framed (clickjacking); scripts and
# styles come from this server only.
_NO_STORE = {"Cache-Control": "no-store", "X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff",
             "Referrer-Policy": "same-origin",
             "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; "
                                        "form-action 'self'; base-uri 'none'"}


def is_tls(request: Request) -> bool:
    return request.url.scheme == "https"


def set_session_cookie(request: Request, response: Response, session_id: str) -> None:
    response.set_cookie(value=session_id, **cookie_settings(is_tls(request)))


async def read_form(request: Request) -> dict[str, str]:
    raw = await read_body(request, MAX_FORM_BYTES, PayloadTooLarge("RequestEntityTooLarge", "The form is too large."))
    return {k: v[0] for k, v in parse_qs(raw.decode("utf-8", errors="replace"), keep_blank_values=True).items()}


def refused(request: Request, reason: str) -> Response:
    """403 for a POST without a signed-in session or with a CSRF token that is missing or not
    the session's."""
    return HTMLResponse(f"<!doctype html><title>Refused</title><p>{reason}</p>", status_code=403, headers=_NO_STORE)


def to_sign_in(request: Request) -> Response:
    """An unsigned visitor of a page goes to the sign-in page, which brings it back."""
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"{PREFIX}/signin?next={quote(target, safe='')}", status_code=303,
                            headers=_NO_STORE)


Handler = Callable[[PortalContext], Awaitable[Response]]


def page(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """A portal route that needs a signed-in session (and on POST the session's CSRF token)."""
    async def endpoint(request: Request) -> Response:
        session = sessions_of(request).find(request.cookies.get(COOKIE))
        form: dict[str, str] = {}
        if request.method == "POST":
            if session is None or session.caller is None:
                return refused(request, "Sign in first.")
            try:
                form = await read_form(request)
            except PayloadTooLarge as exc:
                return refused(request, exc.message)
            if not session.csrf_ok(form.get(CSRF_FIELD) or request.headers.get("x-csrf-token")):
                return refused(request, "The form's CSRF token is missing or wrong: reload the page and try again.")
        elif session is None or session.caller is None:
            return to_sign_in(request)
        ctx = PortalContext(request, session, request.app.state.services, form)
        try:
            return await handler(ctx)
        except ServiceError as exc:
            return error_page(ctx, exc)
        except Exception as exc:  # noqa: BLE001 - a page, never a trace
            error = unexpected(request, exc) or ServiceError("InternalError", "The portal met an internal error.")
            return error_page(ctx, error)
    return endpoint


def error_page(ctx: PortalContext, exc: ServiceError) -> Response:
    status = status_of(exc)
    if ctx.request.url.path.endswith(".json"):
        return JSONResponse({"code": exc.code, "message": exc.message}, status_code=status, headers=_NO_STORE)
    return ctx.render("error.html", status, error=exc)


def json_response(body: Any) -> JSONResponse:
    return JSONResponse(body, headers=_NO_STORE)


def redirect(path: str) -> RedirectResponse:
    return RedirectResponse(PREFIX + path, status_code=303, headers=_NO_STORE)
