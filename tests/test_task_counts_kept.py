"""A job's task counts are kept by the database as tasks are added, change state and are
deleted (store/db.py, migration 10), not counted per request: what Get Task Counts, a job's
onAllTasksComplete and autoscale read must always equal a count of the tasks themselves.
Store level, no server (the SDK-level counts are in test_batch_tasks.py and test_chaos.py)."""

from __future__ import annotations

import json
import random
import sqlite3

from batchyard.store import db as store_db
from batchyard.store.batch_tasks import Task, TaskStore
from batchyard.store.db import Database

STATES = [("active", None), ("running", None), ("completed", "success"), ("completed", "failure")]


def counted(db: Database, job_key: str) -> dict:
    """The counts as a GROUP BY over the tasks gives them (what the service did per request)."""
    rows = db.query("SELECT state, result, count(*) AS n, sum(slots) AS slots FROM batch_tasks "
                    "WHERE job_key = ? GROUP BY 1, 2", (job_key,))
    return {(r["state"], r["result"]): (r["n"], r["slots"]) for r in rows}


def new_task(job_key: str, i: int, slots: int) -> Task:
    return Task(job_key, {"id": f"T{i}", "state": "active", "requiredSlots": slots})


def set_state(task: Task, state: str, result: str | None) -> None:
    task.body["state"] = state
    task.body.setdefault("executionInfo", {}).pop("result", None)
    if result:
        task.body["executionInfo"]["result"] = result


def test_counts_follow_every_insert_change_and_delete(tmp_path):
    db = Database(tmp_path / "state.db")
    store = TaskStore(db)
    rng = random.Random(7)
    jobs = ["acct/jobs/a", "acct/jobs/b"]
    tasks = {job: [new_task(job, i, rng.choice((1, 2, 4))) for i in range(300)] for job in jobs}
    try:
        for job in jobs:
            store.insert(tasks[job])
        for _ in range(40):
            job = rng.choice(jobs)
            changed = rng.sample(tasks[job], 25)
            for task in changed:
                set_state(task, *rng.choice(STATES))
                task.body["requiredSlots"] = rng.choice((1, 2, 4))
            store.update(changed)
            assert store.count_by_state(job) == counted(db, job)
        for task in rng.sample(tasks["acct/jobs/a"], 50):
            store.delete("acct/jobs/a", task.id)
        assert store.count_by_state("acct/jobs/a") == counted(db, "acct/jobs/a")
        assert store.unfinished("acct/jobs/a") == sum(
            n for (state, _), (n, _) in counted(db, "acct/jobs/a").items() if state != "completed")
        store.delete_job("acct/jobs/b")
        assert store.count_by_state("acct/jobs/b") == {}
        assert db.query("SELECT count(*) AS n FROM batch_task_counts WHERE job_key = 'acct/jobs/b'")[0]["n"] == 0
    finally:
        db.close()


def test_tasks_stored_before_the_counts_are_counted_once_on_upgrade(tmp_path, monkeypatch):
    path = tmp_path / "state.db"
    with monkeypatch.context() as patched:  # the schema before migration 10
        patched.setattr(store_db, "MIGRATIONS", store_db.MIGRATIONS[:9])
        old = Database(path)
        with old.transaction() as conn:  # rows as that schema holds them (today's insert writes later columns)
            conn.executemany("INSERT INTO batch_tasks (job_key, task_key, state, ready, result, slots, expires, body, "
                             "internal) VALUES (?, ?, 'active', 1, NULL, ?, NULL, ?, '{}')",
                             [("acct/jobs/a", task.key, task.body["requiredSlots"], json.dumps(task.body))
                              for task in (new_task("acct/jobs/a", i, 1 + i % 3) for i in range(30))])
        old.close()
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == 9
    db = Database(path)
    try:
        store = TaskStore(db)
        assert store.count_by_state("acct/jobs/a") == {("active", None): (30, 10 + 20 + 30)} == counted(db, "acct/jobs/a")
        more = new_task("acct/jobs/a", 99, 2)
        store.insert([more])
        set_state(more, "completed", "success")
        store.update([more])
        assert store.count_by_state("acct/jobs/a") == counted(db, "acct/jobs/a")
    finally:
        db.close()
