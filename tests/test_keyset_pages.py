"""Pages of tasks, nodes, jobs and pools read from the store by keyset (store/keyset.py):
each page one range scan of an index, with what its $filter says of state and ids asked in
SQL, so a page reads the rows it holds however long the list is. Checked on a real SQLite
database: the rows each page's queries return, and SQLite's own plan for each query."""

from __future__ import annotations

import json
import pickle
import re
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from batchyard.api.batch import page_readers
from batchyard.services.batch import odata
from batchyard.services.batch.jobs import JOB_TYPE
from batchyard.services.batch.pools import POOL_TYPE
from batchyard.services.errors import InvalidInput
from batchyard.store.batch_nodes import Node, NodeStore
from batchyard.store.batch_tasks import Task, TaskStore
from batchyard.store.db import Database
from batchyard.store.resources import Resource, ResourceStore

ACCOUNT = "/subscriptions/s/resourcegroups/g/providers/microsoft.batch/batchaccounts/a"
OTHER = "/subscriptions/s/resourcegroups/g/providers/microsoft.batch/batchaccounts/b"
COUNT = 2000
STATES = ("active", "running", "completed")
NODE_STATES = ("idle", "running", "waitingForStartTask")


class Recorded:
    """The store's database, recording each query and the rows it returned."""

    def __init__(self, db: Database):
        self.db, self.queries = db, []

    def query(self, sql: str, params=()):
        rows = self.db.query(sql, params)
        self.queries.append((sql, params, len(rows)))
        return rows


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    db = Database(Path(tmp_path_factory.mktemp("keyset")) / "batchyard.db")
    with db.transaction():
        resources = ResourceStore(db)
        for account in (ACCOUNT, OTHER):
            for i in range(COUNT):
                for kind, type_ in (("jobs", JOB_TYPE), ("pools", POOL_TYPE)):
                    name = f"{kind[0].upper()}{i:05}"
                    resources.put(Resource(f"{account}/{kind}/{name}", type_, "s", "g", name,
                                           {"id": name, "state": STATES[i % 3]}))
        TaskStore(db).insert([Task(ACCOUNT + "/jobs/j00000", {"id": f"T{i:05}", "state": STATES[i % 3]})
                              for i in range(COUNT)])
        NodeStore(db).put(*[Node(ACCOUNT + "/pools/p00000", f"tvm-{i:05}", {"id": f"tvm-{i:05}",
                                                                            "state": NODE_STATES[i % 3],
                                                                            "isDedicated": True})
                            for i in range(COUNT)])
    yield db
    db.close()


def listed(stores, kind: str, filter_text: str | None, page_size: int, after: str | None = None):
    """One page as a list reader reads it (rows of page_size + 1 at a time, the full
    predicate after the store's narrowed query), with the queries it made."""
    recorded = Recorded(stores)
    narrowing = odata.narrowing(filter_text)
    read = (after, page_size + 1, narrowing.state, narrowing.ids)
    if kind == "tasks":
        items = (t.body for t in TaskStore(recorded).in_key_order(ACCOUNT + "/jobs/j00000", *read))
    elif kind == "nodes":
        items = (n.body for n in NodeStore(recorded).in_id_order(ACCOUNT + "/pools/p00000", *read))
    else:
        type_ = JOB_TYPE if kind == "jobs" else POOL_TYPE
        items = (r.body for r in ResourceStore(recorded).in_key_order(f"{ACCOUNT}/{kind}/", type_, *read))
    page, token = odata.ordered_page(items, {"$filter": filter_text, "maxresults": str(page_size)},
                                     lambda item: item["id"].lower())
    return [item["id"] for item in page], token, recorded.queries


def everything(kind: str) -> list[dict]:
    if kind == "nodes":
        return [{"id": f"tvm-{i:05}", "state": NODE_STATES[i % 3]} for i in range(COUNT)]
    letter = {"tasks": "T", "jobs": "J", "pools": "P"}[kind]
    return [{"id": f"{letter}{i:05}", "state": STATES[i % 3]} for i in range(COUNT)]


CASES = [
    ("tasks", None), ("tasks", "state eq 'completed'"), ("tasks", "startswith(id, 'T019')"),
    ("tasks", "id eq 't01234'"), ("tasks", "startswith(id, 'T01') and state eq 'running'"),
    ("nodes", None), ("nodes", "state eq 'waitingForStartTask'"), ("nodes", "startswith(id, 'tvm-0150')"),
    ("jobs", None), ("jobs", "state eq 'active'"), ("jobs", "startswith(id, 'J0199')"),
    ("jobs", "id eq 'j00777' and state eq 'active'"),
    ("pools", None), ("pools", "state eq 'running'"), ("pools", "id eq 'P01999'"),
]


@pytest.mark.parametrize("kind,filter_text", CASES)
def test_a_page_reads_only_its_rows_with_one_range_scan(stores, kind, filter_text):
    wanted = [item["id"] for item in everything(kind) if odata.compile_filter(filter_text)(item)]
    got, token, after = [], None, None
    while True:
        page, token, queries = listed(stores, kind, filter_text, 50, after)
        got += page
        # the page and the one row that says whether another follows, read with one query
        assert len(queries) == 1 and queries[0][2] <= 51, queries
        sql, params, _ = queries[0]
        plan = " ".join(row[3] for row in stores.query(f"EXPLAIN QUERY PLAN {sql}", params))
        assert re.search(r"\bSEARCH\b", plan) and "SCAN" not in plan and "TEMP B-TREE" not in plan, plan
        if token is None:
            break
        after = token
    assert got == wanted  # another account's jobs and pools are not listed


def test_pages_of_a_narrowed_filter_end_where_its_range_ends(stores):
    # 10 of 2,000 tasks start with T0199: their page is found without reading past them
    page, token, queries = listed(stores, "tasks", "startswith(id, 'T0199')", 100)
    assert page == [f"T0199{i}" for i in range(10)] and token is None
    assert queries[0][2] == 10


def test_a_page_holding_an_integer_past_64_bits_reads_back_exactly(stores, monkeypatch):
    # orjson renders pages and cannot write such an integer: the json module does then
    job_key = ACCOUNT + "/jobs/huge"
    ResourceStore(stores).put(Resource(job_key, JOB_TYPE, "s", "g", "huge", {"id": "huge"}))
    TaskStore(stores).insert([Task(job_key, {"id": "big", "state": "active", "metadata": [2 ** 70]}),
                              Task(job_key, {"id": "small", "state": "active"})])
    monkeypatch.setattr(page_readers, "_stores", (TaskStore(stores), NodeStore(stores), ResourceStore(stores)))
    page = page_readers.read_page(page_readers.PageRequest(
        "tasks", job_key, "huge", "https://a.batch", "https://a.batch/jobs/huge/tasks", {"api-version": "2025-06-01"}))
    assert [(t["id"], t.get("metadata")) for t in json.loads(page)["value"]] == [("big", [2 ** 70]), ("small", None)]
    assert json.loads(page)["value"][1]["url"] == "https://a.batch/jobs/huge/tasks/small"


def test_a_reader_answers_a_missing_owner_and_a_failure_in_its_own_words(stores, monkeypatch):
    monkeypatch.setattr(page_readers, "_stores", (TaskStore(stores), NodeStore(stores), ResourceStore(stores)))
    asked = {"endpoint": "https://a.batch", "link_base": "https://a.batch/x", "query": {"api-version": "2025-06-01"}}
    # tasks of a job that does not exist, of a pool's key, nodes of a job's key: no owner
    for collection, key in (("tasks", ACCOUNT + "/jobs/nope"), ("tasks", ACCOUNT + "/pools/p00000"),
                            ("nodes", ACCOUNT + "/jobs/j00000")):
        request = page_readers.PageRequest(collection, key, key.rsplit("/", 1)[1], **asked)
        assert page_readers.read_page(request) is None
        assert page_readers._answer(pickle.dumps(request)) == page_readers.NO_OWNER
    # a failure in the reader comes back to the service as the same error, code and details
    bad = page_readers.PageRequest("tasks", ACCOUNT + "/jobs/j00000", "j00000", "https://a.batch", "https://a.batch/x",
                                   {"api-version": "2025-06-01", "$filter": "state eq"})
    answer = page_readers._answer(pickle.dumps(bad))
    assert answer[:1] == page_readers.FAILED
    error = page_readers._unpickled(answer[1:])
    assert isinstance(error, InvalidInput) and error.code == "InvalidQueryParameterValue" and error.details
    # one that would not come back whole comes back as a RuntimeError carrying its traceback
    try:
        raise ValueError(lambda: 0)
    except ValueError as exc:
        failure = exc
    back = page_readers._unpickled(page_readers._pickled(failure))
    assert isinstance(back, RuntimeError) and "Traceback" in str(back) and "ValueError" in str(back)


def test_jobs_come_in_the_order_of_their_lower_cased_ids(stores):
    # the order the service listed them in when it sorted them in memory: '-' < digits < '_' < letters
    account = "/subscriptions/s/resourcegroups/g/providers/microsoft.batch/batchaccounts/order"
    ids = ["B_2", "a-1", "A_1", "b-10", "b_1", "Z", "0x", "a1"]
    resources = ResourceStore(stores)
    for job_id in ids:
        resources.put(Resource(f"{account}/jobs/{job_id}", JOB_TYPE, "s", "g", job_id, {"id": job_id}))
    listed = [r.name for r in resources.in_key_order(f"{account}/jobs/", JOB_TYPE, None, 3)]
    assert listed == sorted(ids, key=str.lower) == ["0x", "a-1", "a1", "A_1", "b-10", "b_1", "B_2", "Z"]


def test_an_account_is_found_by_name_reading_its_row_only(tmp_path):
    """Every data-plane request looks its account up by name: one row read and decoded,
    not every account's, in any case of the name (Azure's account names are case-blind)."""
    from batchyard.services.batch.accounts import ACCOUNT_TYPE, BatchAccounts

    db = Database(tmp_path / "batchyard.db")
    try:
        with db.transaction():
            for i in range(50):
                name, group = f"acct{i:02}", f"g{i % 3}"
                account_id = f"/subscriptions/s/resourceGroups/{group}/providers/Microsoft.Batch/batchAccounts/{name}"
                ResourceStore(db).put(Resource(account_id, ACCOUNT_TYPE, "s", group, name, {"name": name}))
        recorded = Recorded(db)
        accounts = BatchAccounts(ResourceStore(recorded), groups=None, box=None)
        recorded.queries.clear()  # the start's look for a delete a restart cut short reads each once
        assert accounts.by_name("ACCT07").name == "acct07"
        assert accounts.by_name("acct49").id.endswith("/g1/providers/Microsoft.Batch/batchAccounts/acct49")
        assert accounts.by_name("acct50") is None
        assert [rows for _, _, rows in recorded.queries] == [1, 1, 0]
    finally:
        db.close()


def test_an_application_is_found_by_name_reading_its_row_only(tmp_path):
    """A pool's or task's application reference, and Get Application on the data plane,
    read the one application they name, not every application of the account: in any case
    of the name, and never a package taken for an application."""
    from batchyard.services.batch.accounts import ACCOUNT_TYPE, BatchAccounts
    from batchyard.services.batch.applications import APPLICATION_TYPE, PACKAGE_TYPE, Applications
    from batchyard.services.errors import NotFound

    account_id = "/subscriptions/s/resourceGroups/g/providers/Microsoft.Batch/batchAccounts/acct"
    db = Database(tmp_path / "batchyard.db")
    try:
        with db.transaction():
            store = ResourceStore(db)
            store.put(Resource(account_id, ACCOUNT_TYPE, "s", "g", "acct", {"name": "acct"}))
            for i in range(50):
                store.put(Resource(f"{account_id}/applications/app{i:02}", APPLICATION_TYPE, "s", "g",
                                   f"app{i:02}", {"name": f"app{i:02}", "properties": {}}))
            store.put(Resource(f"{account_id}/applications/app07/versions/1", PACKAGE_TYPE, "s", "g", "1",
                               {"name": "1", "properties": {"state": "Active"}},
                               {"container": "c", "blob": "b"}))
        recorded = Recorded(db)
        apps = Applications(ResourceStore(recorded), BatchAccounts(ResourceStore(recorded), groups=None, box=None),
                            auto_storage=None, scratch=tmp_path)
        assert apps.resolve("acct", "APP07", "1").version == "1"
        assert max(rows for _, _, rows in recorded.queries) == 1
        assert apps.data_plane_get("acct", "App07") == {"id": "app07", "displayName": "app07", "versions": ["1"]}
        assert max(rows for _, _, rows in recorded.queries) == 1
        for missing in ("app50", "app07/versions/1"):
            with pytest.raises(NotFound):
                apps.resolve("acct", missing, "1")
            with pytest.raises(NotFound):
                apps.data_plane_get("acct", missing)
    finally:
        db.close()


def test_the_jobs_in_motion_are_read_through_the_index_of_their_pools(tmp_path):
    """Every refill of freed slots asks for the jobs in motion on the pools it freed that
    hold a task to start (Jobs.jobs_in_motion(pools, runnable=True)): read through the
    index of their pools (migration 11), never every job's body, so the jobs a service
    keeps once they ended cost a refill nothing (2,000 completed jobs doubled the service's
    CPU a task when each refill read them all). The index's states are MOVING_STATES."""
    from batchyard.services.batch.jobs import MOVING_STATES, Jobs

    states = ("active", "disabling", "disabled", "enabling", "terminating", "completed", "deleting")
    pool_a, pool_b = ACCOUNT + "/pools/a", ACCOUNT + "/pools/b"
    db = Database(tmp_path / "batchyard.db")
    try:
        store, tasks = ResourceStore(db), TaskStore(db)
        with db.transaction():
            for i in range(2000):
                store.put(Resource(f"{ACCOUNT}/jobs/old{i:04}", JOB_TYPE, "s", "g", f"old{i:04}",
                                   {"id": f"old{i:04}", "state": "completed"}, {"pool_key": pool_a}))
            for state in states:
                for pool in (pool_a, pool_b):
                    name = f"{state}-{pool[-1]}"
                    store.put(Resource(f"{ACCOUNT}/jobs/{name}", JOB_TYPE, "s", "g", name, {"id": name, "state": state},
                                       {"pool_key": pool}))
            store.put(Resource(f"{ACCOUNT}/jobs/no-pool", JOB_TYPE, "s", "g", "no-pool", {"id": "no-pool", "state": "active"},
                               {"pool_key": None}))
            store.put(Resource(f"{ACCOUNT}/pools/active", POOL_TYPE, "s", "g", "active", {"id": "active", "state": "active"},
                               {"pool_key": pool_a}))
            ready, waiting = Task(f"{ACCOUNT}/jobs/active-a", {"id": "r", "state": "active"}), \
                Task(f"{ACCOUNT}/jobs/active-b", {"id": "w", "state": "active"})
            ready.ready, waiting.ready = True, False
            terminating = Task(f"{ACCOUNT}/jobs/terminating-a", {"id": "t", "state": "active"})
            terminating.ready = True
            tasks.insert([ready, waiting, terminating])

        def names(jobs) -> set[str]:
            return {job.name for job in jobs}

        jobs = Jobs(store, tasks, pools=SimpleNamespace(lock=threading.RLock()))  # only its lock is taken
        assert names(jobs.jobs_in_motion()) == {f"{s}-{p}" for s in MOVING_STATES for p in "ab"} | {"no-pool"}
        assert names(jobs.jobs_in_motion([pool_a.upper()])) == {f"{s}-a" for s in MOVING_STATES}
        assert names(jobs.jobs_in_motion([pool_a, pool_b], runnable=True)) == {"active-a"}

        recorded = Recorded(db)
        ResourceStore(recorded).moving_jobs([pool_a], runnable=True)
        ResourceStore(recorded).moving_jobs()
        for sql, params, _ in recorded.queries:
            plan = " ".join(row[3] for row in db.query(f"EXPLAIN QUERY PLAN {sql}", params))
            assert "USING INDEX resources_moving_jobs" in plan and "SCAN" not in plan, plan
        sql, params, _ = recorded.queries[0]
        plan = " ".join(row[3] for row in db.query(f"EXPLAIN QUERY PLAN {sql}", params))
        assert "INDEX batch_tasks_runnable" in plan, plan  # a job's tasks to start: see the next test
    finally:
        db.close()


def test_the_runnable_index_holds_the_runnable_tasks_only_and_the_scheduler_reads_it(tmp_path):
    """Every refill asks a job for its runnable tasks (waiting, their dependencies met) in
    the order they were added: read through an index of those tasks alone (migration 12),
    which a task leaves when it starts, so its later writes (ended, completed) no longer
    move it within the index; and in that order, with no sort."""
    db = Database(tmp_path / "batchyard.db")
    try:
        tasks, job = TaskStore(db), ACCOUNT + "/jobs/j"
        made = [Task(job, {"id": f"T{i:04}", "state": STATES[i % 3]}) for i in range(2000)]
        for task in made[::7]:
            task.ready = False  # dependencies not met
        for task in made[::10]:  # multi-instance tasks: autoscale counts each once per instance (migration 13)
            task.body["multiInstanceSettings"] = {"numberOfInstances": 3}
        tasks.insert(made)
        runnable = [t for t in made if t.state == "active" and t.ready]
        indexed = db.query("SELECT ncell FROM dbstat('main', 1) WHERE name = 'batch_tasks_runnable'")[0][0]
        assert indexed == len(runnable) < 600
        assert [t.id for t in tasks.runnable(job, 1000)] == [t.id for t in runnable]
        multi = [t for t in runnable if "multiInstanceSettings" in t.body]
        indexed = db.query("SELECT ncell FROM dbstat('main', 1) WHERE name = 'batch_tasks_runnable_instances'")[0][0]
        assert indexed == len(multi) > 0
        assert tasks.count_runnable_instances(job) == len(runnable) + 2 * len(multi) and tasks.any_runnable(job)
        recorded = Recorded(db)
        TaskStore(recorded).runnable(job, 10)
        TaskStore(recorded).count_runnable_instances(job)
        TaskStore(recorded).any_runnable(job)
        for sql, params, _ in recorded.queries:
            plan = " ".join(row[3] for row in db.query(f"EXPLAIN QUERY PLAN {sql}", params))
            assert "INDEX batch_tasks_runnable" in plan and "SCAN" not in plan and "TEMP B-TREE" not in plan, plan
    finally:
        db.close()
