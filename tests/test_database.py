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


def test_a_statement_journal_stays_in_memory(tmp_path):
    """A statement that fires a trigger keeps a statement journal, which SQLite spills to a
    temporary file past 64 KiB: a file made and unlinked on the host disk, one for every few
    dozen task updates of the scheduler. On an ext4 without a journal, each unlinked file is
    an inode that every new file of the next minutes looks up and skips."""
    db = Database(tmp_path / "state.db")
    with db.transaction() as conn:
        conn.execute("CREATE TABLE big (id INTEGER PRIMARY KEY, body BLOB)")
        conn.execute("CREATE TABLE changes (n INTEGER)")
        conn.execute("CREATE TRIGGER counted AFTER UPDATE ON big BEGIN INSERT INTO changes VALUES (1); END")
        conn.execute("INSERT INTO big VALUES (1, zeroblob(300000))")
    with db.transaction() as conn:
        conn.execute("UPDATE big SET body = zeroblob(300001) WHERE id = 1")
        conn.execute("UPDATE big SET body = zeroblob(300002) WHERE id = 1")
        assert _temporary_files() == []
    assert db.query("SELECT count(*) AS n FROM changes")[0]["n"] == 2
