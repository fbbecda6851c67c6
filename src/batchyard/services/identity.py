"""Principals and tokens: a small Entra ID. Issues RS256 JWTs for the client-credentials
flow and verifies them for the ARM and Batch endpoints."""

from __future__ import annotations

import hashlib
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from .. import defaults
from ..private_files import private_dir, write_private
from ..store.db import Database
from .errors import InvalidInput, Unauthenticated
from .secrets import SecretBox, hash_secret, is_current_hash, new_client_secret, verify_secret

TOKEN_LIFETIME_SECONDS = 3600
# Azure's habit: a token is honoured for a few minutes past its expiry to absorb clock skew.
# We honour none, so that an expired token is refused at once.
CLOCK_SKEW_SECONDS = 0


@dataclass
class Principal:
    client_id: str
    tenant_id: str
    object_id: str
    display_name: str


# The development principal's secret, sealed: connection.json shows it at every start.
_DEV_SECRET_SETTING = "development_client_secret"
_UNKNOWN_CLIENT_HASH = hash_secret(uuid.uuid4().hex)


def audience_for_scope(scope: str) -> str:
    """'https://batch.core.windows.net//.default' -> 'https://batch.core.windows.net/'."""
    resource = scope.split(" ")[0]
    if resource.endswith("/.default"):
        resource = resource[: -len("/.default")]
    elif resource.endswith(".default"):
        resource = resource[: -len(".default")]
    return resource.rstrip("/") + "/"


class Identity:
    def __init__(self, db: Database, key_dir: Path, box: SecretBox):
        self.db = db
        self.box = box  # seals the development secret, which connection.json shows at every start
        self._key = self._load_or_create_key(key_dir / "token-signing.pem")
        self._public = self._key.public_key()
        self.key_id = hashlib.sha256(
            self._public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        ).hexdigest()[:32]

    @staticmethod
    def _load_or_create_key(path: Path) -> rsa.RSAPrivateKey:
        if path.exists():
            return serialization.load_pem_private_key(path.read_bytes(), password=None)
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        private_dir(path.parent)
        write_private(path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()))
        return key

    # principals -----------------------------------------------------------------------

    def ensure_default_principal(self, dev_credentials: bool) -> str:
        """The development principal, with a random secret per data directory (or, with
        `dev_credentials`, the published one); returns its secret for connection.json.
        A data directory that still has the published secret gets a random one."""
        exists = bool(self.db.query("SELECT 1 FROM principals WHERE client_id = ?", (defaults.CLIENT_ID,)))
        sealed = self.db.get_setting(_DEV_SECRET_SETTING)
        current = self.box.open(sealed) if sealed else None
        if dev_credentials:
            wanted = defaults.CLIENT_SECRET
        elif current and current != defaults.CLIENT_SECRET:
            wanted = current
        else:  # new, published before, or kept only as a hash by an older version
            wanted = new_client_secret()
        if not exists:
            self.add_principal(defaults.CLIENT_ID, wanted, defaults.TENANT_ID,
                               defaults.PRINCIPAL_OBJECT_ID, defaults.PRINCIPAL_NAME)
        elif wanted != current:
            self._set_secret(defaults.CLIENT_ID, wanted)
        if wanted != current:
            self.db.set_setting(_DEV_SECRET_SETTING, self.box.seal(wanted))
        return wanted

    def add_principal(self, client_id: str, secret: str, tenant_id: str, object_id: str | None = None,
                      display_name: str = "") -> Principal:
        object_id = object_id or str(uuid.uuid4())
        self.db.execute(
            "INSERT INTO principals (client_id, tenant_id, object_id, display_name, secret_hash) VALUES (?, ?, ?, ?, ?)",
            (client_id, tenant_id, object_id, display_name or client_id, hash_secret(secret)),
        )
        return Principal(client_id, tenant_id, object_id, display_name or client_id)

    def _set_secret(self, client_id: str, secret: str) -> None:
        self.db.execute("UPDATE principals SET secret_hash = ? WHERE client_id = ?", (hash_secret(secret), client_id))

    def tenants(self) -> set[str]:
        return {r["tenant_id"] for r in self.db.query("SELECT DISTINCT tenant_id FROM principals")}

    def authenticate_client(self, tenant_id: str, client_id: str, secret: str) -> Principal:
        rows = self.db.query("SELECT * FROM principals WHERE client_id = ?", (client_id,))
        # Check even when the client is unknown, so timing says nothing about which ids exist.
        stored = rows[0]["secret_hash"] if rows else _UNKNOWN_CLIENT_HASH
        secret_ok = verify_secret(secret or "", stored)
        if not rows:
            raise InvalidInput(
                "unauthorized_client",
                f"AADSTS700016: Application with identifier '{client_id}' was not found in the directory '{tenant_id}'.",
            )
        if not secret_ok:
            raise Unauthenticated(
                "invalid_client",
                f"AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is "
                f"the client secret value, not the client secret ID, for a secret added to app '{client_id}'.",
            )
        if not is_current_hash(stored):
            self._set_secret(client_id, secret)
        row = rows[0]
        if row["tenant_id"].lower() != tenant_id.lower():
            raise InvalidInput(
                "invalid_request",
                f"AADSTS90002: Tenant '{tenant_id}' not found. Check to make sure you have the correct tenant ID.",
            )
        return Principal(row["client_id"], row["tenant_id"], row["object_id"], row["display_name"])

    # tokens ---------------------------------------------------------------------------

    def issue_token(self, principal: Principal, scope: str, issuer: str) -> tuple[str, int]:
        now = int(time.time())
        claims = {
            "aud": audience_for_scope(scope),
            "iss": issuer,
            "iat": now,
            "nbf": now,
            "exp": now + TOKEN_LIFETIME_SECONDS,
            "sub": principal.object_id,
            "oid": principal.object_id,
            "tid": principal.tenant_id,
            "appid": principal.client_id,
            "azp": principal.client_id,
            "idtyp": "app",
            "ver": "2.0",
            "uti": uuid.uuid4().hex,
        }
        token = jwt.encode(claims, self._key, algorithm="RS256", headers={"kid": self.key_id})
        return token, TOKEN_LIFETIME_SECONDS

    def verify_token(self, token: str, audiences: tuple[str, ...]) -> dict:
        """Returns the claims, or raises Unauthenticated with ARM's code for what is wrong."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthenticated("InvalidAuthenticationToken", "The access token is invalid.")
        if header.get("alg") != "RS256":
            raise Unauthenticated("InvalidAuthenticationToken", "The access token is invalid.")
        try:
            claims = jwt.decode(
                token, self._public, algorithms=["RS256"], leeway=CLOCK_SKEW_SECONDS,
                options={"verify_aud": False, "require": ["exp", "iat", "aud", "tid", "oid"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated(
                "ExpiredAuthenticationToken",
                "The access token expiry UTC time is earlier than current UTC time.",
            )
        except jwt.PyJWTError:
            raise Unauthenticated(
                "InvalidAuthenticationToken",
                "The access token is invalid: its signature could not be verified.",
            )
        # RFC 7519 lets `aud` be one string or a list of them; anything else names no audience.
        audience = claims.get("aud")
        named = [audience] if isinstance(audience, str) else audience if isinstance(audience, list) else []
        allowed = {a.rstrip("/") for a in audiences}
        if not any(isinstance(a, str) and a.rstrip("/") in allowed for a in named):
            raise Unauthenticated(
                "InvalidAuthenticationTokenAudience",
                f"The access token has been obtained for wrong audience or resource '{audience}'. It should exactly "
                f"match with one of the allowed audiences {', '.join(repr(a) for a in audiences)}.",
            )
        return claims

    def sign(self, claims: dict) -> str:
        """A JWT of these claims under the service's token key (tokens of the service's own
        making, such as a task's: see services/batch/task_tokens.py)."""
        return jwt.encode(claims, self._key, algorithm="RS256", headers={"kid": self.key_id})

    def decode(self, token: str, audience: str, required: list[str]) -> dict:
        """The claims of a token this service signed for `audience`; raises jwt.PyJWTError."""
        return jwt.decode(token, self._public, algorithms=["RS256"], audience=audience, leeway=CLOCK_SKEW_SECONDS,
                          options={"require": required})

    def public_jwks(self) -> dict:
        jwk = jwt.algorithms.RSAAlgorithm.to_jwk(self._public, as_dict=True)
        jwk.update({"kid": self.key_id, "use": "sig", "alg": "RS256"})
        return {"keys": [jwk]}
