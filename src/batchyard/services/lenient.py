"""Azure's request readers (.NET JSON) accept a number or a boolean sent as a JSON string,
and the Azure CLI relies on it: `az batch pool create --target-dedicated-nodes 1` sends
`"targetDedicatedNodes": "1"`. These read such values as Azure does; anything else is
None, for the caller to refuse with its own error."""

from __future__ import annotations

import re
from typing import Any

_INTEGER = re.compile(r"^\s*[+-]?\d{1,19}\s*$")


def as_integer(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and _INTEGER.match(value):
        return int(value)
    return None


def as_boolean(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return None
