"""`GET /metadata/endpoints`: the cloud description the Azure CLI (`az cloud register
--endpoint-resource-manager`), msrestazure and Azure Stack tooling read to find the login
endpoint, the token audiences and the resource ids of a cloud. Unauthenticated, as in Azure.

ARM answers in three shapes by api-version: before 2019-05-01 the legacy object
(`galleryEndpoint`, `authentication`, ...); 2019-05-01 an array of every cloud it knows
(what `ARM_CLOUD_METADATA_URL` names); from 2020-06-01 (the CLI asks 2022-09-01) one
object for this cloud. Every endpoint a client connects to is this server; audiences and
the Batch resource id keep Azure's values, since they name resources in tokens, not hosts."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from .. import defaults

CLOUD_NAME = "Batchyard"
ARRAY_SHAPE_VERSION = "2019-05-01"


def _audiences() -> list[str]:
    # the CLI takes audiences[0] as its management resource: Azure lists core.windows.net first
    return sorted(defaults.ARM_AUDIENCES, key=lambda a: "core.windows.net" not in a)


def cloud(base_url: str) -> dict:
    """This cloud, in the shape of api-version 2020-06-01 and later."""
    return {
        "name": CLOUD_NAME,
        "portal": f"{base_url}/",
        "resourceManager": f"{base_url}/",
        "authentication": {"loginEndpoint": base_url, "audiences": _audiences(), "tenant": "common",
                           "identityProvider": "AAD"},
        "batch": defaults.BATCH_AUDIENCE,
        # No other Azure service runs here: no storage, key vault or SQL suffixes to offer.
        "suffixes": {},
    }


def legacy(base_url: str) -> dict:
    return {"galleryEndpoint": f"{base_url}/", "portalEndpoint": f"{base_url}/",
            "authentication": {"loginEndpoint": f"{base_url}/", "audiences": _audiences()}}


async def endpoints(request: Request) -> JSONResponse:
    base_url = request.app.state.services.settings.base_url
    version = request.query_params.get("api-version") or ""
    if version == ARRAY_SHAPE_VERSION:
        return JSONResponse([cloud(base_url)])
    if version[:10] > ARRAY_SHAPE_VERSION:
        return JSONResponse(cloud(base_url))
    return JSONResponse(legacy(base_url))


routes = [Route("/metadata/endpoints", endpoints, methods=["GET"])]
