"""Azure's public-cloud host names, which `serve --azure-hostnames` answers as, so code with
hard-coded endpoints (https://management.azure.com, https://login.microsoftonline.com,
https://{account}.{region}.batch.azure.com) reaches this server once the names resolve here."""

from __future__ import annotations

import re

ARM_HOST = "management.azure.com"
LOGIN_HOST = "login.microsoftonline.com"
BATCH_SUFFIX = "batch.azure.com"
HTTPS_PORT = 443

# The public cloud's regions, as location names; the certificate covers *.{region}.batch.azure.com
# for each, so accounts made later in any of them are reached without a new certificate.
REGIONS = (
    "australiacentral", "australiacentral2", "australiaeast", "australiasoutheast", "brazilsouth",
    "brazilsoutheast", "canadacentral", "canadaeast", "centralindia", "centralus", "chilecentral", "eastasia",
    "eastus", "eastus2", "francecentral", "francesouth", "germanynorth", "germanywestcentral", "indonesiacentral",
    "israelcentral", "italynorth", "japaneast", "japanwest", "jioindiacentral", "jioindiawest", "koreacentral",
    "koreasouth", "malaysiawest", "mexicocentral", "newzealandnorth", "northcentralus", "northeurope",
    "norwayeast", "norwaywest", "polandcentral", "qatarcentral", "southafricanorth", "southafricawest",
    "southcentralus", "southeastasia", "southindia", "spaincentral", "swedencentral", "swedensouth",
    "switzerlandnorth", "switzerlandwest", "uaecentral", "uaenorth", "uksouth", "ukwest", "westcentralus",
    "westeurope", "westindia", "westus", "westus2", "westus3",
)

_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_SUFFIX = re.compile(rf"^{_LABEL}(?:\.{_LABEL})+$")


def region(location: str) -> str:
    """ARM's location name: 'West US' -> 'westus'."""
    return location.replace(" ", "").lower()


def batch_host(account: str, location: str) -> str:
    return f"{account}.{region(location)}.{BATCH_SUFFIX}"


def is_host_suffix(suffix: str) -> bool:
    return bool(_SUFFIX.fullmatch(suffix))


def certificate_names(locations: set[str]) -> list[str]:
    """The names a certificate must cover to answer as Azure."""
    regions = sorted(set(REGIONS) | {r for r in map(region, locations) if re.fullmatch(_LABEL, r)})
    return [ARM_HOST, LOGIN_HOST, *(f"*.{r}.{BATCH_SUFFIX}" for r in regions)]
