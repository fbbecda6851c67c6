"""The Entra ID endpoints azure-identity talks to: OpenID discovery, MSAL's instance
discovery and the client-credentials token endpoint. They answer at the address the client
used: this server's own, or https://login.microsoftonline.com with --azure-hostnames.
Failed client-secret sign-ins are limited (services/sign_in_limits.py): a locked client id
or address gets 429 with Retry-After, as Entra ID throttles."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ..services.errors import InvalidInput, PayloadTooLarge, ServiceError, TooManyRequests
from .bodies import read_body

MAX_FORM_BYTES = 64 * 1024


def _oauth_error(code: str, description: str, status: int = 400, headers: dict | None = None) -> JSONResponse:
    """Entra ID's error body, as MSAL reads it: `error` and `error_description` (which
    azure-identity shows), the AADSTS number again in `error_codes`, and the trace ids."""
    trace, correlation = str(uuid.uuid4()), str(uuid.uuid4())
    moment = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    number = re.match(r"AADSTS(\d+)", description)
    return JSONResponse({"error": code,
                         "error_description": f"{description} Trace ID: {trace} Correlation ID: {correlation} "
                                              f"Timestamp: {moment}",
                         "error_codes": [int(number[1])] if number else [], "timestamp": moment,
                         "trace_id": trace, "correlation_id": correlation,
                         "error_uri": "https://login.microsoftonline.com/error"
                                      + (f"?code={number[1]}" if number else "")},
                        status_code=status, headers=headers)


def remote_address(request: Request) -> str:
    """The peer's address, the key of the per-address sign-in limit."""
    return request.client.host if request.client else ""


def _tenant_base(request: Request) -> str:
    return f"{request.url.scheme}://{request.url.netloc}/{request.path_params['tenant']}"


def _issuer(request: Request, tenant: str) -> str:
    """The issuer tokens name: Azure's login host when the client used it, else this
    server's own address (whatever alias of it the client used), so that a token checks
    against a fixed list (services/identity.py)."""
    bases = request.app.state.services.identity.issuer_bases()
    base = next((b for b in bases[1:] if urlsplit(b).hostname == request.url.hostname), bases[0])
    return f"{base}/{tenant}/v2.0"


async def instance_discovery(request: Request) -> JSONResponse:
    """MSAL asks this of login.microsoftonline.com for the authority's aliases (api-version
    1.1) and, for an authority it does not know, for its tenant discovery endpoint (1.0).
    Every instance here is its own, with no aliases."""
    try:
        endpoint = urlsplit(request.query_params.get("authorization_endpoint", ""))
        tenant = endpoint.path.strip("/").split("/")[0]
        valid = endpoint.scheme == "https" and bool(endpoint.hostname) and bool(tenant)
    except ValueError:  # not a URL at all (https://[::1/x, say)
        valid = False
    if not valid:
        return _oauth_error("invalid_instance", "AADSTS50049: Unknown or invalid instance: give authorization_endpoint "
                            "as https://{host}/{tenant}/oauth2/v2.0/authorize.")
    host = endpoint.netloc  # as Entra ID does: the instance the client asks about
    return JSONResponse({
        "tenant_discovery_endpoint": f"https://{host}/{tenant}/v2.0/.well-known/openid-configuration",
        "api-version": request.query_params.get("api-version", "1.1"),
        "metadata": [{"preferred_network": host, "preferred_cache": host, "aliases": [host]}],
    })


async def openid_configuration(request: Request) -> JSONResponse:
    services = request.app.state.services
    tenant = request.path_params["tenant"]
    if tenant.lower() not in {t.lower() for t in services.identity.tenants()} and tenant not in ("common", "organizations"):
        return _oauth_error("invalid_tenant", f"AADSTS90002: Tenant '{tenant}' not found.")
    base = _tenant_base(request)
    return JSONResponse({
        "issuer": _issuer(request, tenant),
        "token_endpoint": f"{base}/oauth2/v2.0/token",
        "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
        "jwks_uri": f"{base}/discovery/v2.0/keys",
        "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
        "response_types_supported": ["token"],
        "grant_types_supported": ["client_credentials"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "tenant_region_scope": "NA",
    })


async def keys(request: Request) -> JSONResponse:
    return JSONResponse(request.app.state.services.identity.public_jwks())


async def token(request: Request) -> JSONResponse:
    services = request.app.state.services
    try:
        raw = await read_body(request, MAX_FORM_BYTES, PayloadTooLarge("invalid_request", "too large"))
    except PayloadTooLarge:
        return _oauth_error("invalid_request", "AADSTS900144: The request body is too large.")
    except InvalidInput:  # the connection closed before the body ended
        return _oauth_error("invalid_request", "AADSTS900144: The request body ended early.")
    form = {k: v[0] for k, v in parse_qs(raw.decode("utf-8", errors="replace")).items()}
    if form.get("grant_type") != "client_credentials":
        return _oauth_error("unsupported_grant_type", "AADSTS70003: The app requested an unsupported grant type "
                            f"'{form.get('grant_type')}'. Only client_credentials is supported.")
    for name in ("client_id", "client_secret", "scope"):
        if not form.get(name):
            return _oauth_error("invalid_request", f"AADSTS900144: The request body must contain the following "
                                f"parameter: '{name}'.")
    tenant = request.path_params["tenant"]
    try:
        principal = await run_in_threadpool(services.identity.authenticate_client, tenant, form["client_id"],
                                            form["client_secret"], remote_address(request))
    except TooManyRequests as exc:
        return _oauth_error(exc.code, exc.message, 429, {"Retry-After": str(exc.retry_after)})
    except ServiceError as exc:
        return _oauth_error(exc.code, exc.message, 401 if exc.code == "invalid_client" else 400)
    access_token, lifetime = services.identity.issue_token(principal, form["scope"], _issuer(request, principal.tenant_id))
    return JSONResponse({"token_type": "Bearer", "expires_in": lifetime, "ext_expires_in": lifetime,
                         "access_token": access_token},
                        headers={"Cache-Control": "no-store", "Pragma": "no-cache"})


routes = [
    Route("/common/discovery/instance", instance_discovery, methods=["GET"]),
    Route("/{tenant}/v2.0/.well-known/openid-configuration", openid_configuration, methods=["GET"]),
    Route("/{tenant}/.well-known/openid-configuration", openid_configuration, methods=["GET"]),
    Route("/{tenant}/discovery/v2.0/keys", keys, methods=["GET"]),
    Route("/{tenant}/oauth2/v2.0/token", token, methods=["POST"]),
    Route("/{tenant}/oauth2/token", token, methods=["POST"]),
]
