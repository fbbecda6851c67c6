"""Microsoft.Batch at a location: the account quota (`az batch location quotas show`),
account name availability and the VM sizes a pool may use."""

from __future__ import annotations

from starlette.responses import JSONResponse, Response

from ...services.arm_resources import require_object
from ...services.batch.accounts import ACCOUNT_TYPE, ACCOUNTS_PER_REGION
from ...services.batch.vm_sizes import all_sizes
from ...services.compute import sizes
from ...services.errors import InvalidInput
from .router import ArmContext, ArmRouter

NS = "Microsoft.Batch"
LOCATION = "/subscriptions/{subscription}/providers/Microsoft.Batch/locations/{location}"


async def quotas(ctx: ArmContext) -> Response:
    return JSONResponse({"accountQuota": ACCOUNTS_PER_REGION})


async def check_name_availability(ctx: ArmContext) -> Response:
    body = require_object(await ctx.json(), "body")
    if str(body.get("type", "")).lower() != ACCOUNT_TYPE.lower():
        raise InvalidInput("InvalidParameter", f"The value '{body.get('type')}' of parameter 'type' is not valid. "
                           f"Allowed values are {ACCOUNT_TYPE}.", target="type")
    return JSONResponse(await ctx.call(ctx.services.accounts.name_availability, body.get("name")))


async def virtual_machine_skus(ctx: ArmContext) -> Response:
    return JSONResponse({"value": [{"name": s.name, "familyName": sizes.family(s), "capabilities": sizes.capabilities(s)}
                                   for s in all_sizes()]})


def register(router: ArmRouter) -> None:
    router.add("GET", LOCATION + "/quotas", quotas, NS)
    router.add("POST", LOCATION + "/checkNameAvailability", check_name_availability, NS)
    router.add("GET", LOCATION + "/virtualMachineSkus", virtual_machine_skus, NS)
