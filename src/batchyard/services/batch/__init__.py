"""Azure Batch: accounts, pools, nodes and their allocation (and, next, jobs and tasks)."""
