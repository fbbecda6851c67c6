"""The Python SDKs as code written for Azure uses them: no authority, no base_url, Batch
endpoints named https://{account}.{region}.batch.azure.com. Run where Azure's host names
resolve to a `batchyard serve --azure-hostnames`. Prints one JSON line per step.

Usage: python azure_public_cloud.py CONNECTION_JSON ACCOUNT ACCOUNT_RESOURCE_GROUP RUN_ID"""

from __future__ import annotations

import base64
import json
import sys

import msal
from azure.batch import BatchClient
from azure.core.credentials import AzureNamedKeyCredential
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.identity import ClientSecretCredential
from azure.mgmt.batch import BatchManagementClient
from azure.mgmt.resource.resources import ResourceManagementClient


def say(step: str, **data) -> None:
    print(json.dumps({"step": step, **data}), flush=True)


def claims(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def main(connection: str, account_name: str, account_group: str, run: str) -> None:
    c = json.load(open(connection))
    ca = c["ca_bundle"]
    credential = ClientSecretCredential(c["tenant_id"], c["client_id"], c["client_secret"], connection_verify=ca)
    for scope in ("https://management.azure.com/.default", "https://batch.core.windows.net//.default"):
        token = claims(credential.get_token(scope).token)
        say("token", scope=scope, iss=token["iss"], aud=token["aud"], tid=token["tid"])

    resources = ResourceManagementClient(credential, c["subscription_id"], connection_verify=ca)
    group = resources.resource_groups.create_or_update(f"public-{run}", {"location": "westus"})
    say("group", id=group.id, exists=resources.resource_groups.check_existence(f"public-{run}"))

    mgmt = BatchManagementClient(credential, c["subscription_id"], connection_verify=ca)
    account = mgmt.batch_account.get(account_group, account_name)
    keys = mgmt.batch_account.get_keys(account_group, account_name)
    say("account", endpoint=account.account_endpoint)

    endpoint = "https://" + account.account_endpoint
    batch = BatchClient(endpoint, credential, connection_verify=ca)
    image = next(iter(batch.list_supported_images()))
    pool_id = f"public-pool-{run}"
    batch.create_pool({"id": pool_id, "vmSize": "standard_d2s_v3", "targetDedicatedNodes": 0,
                       "virtualMachineConfiguration": {"imageReference": image.image_reference.as_dict(),
                                                       "nodeAgentSKUId": image.node_agent_sku_id}})
    pool = batch.get_pool(pool_id)
    say("pool", url=pool.url, listed=[p.id for p in batch.list_pools()])

    keyed = BatchClient(endpoint, AzureNamedKeyCredential(account_name, keys.primary), connection_verify=ca)
    keyed.begin_delete_pool(pool_id, polling_interval=0.1).result()
    try:
        keyed.get_pool(pool_id)
    except ResourceNotFoundError as exc:
        say("pool-deleted", code=exc.error.code if exc.error else None)

    stranger = BatchClient(endpoint.replace(f"https://{account_name}.", "https://nosuchaccount.", 1),
                           AzureNamedKeyCredential("nosuchaccount", keys.primary), connection_verify=ca)
    elsewhere = BatchClient(endpoint.replace(".eastus.", ".westus.", 1),
                            AzureNamedKeyCredential(account_name, keys.primary), connection_verify=ca)
    for step, client in (("unknown-account", stranger), ("other-region", elsewhere)):
        try:
            client.get_pool(pool_id)
        except HttpResponseError as exc:
            say(step, status=exc.status_code, code=exc.error.code if exc.error else None)

    # MSAL itself, as azure-identity drives it: forgetting the app's tokens asks instance
    # discovery (https://login.microsoftonline.com/common/discovery/instance) for the aliases.
    app = msal.ConfidentialClientApplication(c["client_id"], client_credential=c["client_secret"],
                                             authority=f"https://login.microsoftonline.com/{c['tenant_id']}",
                                             verify=ca)
    first = app.acquire_token_for_client(["https://batch.core.windows.net//.default"])
    app.remove_tokens_for_client()
    aliases = app.authority_groups
    again = app.acquire_token_for_client(["https://batch.core.windows.net//.default"])
    say("msal", aliases=sorted(sorted(group) for group in aliases["login.microsoftonline.com"]),
        sources=[first["token_source"], again["token_source"]])

if __name__ == "__main__":
    main(*sys.argv[1:])
