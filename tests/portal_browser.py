"""Debian's chromium (apt package `chromium`) driven by Playwright for Python. Playwright
never downloads a browser here: it launches /usr/bin/chromium, which `.ci/run` installs,
in a network namespace of its own (needs root, as the machines do)."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import sys
import tempfile
import threading
from pathlib import Path

import pytest
import requests

from netns_browser import pump

CHROMIUM = os.environ.get("BATCHYARD_CHROMIUM", "/usr/bin/chromium")
NETNS_BROWSER = Path(__file__).resolve().parent / "netns_browser.py"


def output_dir() -> Path:
    """Where the browser tests leave their screenshots."""
    path = Path(os.environ.get("BATCHYARD_TEST_OUTPUT") or Path(__file__).resolve().parent.parent / "test-output") \
        / "portal"
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def chromium(port: int):
    """Chromium in a network namespace of its own (tests/netns_browser.py) that
    reaches the host's 127.0.0.1:`port` and nothing else: interfaces that come and go on the
    host do not abort its requests, and a page that needed the internet would not load."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (see .ci/run)")
    from playwright.sync_api import sync_playwright
    with tempfile.TemporaryDirectory() as tmp, _HostRelay(Path(tmp) / "relay.sock", port) as relay:
        wrapper = Path(tmp) / "chromium"
        wrapper.write_text(f'#!/bin/sh\nexec unshare --net -- "{sys.executable}" "{NETNS_BROWSER}" '
                           f'"{relay.path}" {port} "{CHROMIUM}" "$@"\n')
        wrapper.chmod(0o700)
        with sync_playwright() as p:
            # --no-sandbox: the tests run as root, where Chromium's sandbox refuses to start
            browser = p.chromium.launch(executable_path=str(wrapper), args=["--no-sandbox"])
            try:
                yield browser
            finally:
                browser.close()


class _HostRelay:
    """The host's side of the browser's loopback: each connection on a Unix socket goes on
    to 127.0.0.1:port."""

    def __init__(self, path: Path, port: int):
        self.path, self.port = path, port
        self.server = socket.socket(socket.AF_UNIX)
        self.stopped = threading.Event()

    def __enter__(self) -> "_HostRelay":
        self.server.bind(str(self.path))
        self.server.listen(128)
        self.server.settimeout(0.5)
        threading.Thread(target=self._serve, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopped.set()
        self.server.close()

    def _serve(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.server.accept()
            except (TimeoutError, OSError):
                continue
            conn.settimeout(None)
            try:
                upstream = socket.create_connection(("127.0.0.1", self.port))
            except OSError:
                conn.close()  # the browser sees the refusal it would have seen itself
                continue
            for a, b in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=pump, args=(a, b), daemon=True).start()


def signed_in_session(portal_url: str, ca: str | None, client_id: str, secret: str) -> requests.Session:
    """A requests session signed in through the portal's own form (CSRF token included)."""
    http = requests.Session()
    http.verify = ca
    http.trust_env = False  # REQUESTS_CA_BUNDLE would override the CA given here
    form = http.get(portal_url + "signin", timeout=30)
    token = csrf_of(form.text)
    done = http.post(portal_url + "signin", data={"csrf_token": token, "client_id": client_id,
                                                  "client_secret": secret, "next": "/portal/accounts"},
                     timeout=30, allow_redirects=False)
    assert done.status_code == 303, done.text[:500]
    return http


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html)[1]
