"""The Azure regions this service answers for. Every machine runs on this host whatever its
location; the table exists so that clients that list regions (`az account
list-locations`, region pickers) see Azure's names, and so that per-region lists (VM
sizes, SKUs, quotas) have regions to be listed for. Resources may name any location."""

from __future__ import annotations

from dataclasses import dataclass



@dataclass(frozen=True)
class Region:
    name: str
    display_name: str
    geography_group: str
    geography: str
    latitude: str
    longitude: str
    physical_location: str
    paired: str


# Azure's published coordinates and pairs for a handful of regions, the default first.
REGIONS = [
    Region("westus", "West US", "US", "United States", "37.783", "-122.417", "California", "eastus"),
    Region("eastus", "East US", "US", "United States", "37.3719", "-79.8164", "Virginia", "westus"),
    Region("eastus2", "East US 2", "US", "United States", "36.6681", "-78.3889", "Virginia", "centralus"),
    Region("centralus", "Central US", "US", "United States", "41.5908", "-93.6208", "Iowa", "eastus2"),
    Region("westus2", "West US 2", "US", "United States", "47.233", "-119.852", "Washington", "westcentralus"),
    Region("westcentralus", "West Central US", "US", "United States", "40.890", "-110.234", "Wyoming", "westus2"),
    Region("northeurope", "North Europe", "Europe", "Europe", "53.3478", "-6.2597", "Ireland", "westeurope"),
    Region("westeurope", "West Europe", "Europe", "Europe", "52.3667", "4.9", "Netherlands", "northeurope"),
    Region("uksouth", "UK South", "Europe", "United Kingdom", "50.941", "-0.799", "London", "ukwest"),
    Region("ukwest", "UK West", "Europe", "United Kingdom", "53.427", "-3.084", "Cardiff", "uksouth"),
    Region("southeastasia", "Southeast Asia", "Asia Pacific", "Asia Pacific", "1.283", "103.833", "Singapore",
           "eastasia"),
    Region("eastasia", "East Asia", "Asia Pacific", "Asia Pacific", "22.267", "114.188", "Hong Kong",
           "southeastasia"),
    Region("japaneast", "Japan East", "Asia Pacific", "Japan", "35.68", "139.77", "Tokyo, Saitama", "japanwest"),
    Region("japanwest", "Japan West", "Asia Pacific", "Japan", "34.6939", "135.5022", "Osaka", "japaneast"),
    Region("australiaeast", "Australia East", "Asia Pacific", "Australia", "-33.86", "151.2094",
           "New South Wales", "australiasoutheast"),
    Region("australiasoutheast", "Australia Southeast", "Asia Pacific", "Australia", "-37.8136", "144.9631",
           "Victoria", "australiaeast"),
]


def names() -> list[str]:
    return [r.name for r in REGIONS]


def display_names() -> list[str]:
    """What the providers API lists as a resource type's locations."""
    return [r.display_name for r in REGIONS]


def view(region: Region, subscription: str) -> dict:
    """A Location as the subscriptions API (2022-12-01) renders it."""
    return {
        "id": f"/subscriptions/{subscription}/locations/{region.name}",
        "name": region.name,
        "type": "Region",
        "displayName": region.display_name,
        "regionalDisplayName": f"({region.geography}) {region.display_name}",
        "metadata": {
            "regionType": "Physical", "regionCategory": "Recommended", "geography": region.geography,
            "geographyGroup": region.geography_group, "longitude": region.longitude, "latitude": region.latitude,
            "physicalLocation": region.physical_location,
            "pairedRegion": [{"name": region.paired, "id": f"/subscriptions/{subscription}/locations/{region.paired}"}],
        },
    }
