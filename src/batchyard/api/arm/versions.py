"""api-versions. Each provider lists what it advertises; any real api-version in the
advertised span is accepted, so both the current SDKs and older ones work."""

from __future__ import annotations

import datetime as dt
import re

from ...services.errors import InvalidInput

ADVERTISED = {
    "Microsoft.Resources": ["2025-04-01", "2024-11-01", "2024-07-01", "2024-03-01", "2023-07-01", "2022-09-01",
                            "2021-04-01", "2020-06-01", "2019-10-01", "2018-05-01", "2016-09-01", "2016-02-01"],
    "Microsoft.Compute": ["2026-04-01", "2026-03-03", "2026-03-02", "2025-11-01", "2025-04-01", "2025-03-03",
                          "2025-01-02", "2024-11-01", "2024-07-01", "2024-03-02", "2024-03-01", "2023-09-01",
                          "2023-07-01", "2023-04-02", "2023-03-01", "2022-11-01", "2022-08-01", "2022-03-01",
                          "2021-11-01", "2021-07-01", "2021-04-01", "2021-03-01", "2020-12-01", "2020-06-01",
                          "2019-12-01", "2019-07-01", "2019-03-01", "2018-10-01", "2018-06-01", "2018-04-01",
                          "2017-12-01", "2017-03-30", "2016-04-30-preview", "2016-03-30", "2015-06-15"],
    "Microsoft.Batch": ["2025-06-01", "2024-07-01", "2024-02-01", "2023-11-01", "2023-05-01", "2022-10-01",
                        "2022-06-01", "2022-01-01", "2021-06-01", "2021-01-01", "2020-09-01", "2020-05-01",
                        "2020-03-01", "2019-08-01", "2019-04-01", "2018-12-01", "2017-09-01", "2017-05-01",
                        "2017-01-01", "2015-12-01"],
    # roleAssignments and roleDefinitions (azure-mgmt-authorization 4 asks 2022-04-01)
    "Microsoft.Authorization": ["2022-05-01-preview", "2022-04-01", "2020-10-01-preview", "2020-04-01-preview",
                                "2018-09-01-preview", "2018-07-01", "2018-01-01-preview", "2015-07-01"],
}
_FORMAT = re.compile(r"^(\d{4})-(\d{2})-(\d{2})(-preview|-beta|-privatepreview)?$")


def check(api_version: str | None, namespace: str) -> None:
    if not api_version:
        raise InvalidInput("MissingApiVersionParameter",
                           "The api-version query parameter (?api-version=) is required for all requests.")
    advertised = ADVERTISED[namespace]
    match = _FORMAT.fullmatch(api_version)
    valid_date = False
    if match:
        try:
            day = dt.date(int(match[1]), int(match[2]), int(match[3]))
            valid_date = min(advertised) <= day.isoformat() <= max(v[:10] for v in advertised)
        except ValueError:
            valid_date = False
    if api_version not in advertised and not valid_date:
        raise InvalidInput(
            "InvalidApiVersionParameter",
            f"The api-version '{api_version}' is invalid. The supported versions are '{','.join(advertised)}'.",
        )
