"""A dict kept on disk as a snapshot (`NAME.json`) and a journal of the changes made since
(`NAME.log`, one JSON line each), so a change costs one appended line, not a rewrite of the
whole: a thousand machines placed in a burst wrote their placement a thousand times, each
time all of it. Loading applies the journal to the snapshot and writes both afresh; a last
line cut short by a crash is ignored (that change is lost, as it would have been before)."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path

_DELETED = ["deleted"]  # a journal line [key, _DELETED] removes the key


def read(stem: Path) -> dict:
    """The dict as its files hold it now, without touching them (another process may be
    writing them)."""
    snapshot, journal = stem.with_suffix(".json"), stem.with_suffix(".log")
    data: dict = json.loads(snapshot.read_text()) if snapshot.exists() else {}
    if journal.exists():
        for line in journal.read_text().splitlines():
            try:
                key, value = json.loads(line)
            except ValueError:
                break  # cut short by a crash
            if value == _DELETED:
                data.pop(key, None)
            else:
                data[key] = value
    return data


class JournaledDict:
    def __init__(self, stem: Path):
        self.snapshot, self.journal = stem.with_suffix(".json"), stem.with_suffix(".log")
        self._lock = threading.Lock()
        self.data = read(stem)
        self._compact()
        self._log = open(self.journal, "a")

    def _compact(self) -> None:
        tmp = self.snapshot.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data))
        os.replace(tmp, self.snapshot)
        self.journal.write_text("")

    def __getitem__(self, key):
        return self.data[key]

    def __contains__(self, key) -> bool:
        return key in self.data

    def __iter__(self) -> Iterator:
        return iter(list(self.data))

    def get(self, key, default=None):
        return self.data.get(key, default)

    def items(self) -> list:
        return list(self.data.items())

    def values(self) -> list:
        return list(self.data.values())

    def __setitem__(self, key, value) -> None:
        self.update({key: value})

    def update(self, changes: dict) -> None:
        with self._lock:
            self.data.update(changes)
            self._write(changes.items())

    def pop(self, key, default=None):
        with self._lock:
            if key not in self.data:
                return default
            value = self.data.pop(key)
            self._write([(key, _DELETED)])
            return value

    def _write(self, changes) -> None:
        self._log.write("".join(json.dumps([key, value]) + "\n" for key, value in changes))
        self._log.flush()

    def close(self) -> None:
        with self._lock:
            self._log.close()
