"""Compute nodes of Batch pools: the wire body of each node plus the service's private
data (its machine and disks), keyed by the pool's lower-cased resource id."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from . import codec
from .db import Database, ReadOnlyDatabase
from .keyset import EVERY_KEY, KeyRange, STATE_IN_BODY, in_key_order, page_query


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
    return Node(row["pool_key"], row["node_id"], codec.decode(row["body"]), codec.decode(row["internal"]))


class NodeStore:
    def __init__(self, db: Database | ReadOnlyDatabase):
        self.db = db

    def get(self, pool_key: str, node_id: str) -> Node | None:
        rows = self.db.query("SELECT * FROM batch_nodes WHERE pool_key = ? AND node_id = ?", (pool_key, node_id))
        return _row_to_node(rows[0]) if rows else None

    def page(self, pool_key: str, after: str | None, limit: int, state: str | None = None,
             ids: KeyRange = EVERY_KEY) -> list[Node]:
        """Up to `limit` nodes whose id sorts after `after`, in id order, in `state` (lower
        case) if given and with ids in `ids` (keyset paging on the primary key: a page costs
        what it holds, whatever the pool's size; a state is read from the body in SQL, so
        nodes in other states are not decoded)."""
        rows = self.db.query(*page_query("batch_nodes", "node_id", after, limit, ids, equal={
            "pool_key": pool_key, STATE_IN_BODY: state or None}))
        return [_row_to_node(r) for r in rows]

    def in_id_order(self, pool_key: str, after: str | None, chunk: int, state: str | None = None,
                    ids: KeyRange = EVERY_KEY):
        """The pool's nodes in id order from just after `after` (node ids are lower case),
        read `chunk` at a time."""
        return in_key_order(lambda last, limit: self.page(pool_key, last, limit, state, ids), lambda n: n.id,
                            after.lower() if after else None, chunk)

    def list(self, pool_key: str) -> list[Node]:
        rows = self.db.query("SELECT * FROM batch_nodes WHERE pool_key = ? ORDER BY rowid", (pool_key,))
        return [_row_to_node(r) for r in rows]

    def all(self) -> list[Node]:
        return [_row_to_node(r) for r in self.db.query("SELECT * FROM batch_nodes ORDER BY rowid")]

    def counts(self, pool_key: str | None = None) -> dict[str, dict[tuple[bool, str], int]]:
        """pool key -> {(isDedicated, state): number of nodes}, as the store's triggers keep
        them (a pass or a request reads a few rows, whatever the pools hold)."""
        where, params = ("WHERE pool_key = ?", (pool_key,)) if pool_key else ("", ())
        rows = self.db.query(f"SELECT pool_key, dedicated, state, n FROM batch_node_counts {where}", params)
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

    def needing_work(self) -> list[tuple[Node, str]]:
        """Nodes with work for the allocator (`remove`, `provision`, or the action pending)
        that has not been handed to a worker yet, each with that work: read through an index
        that holds only them, so nodes already handed over cost nothing."""
        rows = self.db.query(
            "SELECT * FROM batch_nodes INDEXED BY batch_nodes_undispatched "
            "WHERE work IS NOT NULL AND work IS NOT json_extract(internal, '$.dispatched') ORDER BY rowid")
        return [(_row_to_node(r), r["work"]) for r in rows]

    def dispatched(self, handed: list[tuple[Node, str]]) -> None:
        """This work of these nodes is with a worker now (until a restart: see `undispatch`)."""
        with self.db.transaction() as conn:
            conn.executemany(
                # json_set writes compact text: a record the json module wrote keeps its mark (codec.py)
                "UPDATE batch_nodes SET internal = CASE WHEN internal GLOB ' *' "
                "THEN ' ' || json_set(internal, '$.dispatched', ?1) ELSE json_set(internal, '$.dispatched', ?1) END "
                "WHERE pool_key = ?2 AND node_id = ?3", [(work, n.pool_key, n.id) for n, work in handed])

    def free_slots(self, pool_key: str, count: int, total: int) -> list[int]:
        """The `count` lowest slot numbers no node of the pool holds. `total` is how many nodes
        it holds: when its highest slot is total - 1 the slots have no gaps, and the index
        answers without reading the pool's nodes (gaps, left by nodes that went, are filled
        from a full read)."""
        slot = "json_extract(internal, '$.slot')"
        top = self.db.query(f"SELECT max({slot}) AS top FROM batch_nodes WHERE pool_key = ?", (pool_key,))[0]["top"]
        if top is None or top == total - 1:
            start = 0 if top is None else top + 1
            return list(range(start, start + count))
        rows = self.db.query(f"SELECT {slot} AS slot FROM batch_nodes WHERE pool_key = ?", (pool_key,))
        taken, free, candidate = {r["slot"] for r in rows}, [], 0
        while len(free) < count:
            if candidate not in taken:
                free.append(candidate)
            candidate += 1
        return free

    def put(self, *nodes: Node) -> None:
        with self.db.transaction() as conn:
            conn.executemany(
                "INSERT INTO batch_nodes (pool_key, node_id, body, internal) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (pool_key, node_id) DO UPDATE SET body = excluded.body, internal = excluded.internal",
                [(n.pool_key, n.id, codec.encode(n.body), codec.encode(n.internal)) for n in nodes])

    def delete(self, pool_key: str, node_id: str) -> None:
        self.db.execute("DELETE FROM batch_nodes WHERE pool_key = ? AND node_id = ?", (pool_key, node_id))

    def retire(self, node: Node, removed: str) -> None:
        """The node leaves its pool; its lifetime stays for the pool's usage metrics."""
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM batch_nodes WHERE pool_key = ? AND node_id = ?", (node.pool_key, node.id))
            conn.execute("INSERT INTO batch_retired_nodes (pool_key, allocated, removed) VALUES (?, ?, ?)",
                         (node.pool_key, node.body["allocationTime"], removed))

    def lifetimes(self, pool_key: str) -> list[tuple[str, str]]:
        """(allocationTime, removal time) of the nodes the pool held and no longer holds."""
        rows = self.db.query("SELECT allocated, removed FROM batch_retired_nodes WHERE pool_key = ?", (pool_key,))
        return [(r["allocated"], r["removed"]) for r in rows]

    def delete_pool(self, pool_key: str) -> None:
        """Whatever is left of a pool that is gone: its nodes and its retired nodes' lifetimes."""
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM batch_nodes WHERE pool_key = ?", (pool_key,))
            conn.execute("DELETE FROM batch_retired_nodes WHERE pool_key = ?", (pool_key,))
