"""Azure Resource Manager routes: resource groups and Microsoft.Compute."""
