"""The service's SQLite connections (store/db.py)."""

import os

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
