"""One SQLite database per data directory, with forward-only schema migrations.

One connection per thread, in WAL mode: a read never waits for a write (it reads the last
committed state), and a write never waits for a read. Writers take turns through one lock
(SQLite has one writer at a time anyway): a transaction is atomic with respect to the
server's threads, and a write made inside it is seen by the reads of its own thread only.
So the scheduler's writes (and their fsyncs) never hold up the API's lists, and the API's
lists never hold up the scheduler.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from ..private_files import PRIVATE_FILE

MIGRATIONS: list[str] = [
    # 1: ARM resources of every type, keyed by their lower-cased resource id.
    """
    CREATE TABLE resources (
        key TEXT PRIMARY KEY,
        id TEXT NOT NULL,
        type TEXT NOT NULL,
        subscription TEXT NOT NULL,
        resource_group TEXT,
        name TEXT NOT NULL,
        body TEXT NOT NULL,
        internal TEXT NOT NULL DEFAULT '{}',
        created REAL NOT NULL
    );
    CREATE INDEX resources_scope ON resources (type, subscription, resource_group);
    CREATE TABLE principals (
        client_id TEXT PRIMARY KEY,
        tenant_id TEXT NOT NULL,
        object_id TEXT NOT NULL,
        display_name TEXT NOT NULL,
        secret_sha256 TEXT NOT NULL
    );
    CREATE TABLE operations (
        id TEXT PRIMARY KEY,
        status TEXT NOT NULL,
        result TEXT,
        error TEXT,
        start_time TEXT NOT NULL,
        end_time TEXT
    );
    CREATE TABLE settings (
        name TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    """,
    # 2: compute nodes of Batch pools (pools themselves are rows of `resources`).
    """
    CREATE TABLE batch_nodes (
        pool_key TEXT NOT NULL,
        node_id TEXT NOT NULL,
        body TEXT NOT NULL,
        internal TEXT NOT NULL,
        PRIMARY KEY (pool_key, node_id)
    );
    """,
    # 3: tasks of Batch jobs (jobs themselves are rows of `resources`). `state`, `ready`,
    # `result`, `slots` and `expires` (when the task directory's retention ends) are columns
    # so the scheduler and the counts never read every body.
    """
    CREATE TABLE batch_tasks (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        job_key TEXT NOT NULL,
        task_key TEXT NOT NULL,
        state TEXT NOT NULL,
        ready INTEGER NOT NULL,
        result TEXT,
        slots INTEGER NOT NULL,
        expires REAL,
        body TEXT NOT NULL,
        internal TEXT NOT NULL,
        UNIQUE (job_key, task_key)
    );
    CREATE INDEX batch_tasks_runnable ON batch_tasks (job_key, state, ready, seq);
    CREATE INDEX batch_tasks_expiry ON batch_tasks (expires) WHERE expires IS NOT NULL;
    """,
    # 4: task lists filtered on state page through this index in id order.
    """
    CREATE INDEX batch_tasks_by_state ON batch_tasks (job_key, state, task_key);
    """,
    # 5: principals' secrets are salted scrypt hashes now (services/secrets.py); SHA-256
    # values of older data directories are rehashed at their next sign-in.
    """
    ALTER TABLE principals RENAME COLUMN secret_sha256 TO secret_hash;
    """,
    # 6: several client secrets per principal, each with its own expiry (Entra's
    # passwordCredentials); role assignments (services/authorization.py).
    """
    CREATE TABLE principal_secrets (
        key_id TEXT PRIMARY KEY,
        client_id TEXT NOT NULL REFERENCES principals (client_id) ON DELETE CASCADE,
        secret_hash TEXT NOT NULL,
        hint TEXT NOT NULL,
        display_name TEXT NOT NULL,
        start_time TEXT NOT NULL,
        end_time TEXT
    );
    CREATE INDEX principal_secrets_client ON principal_secrets (client_id);
    INSERT INTO principal_secrets (key_id, client_id, secret_hash, hint, display_name, start_time, end_time)
        SELECT lower(hex(randomblob(16))), client_id, secret_hash, '', '', strftime('%Y-%m-%dT%H:%M:%SZ', 'now'), NULL
        FROM principals;
    ALTER TABLE principals DROP COLUMN secret_hash;
    CREATE TABLE role_assignments (
        name TEXT PRIMARY KEY,
        scope TEXT NOT NULL,
        scope_key TEXT NOT NULL,
        role_definition TEXT NOT NULL,
        principal_id TEXT NOT NULL,
        principal_type TEXT NOT NULL,
        description TEXT,
        created_on TEXT NOT NULL,
        created_by TEXT
    );
    CREATE INDEX role_assignments_principal ON role_assignments (principal_id);
    """,
    # 7: who started a long-running operation: they may poll it (services/operations.py).
    """
    ALTER TABLE operations ADD COLUMN owner TEXT;
    """,
    # 8: allocation costs what changed, not what the pools hold (store/batch_nodes.py).
    # `work` is what the allocator must do with a node; the partial index holds only the
    # nodes whose work has not been handed to a worker yet (`internal.dispatched`), so a
    # pass reads those alone. Node counts per (pool, dedicated, state) are kept by triggers
    # instead of counted per pass and per request. Slots are indexed, so a pool that grows
    # finds its next free slot without reading its nodes. Retired nodes' lifetimes (usage
    # metrics) get a table of their own: appended to the pool's body, every removal rewrote
    # all earlier ones.
    """
    ALTER TABLE batch_nodes ADD COLUMN work TEXT GENERATED ALWAYS AS (
        CASE WHEN json_extract(body, '$.state') = 'leavingpool' THEN 'remove'
             WHEN json_extract(internal, '$.pending') IS NOT NULL THEN json_extract(internal, '$.pending')
             WHEN json_extract(body, '$.state') = 'creating' THEN 'provision' END) VIRTUAL;
    CREATE INDEX batch_nodes_undispatched ON batch_nodes (work)
        WHERE work IS NOT NULL AND work IS NOT json_extract(internal, '$.dispatched');
    CREATE INDEX batch_nodes_slots ON batch_nodes (pool_key, json_extract(internal, '$.slot'));
    CREATE TABLE batch_node_counts (
        pool_key TEXT NOT NULL,
        dedicated INTEGER NOT NULL,
        state TEXT NOT NULL,
        n INTEGER NOT NULL,
        PRIMARY KEY (pool_key, dedicated, state)
    ) WITHOUT ROWID;
    INSERT INTO batch_node_counts
        SELECT pool_key, json_extract(body, '$.isDedicated'), json_extract(body, '$.state'), count(*)
        FROM batch_nodes GROUP BY 1, 2, 3;
    CREATE TRIGGER batch_nodes_counted AFTER INSERT ON batch_nodes BEGIN
        INSERT INTO batch_node_counts
            VALUES (NEW.pool_key, json_extract(NEW.body, '$.isDedicated'), json_extract(NEW.body, '$.state'), 1)
            ON CONFLICT (pool_key, dedicated, state) DO UPDATE SET n = n + 1;
    END;
    CREATE TRIGGER batch_nodes_uncounted AFTER DELETE ON batch_nodes BEGIN
        UPDATE batch_node_counts SET n = n - 1 WHERE pool_key = OLD.pool_key
            AND dedicated = json_extract(OLD.body, '$.isDedicated') AND state = json_extract(OLD.body, '$.state');
        DELETE FROM batch_node_counts WHERE pool_key = OLD.pool_key
            AND dedicated = json_extract(OLD.body, '$.isDedicated') AND state = json_extract(OLD.body, '$.state')
            AND n = 0;
    END;
    CREATE TRIGGER batch_nodes_recounted AFTER UPDATE OF body ON batch_nodes
        WHEN json_extract(OLD.body, '$.state') IS NOT json_extract(NEW.body, '$.state')
          OR json_extract(OLD.body, '$.isDedicated') IS NOT json_extract(NEW.body, '$.isDedicated') BEGIN
        UPDATE batch_node_counts SET n = n - 1 WHERE pool_key = OLD.pool_key
            AND dedicated = json_extract(OLD.body, '$.isDedicated') AND state = json_extract(OLD.body, '$.state');
        DELETE FROM batch_node_counts WHERE pool_key = OLD.pool_key
            AND dedicated = json_extract(OLD.body, '$.isDedicated') AND state = json_extract(OLD.body, '$.state')
            AND n = 0;
        INSERT INTO batch_node_counts
            VALUES (NEW.pool_key, json_extract(NEW.body, '$.isDedicated'), json_extract(NEW.body, '$.state'), 1)
            ON CONFLICT (pool_key, dedicated, state) DO UPDATE SET n = n + 1;
    END;
    CREATE TABLE batch_retired_nodes (
        pool_key TEXT NOT NULL,
        allocated TEXT NOT NULL,
        removed TEXT NOT NULL
    );
    CREATE INDEX batch_retired_nodes_pool ON batch_retired_nodes (pool_key);
    INSERT INTO batch_retired_nodes (pool_key, allocated, removed)
        SELECT r.key, json_extract(j.value, '$[0]'), json_extract(j.value, '$[1]')
        FROM resources AS r, json_each(r.internal, '$.retired') AS j;
    UPDATE resources SET internal = json_remove(internal, '$.retired')
        WHERE json_extract(internal, '$.retired') IS NOT NULL;
    """,
    # 9: text the json module must read (store/codec.py) carries its mark: text written
    # before the mark that may hold an integer past 64 bits (19 digits in a row) or a lone
    # surrogate (an escape orjson refuses) gets it.
    "".join(f"""
    UPDATE {table} SET {column} = ' ' || {column}
        WHERE ({column} GLOB '*{"[0-9]" * 19}*' OR {column} GLOB '*\\ud[89a-f]*') AND {column} NOT GLOB ' *';"""
            for table in ("resources", "batch_nodes", "batch_tasks") for column in ("body", "internal")),
    # 10: a job's task counts (Get Task Counts, onAllTasksComplete, autoscale) are kept as
    # tasks change, not counted per request: a count costs the same in a job of 100,000
    # tasks as in one of ten. result is '' for none (a key column).
    """
    CREATE TABLE batch_task_counts (
        job_key TEXT NOT NULL,
        state TEXT NOT NULL,
        result TEXT NOT NULL,
        n INTEGER NOT NULL,
        slots INTEGER NOT NULL,
        PRIMARY KEY (job_key, state, result)
    ) WITHOUT ROWID;
    INSERT INTO batch_task_counts
        SELECT job_key, state, coalesce(result, ''), count(*), sum(slots) FROM batch_tasks GROUP BY 1, 2, 3;
    CREATE TRIGGER batch_tasks_counted AFTER INSERT ON batch_tasks BEGIN
        INSERT INTO batch_task_counts VALUES (NEW.job_key, NEW.state, coalesce(NEW.result, ''), 1, NEW.slots)
            ON CONFLICT (job_key, state, result) DO UPDATE SET n = n + 1, slots = slots + excluded.slots;
    END;
    CREATE TRIGGER batch_tasks_uncounted AFTER DELETE ON batch_tasks BEGIN
        UPDATE batch_task_counts SET n = n - 1, slots = slots - OLD.slots
            WHERE job_key = OLD.job_key AND state = OLD.state AND result = coalesce(OLD.result, '');
        DELETE FROM batch_task_counts
            WHERE job_key = OLD.job_key AND state = OLD.state AND result = coalesce(OLD.result, '') AND n = 0;
    END;
    CREATE TRIGGER batch_tasks_recounted AFTER UPDATE OF state, result, slots ON batch_tasks
        WHEN OLD.state IS NOT NEW.state OR OLD.result IS NOT NEW.result OR OLD.slots IS NOT NEW.slots BEGIN
        UPDATE batch_task_counts SET n = n - 1, slots = slots - OLD.slots
            WHERE job_key = OLD.job_key AND state = OLD.state AND result = coalesce(OLD.result, '');
        DELETE FROM batch_task_counts
            WHERE job_key = OLD.job_key AND state = OLD.state AND result = coalesce(OLD.result, '') AND n = 0;
        INSERT INTO batch_task_counts VALUES (NEW.job_key, NEW.state, coalesce(NEW.result, ''), 1, NEW.slots)
            ON CONFLICT (job_key, state, result) DO UPDATE SET n = n + 1, slots = slots + excluded.slots;
    END;
    """,
    # 11: the jobs the scheduler has work for (services/batch/jobs.py's MOVING_STATES), by
    # their pool, through an index: every refill of freed slots asks for them, and read from
    # every job's body they cost each refill more with each job the service keeps, ended ones
    # included (2,000 completed jobs doubled the service's CPU a task). '' for a job whose
    # pool is not known yet.
    """
    ALTER TABLE resources ADD COLUMN moving_job_pool TEXT GENERATED ALWAYS AS (
        CASE WHEN type = 'microsoft.batch/batchaccounts/jobs' AND json_extract(body, '$.state')
            IN ('active', 'terminating', 'disabling', 'enabling', 'deleting')
        THEN coalesce(json_extract(internal, '$.pool_key'), '') END) VIRTUAL;
    CREATE INDEX resources_moving_jobs ON resources (moving_job_pool) WHERE moving_job_pool IS NOT NULL;
    """,
    # 12: the runnable index holds the runnable tasks only (batch_tasks.RUNNABLE, in seq
    # order), not every task by state: a task leaves it when it starts, and its later writes
    # (ended, retried while running, completed) no longer move it from one place in the
    # index to another. The lists by state have their own index (4).
    """
    DROP INDEX batch_tasks_runnable;
    CREATE INDEX batch_tasks_runnable ON batch_tasks (job_key, seq) WHERE state = 'active' AND ready = 1;
    """,
    # 13: a multi-instance task's numberOfInstances (NULL for any other task; written when
    # the task is added, as its multiInstanceSettings never change). Autoscale's
    # $ActiveTasks counts a runnable multi-instance task once per instance, as Azure does,
    # from an index of the runnable ones (few: not every runnable body read); and a pool
    # that cannot run them (no inter-node communication) is offered the job's other tasks.
    """
    ALTER TABLE batch_tasks ADD COLUMN instances INTEGER;
    UPDATE batch_tasks SET instances = json_extract(body, '$.multiInstanceSettings.numberOfInstances')
        WHERE json_type(body, '$.multiInstanceSettings') = 'object';
    CREATE INDEX batch_tasks_runnable_instances ON batch_tasks (job_key, instances)
        WHERE state = 'active' AND ready = 1 AND instances IS NOT NULL;
    """,
]


class Database:
    def __init__(self, path: Path):
        self.path = path
        # SQLite gives the -wal and -shm files the database file's mode.
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, PRIVATE_FILE))
        self._write_lock = threading.RLock()
        self._local = threading.local()
        self._connections: dict[threading.Thread, sqlite3.Connection] = {}
        self._connections_lock = threading.Lock()
        self._closed = False
        self._conn.execute("PRAGMA journal_mode=WAL")  # kept in the file: once is enough
        self._migrate()

    @property
    def _conn(self) -> sqlite3.Connection:
        """This thread's connection, opened on its first use."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
            self._local.settings = {"synchronous": "FULL", "temp_store": "DEFAULT"}  # as _connect made it
        return conn

    def _connect(self) -> sqlite3.Connection:
        with self._connections_lock:
            if self._closed:
                raise sqlite3.ProgrammingError("the database is closed")
            # the connections of threads that have ended (idle workers leave the pool)
            for thread in [t for t in self._connections if not t.is_alive()]:
                self._connections.pop(thread).close()
            # check_same_thread off only so that these closes and close() may close it
            conn = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
            self._connections[threading.current_thread()] = conn
        conn.row_factory = sqlite3.Row
        # FULL: a write the API has acknowledged survives a power cut or a kernel crash, not
        # only a killed process (NORMAL in WAL mode may lose the last commits then). It costs
        # an fsync per transaction; the scheduler batches its writes per pass, so it is not felt.
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        # Deleted and overwritten rows are zeroed, so a replaced secret leaves no copy behind.
        conn.execute("PRAGMA secure_delete=ON")
        # temp_store stays FILE here: a job's delete (one statement over up to 100,000 tasks,
        # in a transaction) keeps every page it touches in its statement journal, which
        # SQLite spills past 64 KiB to an unlinked file. See journals_in_memory.
        return conn

    def _migrate(self) -> None:
        with self.transaction() as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                for statement in _statements(script):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {number}")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Everything inside commits together or not at all."""
        conn = self._conn
        with self._write_lock:
            if conn.in_transaction:  # nested: join the outer transaction
                yield conn
                return
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @contextmanager
    def without_sync(self) -> Iterator[None]:
        """This thread's commits inside skip their own fsync (synchronous=NORMAL): for the
        scheduler's bookkeeping (tasks started, exits recorded, nodes' counts), which no
        client's request waits on, and which would otherwise cost an fsync per refill of
        freed slots. A process that dies loses none of them (at COMMIT the WAL is the
        kernel's); a power cut may lose the last ones, with the machines whose tasks they
        recorded, which the next start finds gone (reconciliation.py). Any later
        synchronous commit (every write the API acknowledges) makes the WAL durable up to
        itself, so no acknowledged write is on disk without the bookkeeping made before it."""
        with self._pragma_within("synchronous", "NORMAL"):
            yield

    @contextmanager
    def journals_in_memory(self) -> Iterator[None]:
        """This thread's statements inside keep their statement journals in memory: for
        blocks of row-sized writes only (the refiller's, and the task store's inserts and
        updates, one row a statement). A statement that fires a trigger (every task insert
        and update: the counts) keeps one, and past 64 KiB SQLite spills it to a file made
        and unlinked at once in /var/tmp, which then takes every later statement's journal
        until the transaction ends: a collection of 100 tasks spilled about once, and the
        service wrote 60 kB a task (27 writes), 25 kB (10) with every task write's journal
        in memory. On an ext4 without a journal, every unlinked file is also an inode that
        the new files of the next minutes look up and skip. SQLite empties a journal kept in
        memory after each statement, so a block of row-sized statements holds one
        statement's pages at most."""
        with self._pragma_within("temp_store", "MEMORY"):
            yield

    def keep_books_only(self) -> None:
        """This thread's connection, from now on, as inside without_sync and
        journals_in_memory: for a thread that only ever keeps the scheduler's books (the
        refiller), which would otherwise set both and set them back (four statements) for
        every refill of freed slots."""
        self._set_pragma("synchronous", "NORMAL")
        self._set_pragma("temp_store", "MEMORY")

    @contextmanager
    def _pragma_within(self, name: str, inside: str) -> Iterator[None]:
        """This thread's connection with PRAGMA name=inside for the block, then as it was
        before: a block within another that set the same leaves it to the outer one, and
        costs no statement (the task store's writes run within the pass's block, and on the
        refiller's connection, set once by keep_books_only). A block
        inside an open transaction changes nothing: the outer block's setting holds."""
        conn = self._conn  # made on first use, with the record of its settings
        before = self._local.settings[name]
        if conn.in_transaction or before == inside:
            yield
            return
        self._set_pragma(name, inside)
        try:
            yield
        finally:
            self._set_pragma(name, before)

    def _set_pragma(self, name: str, value: str) -> None:
        """This thread's connection's setting, and the record of it the blocks above read."""
        self._conn.execute(f"PRAGMA {name}={value}")
        self._local.settings[name] = value

    def query(self, sql: str, params: tuple | dict = ()) -> list[sqlite3.Row]:
        """The last committed state, or this thread's own transaction's."""
        return self._conn.execute(sql, params).fetchall()

    def execute(self, sql: str, params: tuple | dict = ()) -> int:
        with self.transaction() as conn:
            return conn.execute(sql, params).rowcount

    def get_setting(self, name: str) -> Any:
        rows = self.query("SELECT value FROM settings WHERE name = ?", (name,))
        return json.loads(rows[0]["value"]) if rows else None

    def set_setting(self, name: str, value: Any) -> None:
        self.execute(
            "INSERT INTO settings (name, value) VALUES (?, ?) "
            "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            (name, json.dumps(value)),
        )

    def next_number(self, name: str) -> int:
        """1, 2, 3, ...: a counter kept in `settings`. A number is handed out once; in a
        transaction of a connection that does not sync (the refiller's), a crash may take it
        back, but only with the rest of that transaction, the record that kept it."""
        with self.transaction():
            number = (self.get_setting(name) or 0) + 1
            self.set_setting(name, number)
        return number

    def compact(self) -> None:
        """Rewrites the file and empties the write-ahead log: nothing of old rows stays in
        free pages (used once plaintext secrets have been sealed)."""
        with self._write_lock:
            self._conn.execute("VACUUM")
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def close(self) -> None:
        with self._write_lock, self._connections_lock:
            self._closed = True
            for conn in self._connections.values():
                conn.close()
            self._connections.clear()


class ReadOnlyDatabase:
    """The service's database as a process that only reads sees it (the list readers,
    api/batch/page_readers.py): one read-only connection. In WAL mode it reads the last
    commit while the service writes, neither waiting for the other."""

    def __init__(self, path: Path):
        self._conn = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True, isolation_level=None)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA query_only=ON")

    def query(self, sql: str, params: tuple | dict = ()) -> list[sqlite3.Row]:
        return self._conn.execute(sql, params).fetchall()

    def close(self) -> None:
        self._conn.close()


def _statements(script: str) -> list[str]:
    """A script's statements: split at the semicolons that end one (a trigger's body holds
    semicolons of its own)."""
    statements, pending = [], ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \n;"):
                statements.append(pending)
            pending = ""
    if pending.strip(" \n;"):
        raise ValueError(f"incomplete statement in a migration: {pending.strip()[:80]}")
    return statements
