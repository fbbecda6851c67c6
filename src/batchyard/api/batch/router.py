"""The Batch data plane at `/batch/{account}/...` and at host-style endpoints
(`{account}.{suffix}/...`): authentication (SharedKey over the raw,
undecoded path, or a bearer token for https://batch.core.windows.net/), api-version,
routing on the raw path (ids and file paths may hold `%2F`), Batch-shaped errors and the
response headers the SDK reads."""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any, Awaitable, Callable
from urllib.parse import parse_qsl, unquote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ... import azure_names, defaults
from ...services.batch import api_versions
from ...services.batch.pools import NotModifiedOrFailed, PoolAuth
from ...services.errors import (Forbidden, InvalidInput, NotFound, PayloadTooLarge, ServiceError, Unauthenticated)
from ...services.authorization import Caller
from ..bodies import parse_json, read_body
from ..errors import status_of, unexpected
from ..permissions import batch_permission
from . import sharedkey
from .views import Urls, json_bytes


MAX_BODY = 1 << 20  # Azure refuses request bodies over 1 MB
ODATA_JSON = "application/json;odata=minimalmetadata"

Handler = Callable[["BatchContext"], Awaitable[Response]]


class BatchJSON(JSONResponse):
    """Starlette's JSONResponse, written by views.json_bytes: the Batch handlers' one way to
    answer with a JSON body."""

    def render(self, content: Any) -> bytes:
        return json_bytes(content)


@dataclass
class BatchContext:
    request: Request
    params: dict[str, str]
    services: Any
    account: Any  # the account's Resource
    auth: Caller  # mode PoolAuth.SHARED_KEY, or PoolAuth.BEARER with the principal
    endpoint: str  # the account's Batch endpoint as the client reached it
    query: dict[str, str] = field(default_factory=dict)
    version: str = api_versions.VERSIONS[-1]  # the request's api-version

    async def body(self) -> bytes:
        return await read_body(self.request, MAX_BODY, PayloadTooLarge(
            "RequestBodyTooLarge", "The request body is too large and exceeds the maximum permissible limit.",
            details=[{"key": "MaxLimit", "value": str(MAX_BODY)}]))

    async def json(self, required: bool = True) -> Any:
        raw = await self.body()
        if not raw.strip():
            if required:
                raise InvalidInput("MissingRequiredProperty", "The request body is missing.",
                                   details=[{"key": "Reason", "value": "A JSON body is required."}])
            return {}
        try:
            body = parse_json(raw)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise InvalidInput("InvalidRequestBody", "The specified Request Body is not syntactically valid.",
                               details=[{"key": "Reason", "value": str(exc)[:200] or "nested too deeply"}])
        return api_versions.upgrade_body(self.version, body)

    def conditions(self) -> dict:
        headers = self.request.headers
        out: dict[str, Any] = {k: headers[k] for k in ("if-match", "if-none-match") if headers.get(k)}
        for name in ("if-modified-since", "if-unmodified-since"):
            if headers.get(name):
                moment = sharedkey.parse_rfc1123(headers[name])
                if moment is None:
                    raise InvalidInput("InvalidHeaderValue", "The value for one of the HTTP headers is not in the "
                                       "correct format.", details=[{"key": "HeaderName", "value": name}])
                out[name] = moment
        return out

    async def call(self, fn, *args, **kwargs):
        return await run_in_threadpool(fn, *args, **kwargs)

    def url(self, *segments: str) -> str:
        return Urls(self.endpoint).url(*segments)

    def url_of_each(self, *segments: str) -> Callable[[str], str]:
        return Urls(self.endpoint).url_of_each(*segments)


@dataclass
class _Route:
    method: str
    pattern: re.Pattern
    handler: Handler


class BatchRouter:
    def __init__(self):
        self.routes: list[_Route] = []

    def add(self, method: str, template: str, handler: Handler) -> None:
        """template: '/pools/{poolId}/nodes/{nodeId}'; placeholders match one raw segment."""
        regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", template)
        self.routes.append(_Route(method, re.compile(f"^{regex}/?$", re.IGNORECASE), handler))

    async def dispatch(self, request: Request, host_account: str | None = None,
                       host_region: str | None = None) -> Response:
        """host_account: the account a host-style endpoint names, None for /batch/{account};
        host_region: the region in {account}.{region}.batch.azure.com."""
        request_id = str(uuid.uuid4())
        try:
            response = await self._dispatch(request, host_account, host_region)
        except NotModifiedOrFailed as exc:
            status = 304 if request.method in ("GET", "HEAD") else 412
            response = Response(status_code=304) if status == 304 else error_response(exc, 412, request_id)
        except ServiceError as exc:
            response = error_response(exc, status_of(exc), request_id)
        except Exception as exc:  # noqa: BLE001 - answered in Batch's shape, never with a trace
            error = unexpected(request, exc) or ServiceError(
                "InternalError", "Server encountered an internal error. Please try again after some time.")
            response = error_response(error, status_of(error), request_id)
        response = _in_version_shape(request.query_params.get("api-version", ""), response)
        response.headers["request-id"] = request_id
        client_request_id = request.headers.get("client-request-id")
        if client_request_id:
            response.headers["client-request-id"] = client_request_id
        response.headers["DataServiceVersion"] = "3.0"
        if request.method == "HEAD":
            response.body = b""
        return response

    async def _dispatch(self, request: Request, host_account: str | None, host_region: str | None) -> Response:
        # The raw path is what the client signed, with either form of endpoint.
        raw_path = request.scope.get("raw_path", request.url.path.encode()).decode("latin-1")
        account_name, rest, endpoint = _account_and_path(request, raw_path, host_account)
        services = request.app.state.services
        account = services.accounts.by_name(account_name)
        # In Azure, {account}.{region}.batch.azure.com only exists in the account's own region.
        if account is None or host_region and azure_names.region(account.body.get("location", "")) != host_region:
            raise NotFound("AccountNotFound", f"The Batch account '{account_name}' does not exist"
                           + (f" in region '{host_region}'." if account else "."))
        _refuse_repeats(request)
        query = dict(request.query_params)
        auth, task_job = self._task_token(request, account, services) or \
            (self._authenticate(request, raw_path, account, services), None)
        version = query.get("api-version")
        if not version:
            raise InvalidInput("MissingRequiredQueryParameter", "A query parameter that's mandatory for this "
                               "request is not specified.", details=[{"key": "QueryParameterName",
                                                                      "value": "api-version"}])
        if not api_versions.supported(version):
            raise InvalidInput("InvalidQueryParameterValue", "Value for one of the query parameters specified in "
                               "the request URI is invalid.", details=[
                                   {"key": "QueryParameterName", "value": "api-version"},
                                   {"key": "QueryParameterValue", "value": version},
                                   {"key": "Reason", "value": "Supported: " + ", ".join(api_versions.VERSIONS)}])
        route_match = next(((r, m) for r in self.routes
                            if r.method == request.method and (m := r.pattern.match(rest))), None)
        if route_match is None:
            if not any(r.pattern.match(rest) for r in self.routes):
                raise NotFound("InvalidUri", "The requested URI does not represent any resource on the server.",
                               details=[{"key": "Path", "value": rest[:200]}])
            raise InvalidInput("UnsupportedHttpVerb", "The resource doesn't support the specified HTTP verb.",
                               details=[{"key": "Verb", "value": request.method}])
        route, match = route_match
        params = {k: unquote(v) for k, v in match.groupdict().items()}
        if task_job is not None:
            services.task_tokens.check_scope(task_job, params)
        if auth.mode == PoolAuth.BEARER:
            await run_in_threadpool(authorize, services, auth, request.method, rest, account)
        if "$select" in query:
            query["$select"] = api_versions.upgrade_select(version, query["$select"])
        ctx = BatchContext(request, params, services, account, auth, endpoint, query, version)
        return await route.handler(ctx)

    @staticmethod
    def _task_token(request: Request, account, services) -> tuple[Caller, str] | None:
        """A task's authentication token: its job, with no more right than a shared key has."""
        scheme, _, credential = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not services.task_tokens.is_task_token(credential.strip()):
            return None
        try:
            job_id = services.task_tokens.verify(credential.strip(), account)
        except Unauthenticated as exc:
            raise Unauthenticated("AuthenticationFailed", "Server failed to authenticate the request.",
                                  details=[{"key": "AuthenticationErrorDetail", "value": exc.message}]) from None
        if not services.accounts.allows(account, "TaskAuthenticationToken"):
            raise Forbidden("AuthenticationFailed", "This account does not allow task authentication tokens "
                            "(allowedAuthenticationModes).")
        return Caller(PoolAuth.SHARED_KEY), job_id

    @staticmethod
    def _authenticate(request: Request, raw_path: str, account, services) -> Caller:
        header = request.headers.get("authorization")
        if not header:
            raise Unauthenticated("AuthenticationFailed", "Server failed to authenticate the request. Make sure "
                                  "the value of Authorization header is formed correctly including the signature.",
                                  details=[{"key": "AuthenticationErrorDetail",
                                            "value": "The Authorization header is missing."}])
        scheme, _, credential = header.partition(" ")
        if scheme.lower() == "bearer":
            try:
                claims = services.identity.verify_token(credential.strip(), (defaults.BATCH_AUDIENCE,))
            except Unauthenticated as exc:
                raise Unauthenticated("AuthenticationFailed", "Server failed to authenticate the request.",
                                      details=[{"key": "AuthenticationErrorDetail", "value": exc.message}]) from None
            if not services.accounts.allows(account, "AAD"):
                raise Forbidden("AuthenticationFailed", "This account does not allow Microsoft Entra ID "
                                "authentication (allowedAuthenticationModes).")
            return Caller.bearer(claims)
        signer, signature = sharedkey.parse_authorization(header)
        if signer.lower() != account.name.lower():
            raise Unauthenticated("AuthenticationFailed", "Server failed to authenticate the request. The account "
                                  "in the Authorization header does not match the account in the URL.",
                                  details=[{"key": "AuthenticationErrorDetail",
                                            "value": f"The request is signed for account '{signer}'."}])
        if not services.accounts.allows(account, "SharedKey"):
            raise Forbidden("AuthenticationFailed", "This account does not allow shared key authentication "
                            "(allowedAuthenticationModes).")
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.scope["headers"]]
        query = request.scope.get("query_string", b"").decode("latin-1")
        sharedkey.verify(request.method, raw_path, query, headers, services.accounts.keys_of(account), signer,
                         signature, datetime.now(UTC))
        return Caller(PoolAuth.SHARED_KEY)


def authorize(services, caller: Caller, method: str, rest: str, account) -> None:
    """A bearer caller needs a role on the account for the operation (the shared key is the
    account itself and may do anything in it, as in Azure)."""
    operation, data = batch_permission(method, rest)
    if not services.authorization.allowed(caller.object_id, operation, account.id, data):
        kind = "data action" if data else "action"
        raise Forbidden("AuthorizationFailure", "This request is not authorized to perform this operation.",
                        details=[{"key": "Reason", "value": f"The client '{caller.client_id}' with object id "
                                  f"'{caller.object_id}' does not have permission for the {kind} '{operation}' "
                                  f"over scope '{account.id}'."}])


def _account_and_path(request: Request, raw_path: str, host_account: str | None) -> tuple[str, str, str]:
    """(account name, path under the account, the account's endpoint as the client reached it)."""
    origin = f"{request.url.scheme}://{request.url.netloc}"
    if host_account is not None:
        return host_account, raw_path or "/", origin
    parts = raw_path.split("/", 3)  # '', 'batch', account, rest
    if len(parts) < 3 or not parts[2]:
        raise NotFound("AccountNotFound", "No Batch account is named in the path: use /batch/{account}/...")
    return unquote(parts[2]), "/" + parts[3] if len(parts) > 3 else "/", f"{origin}/batch/{parts[2]}"


def _refuse_repeats(request: Request) -> None:
    """A signature covers the first of repeated query parameters or headers while a handler
    might read another: such requests are refused rather than interpreted."""
    names = [k for k, _ in parse_qsl(request.scope.get("query_string", b"").decode("latin-1"),
                                     keep_blank_values=True)]
    repeated = {n for n in names if names.count(n) > 1}
    if repeated:
        raise InvalidInput("InvalidQueryParameterValue", "A query parameter is given more than once.",
                           details=[{"key": "QueryParameterName", "value": sorted(repeated)[0]}])
    headers = [k.decode("latin-1").lower() for k, _ in request.scope["headers"]]
    signed = {h for h in headers if h.startswith("ocp-") or h in sharedkey.SIGNED_HEADERS or h == "authorization"}
    repeated = {h for h in signed if headers.count(h) > 1}
    if repeated:
        raise InvalidInput("InvalidHeaderValue", "A header is given more than once.",
                           details=[{"key": "HeaderName", "value": sorted(repeated)[0]}])


def _in_version_shape(version: str, response: Response) -> Response:
    """Responses of older api-versions carry that version's field names (api_versions.py):
    JSON ones, the pages the list readers rendered included (file contents are not)."""
    json_body = isinstance(response, JSONResponse) or \
        (type(response) is Response and (response.media_type or "").startswith("application/json"))
    if not json_body or not api_versions.reshapes(version):
        return response
    shaped = api_versions.downgrade_body(version, json.loads(response.body))
    headers = {k: v for k, v in response.headers.items() if k.lower() not in ("content-length", "content-type")}
    return BatchJSON(shaped, status_code=response.status_code, headers=headers, media_type=response.media_type)


def error_response(exc: ServiceError, status: int, request_id: str) -> Response:
    moment = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f0Z")
    body = {
        "odata.metadata": "$metadata#Microsoft.Azure.Batch.Protocol.Entities.Container.errors/@Element",
        "code": exc.code,
        "message": {"lang": "en-US", "value": f"{exc.message}\nRequestId:{request_id}\nTime:{moment}"},
    }
    values = error_values(exc)
    if values:
        body["values"] = values
    return BatchJSON(body, status_code=status, media_type=ODATA_JSON)


def error_values(exc: ServiceError) -> list[dict]:
    """Batch's `values` of an error: the details that are key/value pairs."""
    return [d for d in exc.details if isinstance(d, dict) and "key" in d]


def rfc1123(iso_text: str) -> str:
    return format_datetime(datetime.fromisoformat(iso_text.replace("Z", "+00:00")), usegmt=True)


def entity_response(body: dict, status: int = 200, etag: str | None = None, last_modified: str | None = None,
                    data_service_id: str | None = None) -> Response:
    response = BatchJSON(body, status_code=status, media_type=ODATA_JSON) if status != 204 else \
        Response(status_code=204)
    _resource_headers(response, etag, last_modified, data_service_id)
    return response


def empty_response(status: int, etag: str | None = None, last_modified: str | None = None,
                   data_service_id: str | None = None) -> Response:
    response = Response(status_code=status)
    _resource_headers(response, etag, last_modified, data_service_id)
    return response


def _resource_headers(response: Response, etag, last_modified, data_service_id) -> None:
    if etag:
        response.headers["ETag"] = etag
    if last_modified:
        response.headers["Last-Modified"] = rfc1123(last_modified)
    if data_service_id:
        response.headers["DataServiceId"] = data_service_id
