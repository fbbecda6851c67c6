"""The service's SQLite connections (store/db.py)."""

import os
import threading

from batchyard.store.db import Database


def _temporary_files() -> list[str]:
    """SQLite's temporary files this process holds open: it unlinks each as it opens it
    (names etilqs_*, in SQLITE_TMPDIR, /var/tmp or /tmp)."""
    names = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if "etilqs_" in target:
            names.append(target)
    return names


def test_statement_journals_stay_in_memory_only_where_asked(tmp_path):
    """A statement that fires a trigger keeps a statement journal, which SQLite spills to an
    unlinked temporary file past 64 KiB. The refiller's row-sized writes keep theirs in
    memory (no file made and unlinked on the host disk every few dozen task updates); every
    other statement spills, so a job's delete over 100,000 tasks does not hold its pages in RAM."""
    db = Database(tmp_path / "state.db")
    try:
        with db.transaction() as conn:
            conn.execute("CREATE TABLE big (id INTEGER PRIMARY KEY, body BLOB)")
            conn.execute("CREATE TABLE changes (n INTEGER)")
            conn.execute("CREATE TRIGGER counted AFTER UPDATE ON big BEGIN INSERT INTO changes VALUES (1); END")
            conn.execute("INSERT INTO big VALUES (1, zeroblob(300000))")
        with db.journals_in_memory(), db.transaction() as conn:
            conn.execute("UPDATE big SET body = zeroblob(300001) WHERE id = 1")
            assert _temporary_files() == []
        with db.transaction() as conn:
            conn.execute("UPDATE big SET body = zeroblob(300002) WHERE id = 1")
            assert len(_temporary_files()) == 1  # spilled, as SQLite does by default
        assert _temporary_files() == []
        assert db.query("SELECT count(*) AS n FROM changes")[0]["n"] == 2
    finally:
        db.close()


def test_the_task_store_keeps_its_statement_journals_in_memory(tmp_path):
    """Task inserts and updates are row-sized statements that fire the counts' triggers:
    their journals stay in memory, where a collection of 100 tasks spilled one to the host
    disk about once, which then took every later statement's pages. Here a trigger makes
    each of them rewrite a 300 kB row as well, so each journal passes 64 KiB."""
    from batchyard.store.batch_tasks import Task, TaskStore

    job_key = "/subscriptions/s/resourcegroups/g/providers/microsoft.batch/batchaccounts/a/jobs/j"
    db = Database(tmp_path / "state.db")
    store = TaskStore(db)
    seen: list[list[str]] = []  # the temporary files open as each statement ended
    try:
        db.query("SELECT 1")  # this thread's connection, to register the probe on
        db._conn.create_function("probe", 0, lambda: seen.append(_temporary_files()))
        with db.transaction() as conn:
            conn.execute("CREATE TABLE ballast (id INTEGER PRIMARY KEY, body BLOB)")
            conn.execute("INSERT INTO ballast VALUES (1, zeroblob(300000))")
            for event in ("INSERT", "UPDATE"):
                conn.execute(f"CREATE TRIGGER probe_{event} AFTER {event} ON batch_tasks BEGIN "
                             "UPDATE ballast SET body = zeroblob(300000 + NEW.seq); SELECT probe(); END")
        store.insert([Task(job_key, {"id": f"t{i}", "state": "active"}) for i in range(3)])
        assert seen == [[], [], []]
        tasks = store.get_many(job_key, ["t0", "t1"])
        seen.clear()
        store.update(list(tasks.values()))
        assert seen == [[], []]
        seen.clear()
        with db.transaction() as conn:  # the same insert outside the store spills: the probe sees it
            conn.execute("INSERT INTO batch_tasks (job_key, task_key, state, ready, slots, body, internal) "
                         "VALUES (?, 't9', 'active', 0, 1, '{}', '{}')", (job_key,))
        assert len(seen) == 1 and len(seen[0]) == 1
        assert _temporary_files() == []
    finally:
        db.close()


def test_a_setting_block_within_another_leaves_the_outer_setting_in_place(tmp_path):
    """The refiller keeps its journals in memory for the whole refill and calls the task
    store, which asks for the same for its own writes: the store's block, ending, must not
    put the refiller's later statements back on the host disk (it did: each block ended by
    setting the default). The same for synchronous=NORMAL."""
    db = Database(tmp_path / "state.db")

    def setting(name: str) -> int:
        return db.query(f"PRAGMA {name}")[0][0]

    try:
        with db.journals_in_memory(), db.without_sync():
            with db.journals_in_memory(), db.without_sync():
                pass
            assert (setting("temp_store"), setting("synchronous")) == (2, 1)  # MEMORY, NORMAL
        assert (setting("temp_store"), setting("synchronous")) == (0, 2)  # DEFAULT, FULL
    finally:
        db.close()


def test_a_thread_that_only_keeps_books_is_set_for_it_once(tmp_path):
    """The refiller's connection is set for bookkeeping (no fsync of its own, journals in
    memory) once, when it starts: not set and set back for every refill, four statements
    each time. The blocks the task store asks for inside change nothing, and other threads'
    connections keep their durable writes."""
    db = Database(tmp_path / "state.db")
    seen: dict[str, tuple] = {}

    def setting(name: str) -> int:
        return db.query(f"PRAGMA {name}")[0][0]

    def refiller() -> None:
        db.keep_books_only()
        with db.journals_in_memory(), db.without_sync():
            pass
        seen["refiller"] = (setting("temp_store"), setting("synchronous"))

    try:
        thread = threading.Thread(target=refiller)
        thread.start()
        thread.join()
        assert seen["refiller"] == (2, 1)  # MEMORY, NORMAL, after the store's blocks ended
        assert (setting("temp_store"), setting("synchronous")) == (0, 2)  # this thread's: DEFAULT, FULL
    finally:
        db.close()
