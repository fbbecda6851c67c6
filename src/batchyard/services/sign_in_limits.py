"""Limits on failed client-secret sign-ins, as Entra ID's smart lockout and throttling have
them: after too many failures for one client id, or from one remote address, within a
window, further attempts are refused before the secret is checked (each check is a ~50 ms
scrypt hash: unlimited, it is both a password-guessing and a CPU-exhaustion vector).
A client's failures never lock another client; an address's do lock every attempt from it.

Each attempt counts as a failure from the moment it starts and is taken back if it
succeeds, so concurrent attempts cannot get past the limit together. The tracked keys are
capped: keys whose failures have all left the window go first, then the least recently
failed ones."""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TypeVar

from .errors import ServiceError, TooManyRequests

T = TypeVar("T")

# Entra ID answers an account locked after repeated bad credentials, or sign-ins from an
# address blocked for them, with AADSTS50053 (IdsLocked); its token endpoint throttles with
# HTTP 429 and an integer Retry-After, which MSAL and azure-core honour.
LOCKED_CLIENT = ("AADSTS50053: The account is locked, you've tried to sign in too many times with an incorrect "
                 "client id or secret. Try again in {seconds} seconds.")
LOCKED_ADDRESS = ("AADSTS50053: Sign-in was blocked because too many sign-ins with an incorrect client id or secret "
                  "came from your IP address. Try again in {seconds} seconds.")
MAX_KEY_CHARS = 128  # a client id is a GUID; longer ones are cut, not kept whole


class SignInLimits:
    def __init__(self, per_client: int, per_address: int, window_seconds: float, max_keys: int = 10_000,
                 clock: Callable[[], float] = time.monotonic):
        self.limits = {"client": per_client, "address": per_address}
        self.window = window_seconds
        self.max_keys = max_keys
        self.clock = clock
        self._failures: OrderedDict[tuple[str, str], list[float]] = OrderedDict()  # least recently failed first
        self._lock = threading.Lock()

    def attempt(self, client_id: str, address: str, check: Callable[[], T]) -> T:
        """check()'s result, or TooManyRequests without calling it while either key is
        locked. A ServiceError from check() is a failure and is raised on."""
        keys = [("client", client_id.strip().lower()[:MAX_KEY_CHARS]), ("address", address[:MAX_KEY_CHARS])]
        started = self._begin(keys)
        try:
            result = check()
        except ServiceError:
            raise  # a failed sign-in: it stays counted
        except BaseException:
            self._take_back(keys, started)  # the service's own failure, not the caller's
            raise
        self._take_back(keys, started)
        return result

    def tracked(self) -> int:
        with self._lock:
            return len(self._failures)

    def _begin(self, keys: list[tuple[str, str]]) -> float:
        with self._lock:
            now = self.clock()
            wait, key = max((self._wait(key, now), key) for key in keys)
            if wait:  # the longest wait of the two, so that a retry after it is not refused again
                template = LOCKED_CLIENT if key[0] == "client" else LOCKED_ADDRESS
                raise TooManyRequests("invalid_grant", template.format(seconds=wait), wait)
            for key in keys:
                self._failures.setdefault(key, []).append(now)
                self._failures.move_to_end(key)
            self._bound(now)
            return now

    def _wait(self, key: tuple[str, str], now: float) -> int:
        """Whole seconds until `key` may try again (0: now), dropping failures out of the window."""
        failures = self._failures.get(key)
        if failures is None:
            return 0
        failures[:] = [t for t in failures if now - t < self.window]
        if not failures:
            del self._failures[key]
            return 0
        limit = self.limits[key[0]]
        if len(failures) < limit:
            return 0
        return max(1, math.ceil(failures[-limit] + self.window - now))

    def _take_back(self, keys: list[tuple[str, str]], started: float) -> None:
        with self._lock:
            for key in keys:
                failures = self._failures.get(key)
                if failures and started in failures:
                    failures.remove(started)
                    if not failures:
                        del self._failures[key]

    def _bound(self, now: float) -> None:
        """Keys are ordered by their latest failure: those out of the window, then beyond
        the cap, go from the front."""
        while self._failures:
            key, failures = next(iter(self._failures.items()))
            if now - failures[-1] < self.window and len(self._failures) <= self.max_keys:
                return
            del self._failures[key]
