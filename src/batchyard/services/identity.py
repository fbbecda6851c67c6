"""Principals and tokens: a small Entra ID. Issues RS256 JWTs for the client-credentials
flow and verifies them for the ARM and Batch endpoints."""

from __future__ import annotations

import hashlib
import hmac
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from .. import defaults
from ..store.db import Database
from .errors import InvalidInput, Unauthenticated

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


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def audience_for_scope(scope: str) -> str:
    """'https://batch.core.windows.net//.default' -> 'https://batch.core.windows.net/'."""
    resource = scope.split(" ")[0]
    if resource.endswith("/.default"):
        resource = resource[: -len("/.default")]
    elif resource.endswith(".default"):
        resource = resource[: -len(".default")]
    return resource.rstrip("/") + "/"


class Identity:
    def __init__(self, db: Database, key_dir: Path):
        self.db = db
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
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        )
        tmp.chmod(0o600)
        tmp.replace(path)
        return key

    # principals -----------------------------------------------------------------------

    def ensure_default_principal(self) -> None:
        if not self.db.query("SELECT 1 FROM principals WHERE client_id = ?", (defaults.CLIENT_ID,)):
            self.add_principal(
                defaults.CLIENT_ID, defaults.CLIENT_SECRET, defaults.TENANT_ID,
                defaults.PRINCIPAL_OBJECT_ID, defaults.PRINCIPAL_NAME,
            )

    def add_principal(self, client_id: str, secret: str, tenant_id: str, object_id: str | None = None,
                      display_name: str = "") -> Principal:
        object_id = object_id or str(uuid.uuid4())
        self.db.execute(
            "INSERT INTO principals (client_id, tenant_id, object_id, display_name, secret_sha256) VALUES (?, ?, ?, ?, ?)",
            (client_id, tenant_id, object_id, display_name or client_id, _sha256(secret)),
        )
        return Principal(client_id, tenant_id, object_id, display_name or client_id)

    def tenants(self) -> set[str]:
        return {r["tenant_id"] for r in self.db.query("SELECT DISTINCT tenant_id FROM principals")}

    def authenticate_client(self, tenant_id: str, client_id: str, secret: str) -> Principal:
        rows = self.db.query("SELECT * FROM principals WHERE client_id = ?", (client_id,))
        # Compare even when the client is unknown, so timing says nothing about which ids exist.
        stored = rows[0]["secret_sha256"] if rows else _sha256(uuid.uuid4().hex)
        secret_ok = hmac.compare_digest(stored, _sha256(secret or ""))
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

    def public_jwks(self) -> dict:
        jwk = jwt.algorithms.RSAAlgorithm.to_jwk(self._public, as_dict=True)
        jwk.update({"kid": self.key_id, "use": "sig", "alg": "RS256"})
        return {"keys": [jwk]}
