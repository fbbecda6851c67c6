"""Compute nodes of Batch pools: the wire body of each node plus the service's private
data (its machine and disks), keyed by the pool's lower-cased resource id."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from .db import Database


@dataclass
class Node:
    pool_key: str
    id: str
    body: dict[str, Any]
    internal: dict[str, Any] = field(default_factory=dict)

    @property
    def state(self) -> str:
        return self.body["state"]


def _row_to_node(row) -> Node:
    return Node(row["pool_key"], row["node_id"], json.loads(row["body"]), json.loads(row["internal"]))


class NodeStore:
    def __init__(self, db: Database):
        self.db = db

    def get(self, pool_key: str, node_id: str) -> Node | None:
        rows = self.db.query("SELECT * FROM batch_nodes WHERE pool_key = ? AND node_id = ?", (pool_key, node_id))
        return _row_to_node(rows[0]) if rows else None

    def page(self, pool_key: str, after: str | None, limit: int) -> list[Node]:
        """Up to `limit` nodes whose id sorts after `after`, in id order (keyset paging on the
        primary key: a page costs what it holds, whatever the pool's size)."""
        rows = self.db.query("SELECT * FROM batch_nodes WHERE pool_key = ? AND node_id > ? ORDER BY node_id LIMIT ?",
                             (pool_key, after or "", limit))
        return [_row_to_node(r) for r in rows]

    def list(self, pool_key: str) -> list[Node]:
        rows = self.db.query("SELECT * FROM batch_nodes WHERE pool_key = ? ORDER BY rowid", (pool_key,))
        return [_row_to_node(r) for r in rows]

    def all(self) -> list[Node]:
        return [_row_to_node(r) for r in self.db.query("SELECT * FROM batch_nodes ORDER BY rowid")]

    def counts(self, pool_key: str | None = None) -> dict[str, dict[tuple[bool, str], int]]:
        """pool key -> {(isDedicated, state): number of nodes}, counted by SQLite (no
        node is decoded: a pass over thousands of nodes stays cheap)."""
        where, params = ("WHERE pool_key = ?", (pool_key,)) if pool_key else ("", ())
        rows = self.db.query(
            "SELECT pool_key, json_extract(body, '$.isDedicated') AS dedicated, json_extract(body, '$.state') AS state, "
            f"count(*) AS n FROM batch_nodes {where} GROUP BY 1, 2, 3", params)
        out: dict[str, dict[tuple[bool, str], int]] = {}
        for row in rows:
            out.setdefault(row["pool_key"], {})[(bool(row["dedicated"]), row["state"])] = row["n"]
        return out

    def states(self, pool_key: str) -> list[tuple[str, str, int, bool]]:
        """(id, state, running task slots, dedicated) of every node of the pool in id order,
        read by SQLite without decoding a node: what a view of thousands of nodes needs."""
        rows = self.db.query(
            "SELECT node_id, json_extract(body, '$.state') AS state, "
            "coalesce(json_extract(body, '$.runningTaskSlotsCount'), json_extract(body, '$.runningTasksCount'), 0) "
            "AS busy, coalesce(json_extract(body, '$.isDedicated'), 1) AS dedicated FROM batch_nodes "
            "WHERE pool_key = ? ORDER BY node_id", (pool_key,))
        return [(r["node_id"], r["state"], r["busy"], bool(r["dedicated"])) for r in rows]

    def needing_work(self) -> list[Node]:
        """Nodes the allocator must act on: leaving, not yet started, or with an action pending."""
        rows = self.db.query(
            "SELECT * FROM batch_nodes WHERE json_extract(body, '$.state') = 'leavingpool' "
            "OR (json_extract(body, '$.state') = 'creating' AND json_extract(internal, '$.started') IS NULL) "
            "OR json_extract(internal, '$.pending') IS NOT NULL ORDER BY rowid")
        return [_row_to_node(r) for r in rows]

    def slots(self, pool_key: str) -> set[int]:
        rows = self.db.query("SELECT json_extract(internal, '$.slot') AS slot FROM batch_nodes WHERE pool_key = ?",
                             (pool_key,))
        return {r["slot"] for r in rows}

    def put(self, *nodes: Node) -> None:
        with self.db.transaction() as conn:
            conn.executemany(
                "INSERT INTO batch_nodes (pool_key, node_id, body, internal) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (pool_key, node_id) DO UPDATE SET body = excluded.body, internal = excluded.internal",
                [(n.pool_key, n.id, json.dumps(n.body), json.dumps(n.internal)) for n in nodes])

    def delete(self, pool_key: str, node_id: str) -> None:
        self.db.execute("DELETE FROM batch_nodes WHERE pool_key = ? AND node_id = ?", (pool_key, node_id))

    def delete_pool(self, pool_key: str) -> None:
        self.db.execute("DELETE FROM batch_nodes WHERE pool_key = ?", (pool_key,))
