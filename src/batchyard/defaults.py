"""Fixed identifiers of the development tenant, subscription, principal and account, and
the published development credentials (in the habit of Azurite's devstoreaccount1).

CLIENT_SECRET and BATCH_ACCOUNT_KEY are used only with `batchyard serve --dev-credentials`:
otherwise every data directory makes its own random ones (connection.json gives them), and
replaces these where an older data directory still has them."""

TENANT_ID = "72f988bf-86f1-41af-91ab-2d7cd011db47"
SUBSCRIPTION_ID = "00000000-0000-0000-0000-0000000000b1"
LOCATION = "westus"
CLIENT_ID = "b47c4a2e-7a1f-4c0e-9d39-0000000000d1"
CLIENT_SECRET = "batchyard-development-secret"
PRINCIPAL_OBJECT_ID = "8d4f3c2a-0000-4000-8000-0000000000a1"
PRINCIPAL_NAME = "batchyard-dev"
RESOURCE_GROUP = "batchyard"
BATCH_ACCOUNT = "devbatch"
# base64 of 64 fixed bytes, like Azurite's well-known key
BATCH_ACCOUNT_KEY = "YmF0Y2h5YXJkLWRldmVsb3BtZW50LWtleS0wMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDA="

ARM_AUDIENCES = ("https://management.azure.com/", "https://management.core.windows.net/")
BATCH_AUDIENCE = "https://batch.core.windows.net/"
