"""The Azure Batch data plane at /batch/{account}: authentication, routes, Batch-shaped errors."""
