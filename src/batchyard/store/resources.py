"""The ARM resource table: every resource's wire body plus the service's private data."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Collection

from . import codec
from .batch_tasks import RUNNABLE_TASKS
from .db import Database
from .keyset import EVERY_KEY, KeyRange, STATE_IN_BODY, in_key_order, page_query


@dataclass
class Resource:
    id: str
    type: str
    subscription: str
    resource_group: str | None
    name: str
    body: dict[str, Any]
    internal: dict[str, Any] = field(default_factory=dict)
    created: float = 0.0

    @property
    def properties(self) -> dict[str, Any]:
        return self.body.setdefault("properties", {})


def _row_to_resource(row) -> Resource:
    return Resource(
        id=row["id"],
        type=row["type"],
        subscription=row["subscription"],
        resource_group=row["resource_group"],
        name=row["name"],
        body=codec.decode(row["body"]),
        internal=codec.decode(row["internal"]),
        created=row["created"],
    )


class ResourceStore:
    """ARM ids are case-insensitive: rows are keyed by the lower-cased id, the id as first
    written is kept for display."""

    def __init__(self, db: Database):
        self.db = db

    def get(self, resource_id: str) -> Resource | None:
        rows = self.db.query("SELECT * FROM resources WHERE key = ?", (resource_id.lower(),))
        return _row_to_resource(rows[0]) if rows else None

    def type_of(self, resource_id: str) -> str | None:
        """The resource's type, without decoding it; None if there is no such resource."""
        rows = self.db.query("SELECT type FROM resources WHERE key = ?", (resource_id.lower(),))
        return rows[0]["type"] if rows else None

    def held_by(self, resource_id: str, limit: int) -> list[str]:
        """Up to `limit` keys of the resources inside `resource_id` (whose ids continue its
        id with a /), in key order: one range of the primary key ('0' follows '/')."""
        inside = resource_id.lower() + "/"
        rows = self.db.query("SELECT key FROM resources WHERE key >= ? AND key < ? ORDER BY key LIMIT ?",
                             (inside, inside[:-1] + "0", limit))
        return [r["key"] for r in rows]

    def put(self, resource: Resource) -> Resource:
        if not resource.created:
            resource.created = time.time()
        self.db.execute(
            "INSERT INTO resources (key, id, type, subscription, resource_group, name, body, internal, created) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET "
            "body = excluded.body, internal = excluded.internal",
            (
                resource.id.lower(),
                resource.id,
                resource.type.lower(),
                resource.subscription.lower(),
                (resource.resource_group or "").lower() or None,
                resource.name,
                codec.encode(resource.body),
                codec.encode(resource.internal),
                resource.created,
            ),
        )
        return resource

    def delete(self, resource_id: str) -> bool:
        return self.db.execute("DELETE FROM resources WHERE key = ?", (resource_id.lower(),)) > 0

    def list(
        self,
        type: str | None = None,
        subscription: str | None = None,
        resource_group: str | None = None,
        name: str | None = None,
        body_in: dict[str, Collection[str]] | None = None,
        internal_in: dict[str, Collection[str]] | None = None,
    ) -> list[Resource]:
        """name: only resources of that name, in any case. body_in, internal_in: only
        resources whose top-level body or internal property has one of the given values.
        All chosen in SQL: rows not wanted are never decoded."""
        clauses, params = [], []
        for column, value in (("type", type), ("subscription", subscription), ("resource_group", resource_group),
                              ("lower(name)", name)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value.lower())
        for column, wanted in (("body", body_in or {}), ("internal", internal_in or {})):
            for name, values in wanted.items():
                values = list(values)
                clauses.append(f"json_extract({column}, ?) IN ({','.join('?' * len(values))})")
                params += [f'$."{name}"', *values]
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self.db.query(f"SELECT * FROM resources {where} ORDER BY created, key", tuple(params))
        return [_row_to_resource(r) for r in rows]

    def moving_jobs(self, pool_keys: Collection[str] | None = None, runnable: bool = False) -> list[Resource]:
        """The Batch jobs in a state the scheduler has work for (migration 11), on these pools
        if given; with `runnable`, only the active ones holding a task ready to start. Read
        through the index of their pools: the jobs that ended are never read, and with
        `runnable` those with nothing to start are never decoded."""
        params = [key.lower() for key in pool_keys or ()]
        where = "moving_job_pool IS NOT NULL" if pool_keys is None else \
            f"moving_job_pool IN ({','.join('?' * len(params))})"
        if runnable:
            where += (" AND json_extract(body, '$.state') = 'active' AND EXISTS "
                      f"(SELECT 1 FROM {RUNNABLE_TASKS} AND job_key = resources.key)")
        rows = self.db.query(f"SELECT * FROM resources WHERE {where} ORDER BY created, key", tuple(params))
        return [_row_to_resource(r) for r in rows]

    def page(self, prefix: str, type: str, after: str | None, limit: int, state: str | None = None,
             ids: KeyRange = EVERY_KEY) -> list[Resource]:
        """Up to `limit` resources of `type` whose keys are `prefix` and a name that sorts
        after `after`, in key order, in `state` (lower case) if given and with names in
        `ids`: one range scan of the primary key, whatever the number of resources. (The
        unary + keeps SQLite from choosing the scope index for `type`, which would read every
        resource of the type to sort them.)"""
        rows = self.db.query(*page_query("resources", "key", after, limit, ids, prefix, equal={
            "+type": type.lower(), STATE_IN_BODY: state or None}))
        return [_row_to_resource(r) for r in rows]

    def in_key_order(self, prefix: str, type: str, after: str | None, chunk: int, state: str | None = None,
                     ids: KeyRange = EVERY_KEY):
        """The resources `page` reads, from just after `after`, read `chunk` at a time."""
        return in_key_order(lambda last, limit: self.page(prefix, type, last, limit, state, ids),
                            lambda r: r.id.lower()[len(prefix):], after, chunk)

    def all_internal(self) -> list[dict[str, Any]]:
        return [codec.decode(r["internal"]) for r in self.db.query("SELECT internal FROM resources")]
