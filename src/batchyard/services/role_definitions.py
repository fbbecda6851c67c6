"""Azure's built-in role definitions that matter here, with their real ids and permissions
(as Azure publishes them: learn.microsoft.com, "Azure built-in roles" and "Role-based
access control for Azure Batch service"). Management actions the roles name for services
that do not run here (Insights, Support, Network, ...) are kept: they are part of the role.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RoleDefinition:
    id: str  # the GUID, the same in every subscription
    name: str
    description: str
    actions: tuple[str, ...]
    not_actions: tuple[str, ...] = ()
    data_actions: tuple[str, ...] = ()
    not_data_actions: tuple[str, ...] = ()

    def wire(self, scope: str) -> dict:
        """As ARM shows it at `scope` ('' for the tenant: /providers/Microsoft.Authorization/...)."""
        return {
            "id": f"{scope}/providers/Microsoft.Authorization/roleDefinitions/{self.id}",
            "name": self.id,
            "type": "Microsoft.Authorization/roleDefinitions",
            "properties": {
                "roleName": self.name,
                "type": "BuiltInRole",
                "description": self.description,
                "assignableScopes": ["/"],
                "permissions": [{"actions": list(self.actions), "notActions": list(self.not_actions),
                                 "dataActions": list(self.data_actions),
                                 "notDataActions": list(self.not_data_actions)}],
                "createdOn": "2015-02-02T21:55:09.8806423Z",
                "updatedOn": "2024-04-25T15:51:12.4386153Z",
                "createdBy": None,
                "updatedBy": None,
            },
        }


OWNER = "8e3af657-a8ff-443c-a75c-2fe8c4bcb635"
CONTRIBUTOR = "b24988ac-6180-42a0-ab88-20f7382dd24c"
READER = "acdd72a7-3385-48ef-bd42-f606fba81ae7"
BATCH_ACCOUNT_CONTRIBUTOR = "29fe4964-1e60-436b-bd3a-77fd4c178b3c"

BUILT_IN: tuple[RoleDefinition, ...] = (
    RoleDefinition(OWNER, "Owner",
                   "Grants full access to manage all resources, including the ability to assign roles in Azure RBAC.",
                   ("*",)),
    RoleDefinition(CONTRIBUTOR, "Contributor",
                   "Grants full access to manage all resources, but does not allow you to assign roles in Azure RBAC, "
                   "manage assignments in Azure Blueprints, or share image galleries.",
                   ("*",),
                   ("Microsoft.Authorization/*/Delete", "Microsoft.Authorization/*/Write",
                    "Microsoft.Authorization/elevateAccess/Action", "Microsoft.Blueprint/blueprintAssignments/write",
                    "Microsoft.Blueprint/blueprintAssignments/delete", "Microsoft.Compute/galleries/share/action",
                    "Microsoft.Purview/consents/write", "Microsoft.Purview/consents/delete",
                    "Microsoft.Resources/deploymentStacks/manageDenySetting/action",
                    "Microsoft.Subscription/cancel/action", "Microsoft.Subscription/enable/action")),
    RoleDefinition(READER, "Reader", "View all resources, but does not allow you to make any changes.",
                   ("*/read",)),
    RoleDefinition("18d7d88d-d35e-4fb5-a5c3-7773c20a72d9", "User Access Administrator",
                   "Lets you manage user access to Azure resources.",
                   ("*/read", "Microsoft.Authorization/*", "Microsoft.Support/*")),
    RoleDefinition("9980e02c-c2be-4d73-94e8-173b1dc7cf3c", "Virtual Machine Contributor",
                   "Lets you manage virtual machines, but not access to them, and not the virtual network or storage "
                   "account they're connected to.",
                   ("Microsoft.Authorization/*/read", "Microsoft.Compute/availabilitySets/*",
                    "Microsoft.Compute/locations/*", "Microsoft.Compute/virtualMachines/*",
                    "Microsoft.Compute/virtualMachineScaleSets/*", "Microsoft.Compute/disks/write",
                    "Microsoft.Compute/disks/read", "Microsoft.Compute/disks/delete", "Microsoft.DevTestLab/schedules/*",
                    "Microsoft.Insights/alertRules/*",
                    "Microsoft.Network/applicationGateways/backendAddressPools/join/action",
                    "Microsoft.Network/loadBalancers/backendAddressPools/join/action",
                    "Microsoft.Network/loadBalancers/inboundNatPools/join/action",
                    "Microsoft.Network/loadBalancers/inboundNatRules/join/action",
                    "Microsoft.Network/loadBalancers/probes/join/action", "Microsoft.Network/loadBalancers/read",
                    "Microsoft.Network/locations/*", "Microsoft.Network/networkInterfaces/*",
                    "Microsoft.Network/networkSecurityGroups/join/action",
                    "Microsoft.Network/networkSecurityGroups/read", "Microsoft.Network/publicIPAddresses/join/action",
                    "Microsoft.Network/publicIPAddresses/read", "Microsoft.Network/virtualNetworks/read",
                    "Microsoft.Network/virtualNetworks/subnets/join/action", "Microsoft.RecoveryServices/locations/*",
                    "Microsoft.RecoveryServices/Vaults/backupFabrics/backupProtectionIntent/write",
                    "Microsoft.RecoveryServices/Vaults/backupFabrics/protectionContainers/protectedItems/*/read",
                    "Microsoft.RecoveryServices/Vaults/backupFabrics/protectionContainers/protectedItems/read",
                    "Microsoft.RecoveryServices/Vaults/backupFabrics/protectionContainers/protectedItems/write",
                    "Microsoft.RecoveryServices/Vaults/backupPolicies/read",
                    "Microsoft.RecoveryServices/Vaults/backupPolicies/write", "Microsoft.RecoveryServices/Vaults/read",
                    "Microsoft.RecoveryServices/Vaults/usages/read", "Microsoft.RecoveryServices/Vaults/write",
                    "Microsoft.ResourceHealth/availabilityStatuses/read", "Microsoft.Resources/deployments/*",
                    "Microsoft.Resources/subscriptions/resourceGroups/read", "Microsoft.SqlVirtualMachine/*",
                    "Microsoft.Storage/storageAccounts/listKeys/action", "Microsoft.Storage/storageAccounts/read",
                    "Microsoft.Support/*")),
    RoleDefinition(BATCH_ACCOUNT_CONTRIBUTOR, "Azure Batch Account Contributor",
                   "Grants full access to manage all Batch resources, including Batch accounts, pools and jobs.",
                   ("Microsoft.Authorization/*/read", "Microsoft.Batch/batchAccounts/*",
                    "Microsoft.Insights/alertRules/*", "Microsoft.Resources/deployments/*",
                    "Microsoft.Resources/subscriptions/resourceGroups/read"),
                   data_actions=("Microsoft.Batch/batchAccounts/*",)),
    RoleDefinition("11076f67-66f6-4be0-8f6b-f0609fd05cc9", "Azure Batch Account Reader",
                   "Lets you view all resources including pools and jobs in the Batch account.",
                   ("Microsoft.Batch/batchAccounts/read", "Microsoft.Batch/batchAccounts/*/read",
                    "Microsoft.Resources/subscriptions/resourceGroups/read"),
                   data_actions=("Microsoft.Batch/batchAccounts/*/read",)),
    RoleDefinition("6aaa78f1-f7de-44ca-8722-c64a23943cae", "Azure Batch Data Contributor",
                   "Grants permissions to manage Batch pools and jobs but not to modify accounts.",
                   ("Microsoft.Authorization/*/read", "Microsoft.Batch/batchAccounts/read",
                    "Microsoft.Batch/batchAccounts/applications/*", "Microsoft.Batch/batchAccounts/certificates/*",
                    "Microsoft.Batch/batchAccounts/certificateOperationResults/*",
                    "Microsoft.Batch/batchAccounts/pools/*", "Microsoft.Batch/batchAccounts/poolOperationResults/*",
                    "Microsoft.Batch/locations/*/read", "Microsoft.Insights/alertRules/*",
                    "Microsoft.Resources/deployments/*", "Microsoft.Resources/subscriptions/resourceGroups/read"),
                   data_actions=("Microsoft.Batch/batchAccounts/jobSchedules/*", "Microsoft.Batch/batchAccounts/jobs/*")),
    RoleDefinition("48e5e92e-a480-4e71-aa9c-2778f4c13781", "Azure Batch Job Submitter",
                   "Lets you submit and manage jobs in the Batch account.",
                   ("Microsoft.Batch/batchAccounts/applications/read",
                    "Microsoft.Batch/batchAccounts/applications/versions/read",
                    "Microsoft.Batch/batchAccounts/pools/read", "Microsoft.Insights/alertRules/*",
                    "Microsoft.Resources/subscriptions/resourceGroups/read"),
                   data_actions=("Microsoft.Batch/batchAccounts/jobSchedules/*", "Microsoft.Batch/batchAccounts/jobs/*")),
)

BY_ID = {role.id: role for role in BUILT_IN}
