"""Portal sessions: a random session id in an HttpOnly, SameSite=Strict cookie (Secure when
TLS is on), held in memory and looked up by its SHA-256 (the id itself is kept nowhere), and
a CSRF token per session that every form carries back. A visitor gets an anonymous session
on first sight, so the sign-in form is protected too; signing in replaces it with a new id
(no session fixation). Sessions end on sign-out, after idling, and when the server stops."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass, field

from ...services.authorization import Caller

COOKIE = "batchyard_portal"
IDLE_SECONDS = 8 * 3600
# Anyone may get an anonymous session (the sign-in form needs its CSRF token): they idle out
# sooner and are capped, so a flood of visits cannot fill the service's memory.
ANONYMOUS_IDLE_SECONDS = 15 * 60
MAX_ANONYMOUS = 10_000
CSRF_FIELD = "csrf_token"


@dataclass
class Session:
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    caller: Caller | None = None  # None until signed in
    name: str = ""  # the principal's display name
    seen: float = field(default_factory=time.monotonic)

    def idle_limit(self) -> float:
        return IDLE_SECONDS if self.caller is not None else ANONYMOUS_IDLE_SECONDS

    def csrf_ok(self, sent: str | None) -> bool:
        return bool(sent) and hmac.compare_digest(self.csrf.encode(), str(sent).encode())


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


class Sessions:
    def __init__(self):
        self._by_digest: dict[str, Session] = {}
        self._lock = threading.Lock()

    def find(self, session_id: str | None) -> Session | None:
        if not session_id:
            return None
        with self._lock:
            session = self._by_digest.get(_digest(session_id))
            now = time.monotonic()
            if session is None or now - session.seen > session.idle_limit():
                self._by_digest.pop(_digest(session_id), None)
                return None
            session.seen = now
            return session

    def new(self, session: Session | None = None) -> tuple[str, Session]:
        session_id = secrets.token_urlsafe(32)
        session = session or Session()
        with self._lock:
            self._expire()
            self._by_digest[_digest(session_id)] = session
        return session_id, session

    def end(self, session_id: str | None) -> None:
        if session_id:
            with self._lock:
                self._by_digest.pop(_digest(session_id), None)

    def _expire(self) -> None:
        """Idle sessions go; then the oldest anonymous ones, beyond MAX_ANONYMOUS - 1 (one is
        being added)."""
        now = time.monotonic()
        for key in [k for k, s in self._by_digest.items() if now - s.seen > s.idle_limit()]:
            del self._by_digest[key]
        anonymous = [(s.seen, k) for k, s in self._by_digest.items() if s.caller is None]
        if len(anonymous) >= MAX_ANONYMOUS:
            for _, key in sorted(anonymous)[:len(anonymous) - MAX_ANONYMOUS + 1]:
                del self._by_digest[key]


def cookie_settings(secure: bool) -> dict:
    return {"key": COOKIE, "httponly": True, "secure": secure, "samesite": "strict", "path": "/portal"}
