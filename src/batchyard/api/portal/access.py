"""The portal asks the same questions the APIs ask, for the request each page stands for:
a pool page is `GET /pools/{id}` on the account's Batch endpoint with a bearer token, the
Images page is `GET .../providers/Microsoft.Compute/images` on ARM. So a principal sees and
does in the portal exactly what its token lets it do through the SDKs (api/permissions.py,
services/authorization.py); nothing here decides on its own."""

from __future__ import annotations

from urllib.parse import quote

from ...services.authorization import Caller
from ...services.errors import Forbidden, NotFound
from ..batch.router import authorize
from ..permissions import arm_permission


def batch_account(services, caller: Caller, name: str, method: str, *segments: str):
    """The account, once the caller may make the Batch request `method /segments...` there
    with a bearer token (the account must allow Entra ID authentication, as for the API)."""
    account = _named(services, name)
    if not services.accounts.allows(account, "AAD"):
        raise Forbidden("AuthenticationFailed", "This account does not allow Microsoft Entra ID authentication "
                        "(allowedAuthenticationModes).")
    authorize(services, caller, method, "/" + "/".join(quote(s, safe="") for s in segments), account)
    return account


def arm_account(services, caller: Caller, name: str, method: str):
    """The account, once ARM would let the caller make `method` on it."""
    account = _named(services, name)
    arm(services, caller, method, account.id)
    return account


def _named(services, name: str):
    account = services.accounts.by_name(name)
    if account is None:
        raise NotFound("AccountNotFound", f"The Batch account '{name}' does not exist.")
    return account


def arm(services, caller: Caller, method: str, path: str) -> None:
    """ARM's check for `method path` (AuthorizationFailed when the caller may not)."""
    needed = arm_permission(method, path)
    if needed:
        services.authorization.require(caller, *needed)


def may(services, caller: Caller, method: str, path: str) -> bool:
    """Whether ARM would let the caller make the request: to leave out what it may not see."""
    needed = arm_permission(method, path)
    return needed is None or services.authorization.allowed(caller.object_id, *needed)


def page_account(ctx, method: str, *segments: str):
    """batch_account for the account a portal page names, for its signed-in principal."""
    return batch_account(ctx.services, ctx.caller, ctx.params["account"], method, *segments)
