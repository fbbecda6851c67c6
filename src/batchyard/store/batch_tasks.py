"""Tasks of Batch jobs: each task's wire body plus the service's private data (its node and
attempt), keyed by the job's lower-cased resource id and the lower-cased task id (Batch ids
are case-insensitive). `seq` keeps the order tasks were added in."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from . import codec
from .db import Database, ReadOnlyDatabase
from .keyset import EVERY_KEY, KeyRange, in_key_order, page_query

# A task the scheduler may start: waiting, and its dependencies met. The runnable index
# holds those tasks alone (migration 12, whose WHERE is this condition), and every query
# for them names it: without statistics SQLite's planner took the index by state and read
# each waiting task's row to test `ready`.
RUNNABLE = "state = 'active' AND ready = 1"
RUNNABLE_TASKS = f"batch_tasks INDEXED BY batch_tasks_runnable WHERE {RUNNABLE}"


@dataclass
class Task:
    job_key: str
    body: dict[str, Any]
    internal: dict[str, Any] = field(default_factory=dict)
    ready: bool = True
    seq: int | None = None

    @property
    def id(self) -> str:
        return self.body["id"]

    @property
    def key(self) -> str:
        return self.body["id"].lower()

    @property
    def state(self) -> str:
        return self.body["state"]


def _row_to_task(row) -> Task:
    return Task(row["job_key"], codec.decode(row["body"]), codec.decode(row["internal"]), bool(row["ready"]), row["seq"])


def _columns(task: Task) -> tuple:
    """state, ready, result, slots, expires, body, internal."""
    return (task.state, int(task.ready), task.body.get("executionInfo", {}).get("result"),
            task.body.get("requiredSlots", 1), task.internal.get("expires"), codec.encode(task.body),
            codec.encode(task.internal))


def _instances(task: Task) -> int | None:
    """A multi-instance task's numberOfInstances (migration 13); None for any other."""
    settings = task.body.get("multiInstanceSettings")
    return settings.get("numberOfInstances", 1) if settings else None


class TaskStore:
    def __init__(self, db: Database | ReadOnlyDatabase):
        self.db = db

    def get(self, job_key: str, task_id: str) -> Task | None:
        rows = self.db.query("SELECT * FROM batch_tasks WHERE job_key = ? AND task_key = ?", (job_key, task_id.lower()))
        return _row_to_task(rows[0]) if rows else None

    def get_many(self, job_key: str, task_ids: list[str]) -> dict[str, Task]:
        return {row["task_key"]: _row_to_task(row) for row in self._rows_of(job_key, task_ids, "*")}

    def _rows_of(self, job_key: str, task_ids: list[str], columns: str) -> list:
        """The rows of those tasks the job holds, asked 500 keys at a time (SQLite's limit on
        a statement's parameters)."""
        keys = [t.lower() for t in task_ids]
        rows: list = []
        for start in range(0, len(keys), 500):
            chunk = keys[start:start + 500]
            rows += self.db.query(f"SELECT {columns} FROM batch_tasks WHERE job_key = ? AND task_key IN "
                                  f"({','.join('?' * len(chunk))})", (job_key, *chunk))
        return rows

    def list(self, job_key: str, state: str | None = None) -> list[Task]:
        if state:
            rows = self.db.query("SELECT * FROM batch_tasks WHERE job_key = ? AND state = ? ORDER BY seq", (job_key, state))
        else:
            rows = self.db.query("SELECT * FROM batch_tasks WHERE job_key = ? ORDER BY seq", (job_key,))
        return [_row_to_task(r) for r in rows]

    def page(self, job_key: str, after: str | None, limit: int, state: str | None = None,
             ids: KeyRange = EVERY_KEY) -> list[Task]:
        """Up to `limit` tasks whose key sorts after `after`, in key order, in `state` if
        given and with keys in `ids`: a list costs what its page costs, whatever the size of
        the job (keyset paging on the unique index, or on the state index)."""
        rows = self.db.query(*page_query("batch_tasks", "task_key", after, limit, ids,
                                         equal={"job_key": job_key, "state": state or None}))
        return [_row_to_task(r) for r in rows]

    def in_key_order(self, job_key: str, after: str | None, chunk: int, state: str | None = None,
                     ids: KeyRange = EVERY_KEY):
        """The job's tasks in key order from just after `after`, read `chunk` at a time."""
        return in_key_order(lambda last, limit: self.page(job_key, last, limit, state, ids), lambda t: t.key,
                            after, chunk)

    def expired(self, moment: float) -> list[Task]:
        """Completed tasks whose directories are past their retention time."""
        return [_row_to_task(r) for r in self.db.query(
            "SELECT * FROM batch_tasks WHERE expires IS NOT NULL AND expires < ? ORDER BY seq", (moment,))]

    def in_states(self, states: tuple[str, ...]) -> list[Task]:
        marks = ",".join("?" * len(states))
        return [_row_to_task(r) for r in self.db.query(
            f"SELECT * FROM batch_tasks WHERE state IN ({marks}) ORDER BY seq", states)]

    def runnable(self, job_key: str, limit: int, multi_instance: bool = True) -> list[Task]:
        """The first `limit` runnable tasks in the order they were added; without
        `multi_instance`, the multi-instance ones left out (a pool that never runs them)."""
        other = "" if multi_instance else " AND instances IS NULL"
        rows = self.db.query(f"SELECT * FROM {RUNNABLE_TASKS}{other} AND job_key = ? ORDER BY seq LIMIT ?",
                             (job_key, limit))
        return [_row_to_task(r) for r in rows]

    def any_runnable(self, job_key: str) -> bool:
        """As count_runnable_instances() > 0, without counting a backlog of thousands at every dispatch."""
        return bool(self.db.query(f"SELECT 1 FROM {RUNNABLE_TASKS} AND job_key = ? LIMIT 1", (job_key,)))

    def count_runnable_instances(self, job_key: str) -> int:
        """The runnable tasks, a multi-instance task once per instance (migration 13)."""
        tasks = self.db.query(f"SELECT count(*) AS n FROM {RUNNABLE_TASKS} AND job_key = ?", (job_key,))[0]["n"]
        more = self.db.query("SELECT coalesce(sum(instances - 1), 0) AS n FROM batch_tasks "
                             f"INDEXED BY batch_tasks_runnable_instances WHERE {RUNNABLE} AND instances IS NOT NULL "
                             "AND job_key = ?", (job_key,))[0]["n"]
        return tasks + more

    def count_by_state(self, job_key: str) -> dict[tuple[str, str | None], tuple[int, int]]:
        """(state, result) -> (tasks, slots), from the counts the database keeps (migration 10)."""
        rows = self.db.query("SELECT state, result, n, slots FROM batch_task_counts WHERE job_key = ?", (job_key,))
        return {(r["state"], r["result"] or None): (r["n"], r["slots"]) for r in rows}

    def unfinished(self, job_key: str) -> int:
        return sum(n for (state, _), (n, _) in self.count_by_state(job_key).items() if state != "completed")

    def exists(self, job_key: str, task_ids: list[str]) -> set[str]:
        """The keys of those tasks the job holds (keys only: nothing decoded; asked under the
        scheduler's lock for every collection added)."""
        return {row["task_key"] for row in self._rows_of(job_key, task_ids, "task_key")}

    def insert(self, tasks: list[Task]) -> None:
        # row-sized statements (one each): journals in memory, see Database.journals_in_memory
        with self.db.journals_in_memory(), self.db.transaction() as conn:
            for task in tasks:
                cursor = conn.execute("INSERT INTO batch_tasks (job_key, task_key, state, ready, result, slots, "
                                      "expires, body, internal, instances) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                                      (task.job_key, task.key, *_columns(task), _instances(task)))
                task.seq = cursor.lastrowid

    def update(self, tasks: list[Task]) -> None:
        if not tasks:
            return
        with self.db.journals_in_memory(), self.db.transaction() as conn:  # row-sized, as insert
            conn.executemany("UPDATE batch_tasks SET state = ?, ready = ?, result = ?, slots = ?, expires = ?, "
                             "body = ?, internal = ? WHERE job_key = ? AND task_key = ?",
                             [(*_columns(t), t.job_key, t.key) for t in tasks])

    def delete(self, job_key: str, task_id: str) -> None:
        self.db.execute("DELETE FROM batch_tasks WHERE job_key = ? AND task_key = ?", (job_key, task_id.lower()))

    def delete_job(self, job_key: str) -> None:
        self.db.execute("DELETE FROM batch_tasks WHERE job_key = ?", (job_key,))
