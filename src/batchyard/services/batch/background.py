"""A loop on its own thread that makes a pass whenever it is poked (and at least every
`tick` seconds), coalescing pokes that arrive during a pass into the next one."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import TypeVar

log = logging.getLogger("batchyard.batch")
T = TypeVar("T")


class PokedLoop:
    def __init__(self, name: str, tick: float, gap: float):
        self._tick = tick
        self._gap = gap  # the least time between passes, so a burst of events costs one pass
        self._wake = threading.Condition()
        self._poked = False
        self._stopped = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start_loop(self) -> None:
        self._thread.start()

    def stop_loop(self) -> None:
        with self._wake:
            self._stopped = True
            self._wake.notify()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def poke(self) -> None:
        with self._wake:
            self._poked = True
            self._wake.notify()

    def one_pass(self) -> None:
        raise NotImplementedError

    def each(self, items: Iterable[T], work: Callable[[T], None]) -> None:
        """work(item) for every item of a pass; one item's failure is logged and the pass goes
        on: a fault in one pool or schedule (a value out of range, once) must not stop every
        other one's work, pass after pass, until it is deleted."""
        for item in items:
            try:
                work(item)
            except Exception:  # noqa: BLE001 - whatever one item raised
                log.exception("%s: %s failed", self._thread.name, getattr(item, "id", item))

    def _loop(self) -> None:
        while True:
            with self._wake:
                if not self._poked and not self._stopped:
                    self._wake.wait(timeout=self._tick)
                if self._stopped:
                    return
                self._poked = False
            try:
                self.one_pass()
            except Exception:  # the loop must outlive any one pass's trouble
                log.exception("%s pass failed", self._thread.name)
            time.sleep(self._gap)
