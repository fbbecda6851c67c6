"""Batch operations Azure serves and this service does not (yet): each answers 400
OperationNotSupported in Batch's error shape, naming the feature, so that a client learns
what is missing here rather than reading a bare InvalidUri. Paths that no Batch version
knows stay InvalidUri.

The list is every path of Azure's Batch data-plane spec (2025-06-01) that has no route
here, and the paths that older api-versions (back to 2018-12-01.8.0, azure-batch 6 to 14)
still name: certificates, lifetime statistics, remote desktop files.
"""

from __future__ import annotations

from starlette.responses import Response

from ...services.errors import Unsupported
from .router import BatchContext, BatchRouter

NODE = "/pools/{poolId}/nodes/{nodeId}"
# Certificates are addressed as `/certificates(thumbprintAlgorithm=sha1,thumbprint=...)`.
CERTIFICATE = "/certificates{selector}"

# feature -> [(method, path template)]
FEATURES: dict[str, list[tuple[str, str]]] = {
    "Certificates": [("GET", "/certificates"), ("POST", "/certificates"), ("GET", CERTIFICATE),
                     ("DELETE", CERTIFICATE), ("POST", CERTIFICATE + "/canceldelete")],
    "Lifetime statistics of pools and jobs": [("GET", "/lifetimepoolstats"), ("GET", "/lifetimejobstats")],
    "Node user accounts": [("POST", f"{NODE}/users"), ("PUT", f"{NODE}/users/{{userName}}"),
                           ("DELETE", f"{NODE}/users/{{userName}}")],
    "Remote login (SSH and RDP) to nodes": [("GET", f"{NODE}/remoteloginsettings"), ("GET", f"{NODE}/rdp")],
    "Uploads of Batch service logs": [("POST", f"{NODE}/uploadbatchservicelogs")],
    "Node VM extensions": [("GET", f"{NODE}/extensions"), ("GET", f"{NODE}/extensions/{{extensionName}}")],
    "Deallocating and starting nodes": [("POST", f"{NODE}/deallocate"), ("POST", f"{NODE}/start")],
}


def _refusal(feature: str):
    async def handler(ctx: BatchContext) -> Response:
        raise Unsupported("OperationNotSupported", f"This service (Batchyard) does not support this operation "
                          f"({feature}). Its README lists what it supports.",
                          details=[{"key": "Feature", "value": feature}])
    return handler


def register(router: BatchRouter) -> None:
    for feature, routes in FEATURES.items():
        handler = _refusal(feature)
        for method, template in routes:
            router.add(method, template, handler)
