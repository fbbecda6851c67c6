"""The store's JSON codec (store/codec.py) reads back what the json module would have
written, for everything a body or record may hold. No server."""

from __future__ import annotations

import json

import pytest

from batchyard.store import codec


@pytest.mark.parametrize("value", [
    {"id": "t1", "state": "active", "n": 3, "f": 2.5, "ok": True, "none": None, "list": [1, "a", {"b": []}]},
    {"unicode": "naïve ✓ 任务", "escapes": "quote \" backslash \\ newline \n tab \t"},
    {1: "int key", 2.5: "float key", True: "bool key"},  # the json module writes keys as strings
    {"huge": 10 ** 30, "negative": -(10 ** 25)},  # past 64 bits: orjson refuses, the codec does not
])
def test_what_is_written_reads_back_as_the_json_module_would(value):
    text = codec.encode(value)
    assert isinstance(text, str)
    assert codec.decode(text) == json.loads(json.dumps(value))


def test_a_database_from_before_the_mark_reads_long_integers_exactly(tmp_path, monkeypatch):
    """Text written before the json module's mark (a body holding an integer past 64 bits)
    gets the mark when the database is opened, so it still reads back exactly; text
    without long runs of digits is left as it was."""
    import sqlite3

    from batchyard.store import db as store_db
    from batchyard.store.db import Database
    from batchyard.store.resources import ResourceStore

    path = tmp_path / "state.db"
    with monkeypatch.context() as patched:  # the schema as the release before the mark (migration 9) left it
        patched.setattr(store_db, "MIGRATIONS", store_db.MIGRATIONS[:8])
        Database(path).close()
    conn = sqlite3.connect(path)
    huge, plain = {"huge": 10 ** 30, "id": "a"}, {"n": 1}
    for key, body in (("/huge", huge), ("/plain", plain)):
        conn.execute("INSERT INTO resources (key, id, type, subscription, name, body, internal, created) "
                     "VALUES (?, ?, 't', 's', 'n', ?, '{}', 0)", (key, key, json.dumps(body)))
    conn.commit()
    conn.close()
    db = Database(path)
    try:
        store = ResourceStore(db)
        assert store.get("/huge").body == huge
        assert store.get("/plain").body == plain
        texts = dict(db.query("SELECT key, body FROM resources"))
        assert texts["/huge"].startswith(codec.JSON_MODULE_MARK) and texts["/plain"] == json.dumps(plain)
    finally:
        db.close()


def test_text_only_the_json_module_reads_keeps_its_mark_through_the_stores(tmp_path, monkeypatch):
    """A lone surrogate (which a client's JSON may carry) is written by the json module, as an
    integer past 64 bits is; a database from before the mark gets it for both; and a node
    record changed in SQL (json_set, when its work is handed to a worker) keeps it."""
    import sqlite3

    from batchyard.store import db as store_db
    from batchyard.store.batch_nodes import Node, NodeStore
    from batchyard.store.db import Database
    from batchyard.store.resources import ResourceStore

    surrogate = {"commandLine": "echo \udcff"}
    assert codec.decode(codec.encode(surrogate)) == surrogate
    path = tmp_path / "state.db"
    with monkeypatch.context() as patched:
        patched.setattr(store_db, "MIGRATIONS", store_db.MIGRATIONS[:8])
        Database(path).close()
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO resources (key, id, type, subscription, name, body, internal, created) "
                 "VALUES ('/s', '/s', 't', 's', 'n', ?, '{}', 0)", (json.dumps(surrogate),))
    conn.commit()
    conn.close()
    db = Database(path)
    try:
        assert ResourceStore(db).get("/s").body == surrogate
        nodes = NodeStore(db)
        node = Node("pool", "n1", {"id": "n1", "state": "creating", "isDedicated": True}, {"huge": 10 ** 30})
        nodes.put(node)
        nodes.dispatched([(node, "provision")])
        assert nodes.get("pool", "n1").internal == {"huge": 10 ** 30, "dispatched": "provision"}
    finally:
        db.close()
