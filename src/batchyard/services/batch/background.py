"""A loop on its own thread that makes a pass whenever it is poked (and at least every
`tick` seconds), coalescing pokes that arrive during a pass into the next one."""

from __future__ import annotations

import logging
import threading
import time

log = logging.getLogger("batchyard.batch")


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
