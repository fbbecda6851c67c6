"""Debian's chromium (apt package `chromium`) driven by Playwright for Python. Playwright
never downloads a browser here: it launches /usr/bin/chromium, which `.ci/run` installs."""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

import pytest
import requests

CHROMIUM = os.environ.get("BATCHYARD_CHROMIUM", "/usr/bin/chromium")


def output_dir() -> Path:
    """Where the browser tests leave their screenshots."""
    path = Path(os.environ.get("BATCHYARD_TEST_OUTPUT") or Path(__file__).resolve().parent.parent / "test-output") \
        / "portal"
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def chromium():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (see .ci/run)")
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        # --no-sandbox: the tests run as root, where Chromium's sandbox refuses to start
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


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
