"""Space held back on the data directory's file system for the moment it fills up.

When the disk is full every write fails, SQLite's included, and so would the deletes that
could free space: a delete must still write its journal. The reserve is a file of a few
MiB kept in the data directory; the first write that fails for want of space lets it go,
so the client's retry (and its deletes) can go through, and it is taken again once the
file system has room for it twice over.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

log = logging.getLogger("batchyard.store")

RESERVE_BYTES = 32 << 20
_RECHECK_SECONDS = 5.0


class SpaceReserve:
    def __init__(self, path: Path, size: int = RESERVE_BYTES):
        self.path = path
        self.size = size
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.hold()
        self._thread = threading.Thread(target=self._retake, name="space-reserve", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def hold(self) -> bool:
        """Takes the reserve if it is not held and there is room for it twice over."""
        if self.path.exists():
            return True
        stats = os.statvfs(self.path.parent)
        if stats.f_bavail * stats.f_frsize < 2 * self.size:
            return False
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            os.posix_fallocate(fd, 0, self.size)
        except OSError:
            os.close(fd)
            self.path.unlink(missing_ok=True)
            return False
        os.close(fd)
        return True

    def release(self) -> None:
        if self.path.exists():
            log.warning("the data directory's disk is full: its reserve of %d MiB is released so that deletes "
                        "can free space", self.size >> 20)
            self.path.unlink(missing_ok=True)

    def _retake(self) -> None:
        while not self._stop.wait(_RECHECK_SECONDS):
            try:
                self.hold()
            except OSError:
                pass  # the disk may be full again; the next pass tries once more
