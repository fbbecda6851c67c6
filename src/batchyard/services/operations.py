"""Long-running operations: work that outlives one request, with a status a client polls."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from ..store.db import Database
from .arm_resources import now_iso
from .errors import NotFound


@dataclass
class Operation:
    id: str
    status: str  # InProgress | Succeeded | Failed
    result: Any
    error: dict | None
    start_time: str
    end_time: str | None
    owner: str | None = None  # the object id of the principal who started it


class Operations:
    def __init__(self, db: Database):
        self.db = db
        # Work does not survive a restart: what was running then is reported failed.
        self.db.execute("UPDATE operations SET status = 'Failed', end_time = ?, error = ? WHERE status = 'InProgress'",
                        (now_iso(), json.dumps({"code": "OperationInterrupted",
                                                "message": "The service restarted while this operation ran. "
                                                           "Check the resource and retry."})))

    def start(self, owner: str | None = None) -> Operation:
        op = Operation(str(uuid.uuid4()), "InProgress", None, None, now_iso(), None, owner)
        self.db.execute("INSERT INTO operations (id, status, start_time, owner) VALUES (?, ?, ?, ?)",
                        (op.id, op.status, op.start_time, owner))
        return op

    def finish(self, op_id: str, result: Any = None, error: dict | None = None) -> None:
        self.db.execute("UPDATE operations SET status = ?, result = ?, error = ?, end_time = ? WHERE id = ?",
                        ("Failed" if error else "Succeeded", json.dumps(result), json.dumps(error) if error else None,
                         now_iso(), op_id))

    def get(self, op_id: str) -> Operation:
        rows = self.db.query("SELECT * FROM operations WHERE id = ?", (op_id,))
        if not rows:
            raise NotFound("NotFound", f"The operation '{op_id}' was not found.")
        row = rows[0]
        return Operation(row["id"], row["status"], json.loads(row["result"]) if row["result"] else None,
                         json.loads(row["error"]) if row["error"] else None, row["start_time"], row["end_time"],
                         row["owner"])
