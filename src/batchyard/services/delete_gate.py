"""Writes into a container of resources (a resource group, a Batch account) against the
container's delete.

ARM refuses to make or change anything in a container from the moment its delete is asked
for, and the delete takes what was being made when it was asked for. So: a write is let
in only while its container is open (begin_write, which runs the owner's check of that
under the gate's lock); a delete closes the container (its owner marks it Deleting, under
the same lock) and begins once the writes let in before have ended; a second delete of
the same container waits for the first.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable, TypeVar

# How long a delete waits for the writes let in before it to end: a write's request lasts
# at most the synchronous wait of a long-running operation (20 s).
WRITES_WAIT_SECONDS = 60.0

T = TypeVar("T")
log = logging.getLogger("batchyard.arm")


class DeleteGate:
    def __init__(self, writes_wait_seconds: float = WRITES_WAIT_SECONDS):
        self._writes_wait_seconds = writes_wait_seconds
        # The containers' state changes, the writes let into each, and the containers whose
        # delete runs; keys are the containers' lower-cased ids.
        self.lock = threading.Condition()
        self._writes: dict[str, int] = {}
        self._deletes: set[str] = set()

    def begin_write(self, key: str, require_open: Callable[[], object]) -> str:
        """Lets a write into the container `key` when require_open() does not raise; its
        delete, asked for meanwhile, waits for it to end (end_write, with what this gives)."""
        with self.lock:
            require_open()
            self._writes[key] = self._writes.get(key, 0) + 1
            return key

    def end_write(self, key: str) -> None:
        with self.lock:
            self._writes[key] -= 1
            if not self._writes[key]:
                del self._writes[key]
                self.lock.notify_all()

    def begin_delete(self, key: str, close: Callable[[], T | None]) -> T | None:
        """Closes the container `key` for a delete: close() marks it Deleting and gives it
        (None when it is gone: then nothing is closed, and None is given). Returns once the
        writes let in before have ended; end_delete must follow."""
        with self.lock:
            self.lock.wait_for(lambda: key not in self._deletes)
            closed = close()
            if closed is None:
                return None
            self._deletes.add(key)
            if not self.lock.wait_for(lambda: key not in self._writes, timeout=self._writes_wait_seconds):
                log.warning("deleting %s while writes let in before its delete still run", key)
            return closed

    def end_delete(self, key: str) -> None:
        with self.lock:
            self._deletes.discard(key)
            self.lock.notify_all()
