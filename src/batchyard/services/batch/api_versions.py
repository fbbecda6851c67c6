"""The Batch data-plane api-versions served, and the one place where the shapes of older
versions are brought up to the current one (request bodies, `$select`) and back down
(responses).

Every published data-plane version from 2018-12-01.8.0 (azure-batch 6) to today is
accepted. Between them, what a client of an old version would notice:
- 2020-09-01.12.0 renamed a pool's `maxTasksPerNode` to `taskSlotsPerNode` (same
  meaning: how many task slots a node has; every task then used one slot) and turned the
  answer of `GET /jobs/{id}/taskcounts` from the bare counts into
  `{"taskCounts": ..., "taskSlotCounts": ...}`.
That is the only rename: the models of azure-batch 6, 11 and 14 otherwise differ from today's
spec only by fields added later (`requiredSlots`, `runningTaskSlotsCount`, ...; the old SDKs'
deserializers skip keys they do not know, and their requests never send them) or removed
(certificates, cloud service configuration).
"""

from __future__ import annotations

from typing import Any

# Oldest first. azure-batch 6.0 sends 2018-12-01.8.0, 11.0 sends 2021-06-01.14.0,
# 14.2 sends 2024-02-01.19.0, 15.x sends 2024-07-01.20.0 and 2025-06-01.
VERSIONS = ("2018-12-01.8.0", "2019-06-01.9.0", "2019-08-01.10.0", "2020-03-01.11.0", "2020-09-01.12.0",
            "2021-06-01.14.0", "2022-01-01.15.0", "2022-10-01.16.0", "2023-05-01.17.0", "2023-11-01.18.0",
            "2024-02-01.19.0", "2024-07-01.20.0", "2025-06-01")
TASK_SLOTS_VERSION = "2020-09-01.12.0"
# (name before TASK_SLOTS_VERSION, name since)
_RENAMED = (("maxTasksPerNode", "taskSlotsPerNode"),)


def supported(version: str) -> bool:
    return version in VERSIONS


def reshapes(version: str) -> bool:
    """Whether bodies of this (supported or not) version differ from the current shape."""
    return supported(version) and _before_task_slots(version)


def _before_task_slots(version: str) -> bool:
    return VERSIONS.index(version) < VERSIONS.index(TASK_SLOTS_VERSION)


def upgrade_body(version: str, body: Any) -> Any:
    """A request body of `version` in the current shape."""
    if not _before_task_slots(version):
        return body
    return _rename_keys(body, {old: new for old, new in _RENAMED})


def upgrade_select(version: str, select: str | None) -> str | None:
    """`$select` names the properties of its own version."""
    if select is None or not _before_task_slots(version):
        return select
    names = {old.lower(): new for old, new in _RENAMED}
    return ",".join(names.get(term.strip().lower(), term.strip()) for term in select.split(","))


def downgrade_body(version: str, body: Any) -> Any:
    """A response body (resource, list or error) in the shape of `version`."""
    if not _before_task_slots(version) or not isinstance(body, dict):
        return body
    if "taskCounts" in body and "taskSlotCounts" in body:
        return {k: v for k, v in body.items() if k == "odata.metadata"} | body["taskCounts"]
    renames = {new: old for old, new in _RENAMED}
    if "code" in body and isinstance(body.get("values"), list):
        # An error names the property the client sent, in the client's own words.
        return {**body, "values": [{**v, "value": renames.get(v.get("value"), v.get("value"))}
                                   if isinstance(v, dict) else v for v in body["values"]]}
    return _rename_keys(body, renames)


def _rename_keys(value: Any, names: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {names.get(k, k): _rename_keys(v, names) for k, v in value.items()}
    if isinstance(value, list):
        return [_rename_keys(v, names) for v in value]
    return value
