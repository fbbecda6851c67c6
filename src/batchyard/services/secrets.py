"""Secrets at rest: what need not be shown again is hashed, what must be is encrypted.

- Client secrets are kept as salted scrypt hashes and compared in constant time.
- Batch account keys (listKeys shows them again) and the development principal's secret
  (connection.json shows it at every start) are sealed with Fernet (AES-128-CBC + HMAC)
  under a key kept 0600 in the data directory: the database alone reveals neither.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from ..private_files import private_dir, write_private

# scrypt's interactive parameters (RFC 7914): about 50 ms and 16 MiB per check.
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 1 << 14, 8, 1
_SCHEME = "scrypt"


def new_client_secret() -> str:
    """Like Entra's client secrets: 40 URL-safe characters."""
    return secrets.token_urlsafe(30)


def hash_secret(secret: str) -> str:
    salt = secrets.token_bytes(16)
    digest = _scrypt(secret, salt)
    return f"{_SCHEME}${_b64(salt)}${_b64(digest)}"


def verify_secret(secret: str, stored: str) -> bool:
    """Constant time in the secret. Hashes written before scrypt (bare SHA-256 hex) still
    verify, so that such a principal can be rehashed at its next sign-in."""
    if stored.startswith(_SCHEME + "$"):
        _, salt, digest = stored.split("$")
        return hmac.compare_digest(_scrypt(secret, base64.b64decode(salt)), base64.b64decode(digest))
    return hmac.compare_digest(hashlib.sha256(secret.encode()).hexdigest(), stored)


def is_current_hash(stored: str) -> bool:
    return stored.startswith(_SCHEME + "$")


def _scrypt(secret: str, salt: bytes) -> bytes:
    return hashlib.scrypt(secret.encode(), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, dklen=32)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


OPENED_KEPT = 256  # secrets kept opened in memory (accounts' keys; more is a rare server)


class SecretBox:
    """Encrypts and decrypts secrets that must be shown again, with this data directory's key."""

    def __init__(self, key_file: Path):
        if not key_file.exists():
            private_dir(key_file.parent)
            write_private(key_file, Fernet.generate_key())
        self._fernet = Fernet(key_file.read_bytes().strip())
        # The same few secrets (the accounts' keys) are opened for every signed request:
        # Fernet's HMAC and AES once each, not per request. A sealed text opens to one secret
        # forever, so nothing here goes stale; a replaced secret is a new sealed text.
        self._opened: dict[str, str] = {}

    def seal(self, secret: str) -> str:
        return self._fernet.encrypt(secret.encode()).decode()

    def open(self, sealed: str) -> str:
        opened = self._opened.get(sealed)
        if opened is None:
            try:
                opened = self._fernet.decrypt(sealed.encode()).decode()
            except InvalidToken:
                raise ValueError("a sealed secret does not match this data directory's key") from None
            if len(self._opened) >= OPENED_KEPT:
                self._opened.clear()
            self._opened[sealed] = opened
        return opened
