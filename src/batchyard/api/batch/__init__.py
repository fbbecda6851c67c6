"""The Azure Batch data plane at /batch/{account} and at host-style endpoints
({account}.{suffix}): authentication, routes, Batch-shaped errors."""
