"""Principals and tokens: a small Entra ID. Issues RS256 JWTs for the client-credentials
flow and verifies them for the ARM and Batch endpoints."""

from __future__ import annotations

import hashlib
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from .. import defaults
from ..private_files import private_dir, write_private
from ..store.db import Database
from .errors import InvalidInput, NotFound, Unauthenticated
from .sign_in_limits import SignInLimits
from .secrets import SecretBox, hash_secret, is_current_hash, new_client_secret, verify_secret

TOKEN_LIFETIME_SECONDS = 3600
# Azure's habit: a token is honoured for a few minutes past its expiry to absorb clock skew.
# We honour none, so that an expired token is refused at once.
CLOCK_SKEW_SECONDS = 0
DEFAULT_SECRET_LIFETIME = timedelta(days=730)


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
    def __init__(self, db: Database, key_dir: Path, box: SecretBox, sign_in_limits: SignInLimits,
                 issuer_bases=lambda: ()):
        self.db = db
        self.sign_in_limits = sign_in_limits  # failed secrets, per client id and per address
        self.box = box  # seals the development secret, which connection.json shows at every start
        self._on_delete: list = []  # called with the object id of a deleted principal
        # the addresses tokens are issued at (this server's, and Azure's with --azure-hostnames):
        # a token names one of them, followed by /{tenant}/v2.0, as its issuer; read when checked
        self.issuer_bases = issuer_bases
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
            self._insert_principal(defaults.CLIENT_ID, defaults.TENANT_ID, defaults.PRINCIPAL_OBJECT_ID,
                                   defaults.PRINCIPAL_NAME)
            self._add_secret(defaults.CLIENT_ID, wanted, None, "development")
        elif wanted != current:
            with self.db.transaction():
                self.db.execute("DELETE FROM principal_secrets WHERE client_id = ?", (defaults.CLIENT_ID,))
                self._add_secret(defaults.CLIENT_ID, wanted, None, "development")
        if wanted != current:
            self.db.set_setting(_DEV_SECRET_SETTING, self.box.seal(wanted))
        return wanted

    def create_principal(self, display_name: str, end: datetime | None = None) -> tuple[Principal, dict, str]:
        """A new service principal in the development tenant with one client secret:
        (principal, the secret's credential entry, the secret itself, shown this once)."""
        display_name = _display_name(display_name)
        principal = self._insert_principal(str(uuid.uuid4()), defaults.TENANT_ID, str(uuid.uuid4()), display_name)
        secret = new_client_secret()
        credential = self._add_secret(principal.client_id, secret, self._end_of(end), "default")
        return principal, credential, secret

    def add_secret(self, client_id: str, end: datetime | None = None, display_name: str = "") -> tuple[dict, str]:
        """Another client secret for a principal (Graph's addPassword): (entry, secret)."""
        self.principal(client_id)
        secret = new_client_secret()
        return self._add_secret(client_id, secret, self._end_of(end), display_name[:256]), secret

    def remove_secret(self, client_id: str, key_id: str) -> None:
        self.principal(client_id)
        if not self.db.execute("DELETE FROM principal_secrets WHERE client_id = ? AND key_id = ?",
                               (client_id, key_id.lower())):
            raise NotFound("NotFound", f"The principal '{client_id}' has no secret with key id '{key_id}'.")

    def principal(self, client_id: str) -> Principal:
        rows = self.db.query("SELECT * FROM principals WHERE client_id = ?", (str(client_id).lower(),))
        if not rows:
            raise NotFound("NotFound", f"There is no principal with client id '{client_id}'.")
        return _principal(rows[0])

    def by_object_id(self, object_id: str) -> Principal | None:
        rows = self.db.query("SELECT * FROM principals WHERE object_id = ?", (str(object_id).lower(),))
        return _principal(rows[0]) if rows else None

    def principals(self) -> list[dict]:
        """Every principal with its secrets' metadata (never a secret or its hash)."""
        return [self._view(_principal(row))
                for row in self.db.query("SELECT * FROM principals ORDER BY display_name, client_id")]

    def principal_view(self, client_id: str) -> dict:
        """One principal as `principals()` shows it; NotFound for an unknown client id."""
        return self._view(self.principal(client_id))

    def _view(self, principal: Principal) -> dict:
        secrets = self.db.query("SELECT * FROM principal_secrets WHERE client_id = ? ORDER BY start_time",
                                (principal.client_id,))
        return {**principal_wire(principal), "passwordCredentials": [_credential(s) for s in secrets]}

    def delete_principal(self, client_id: str) -> Principal:
        principal = self.principal(client_id)
        if principal.client_id == defaults.CLIENT_ID:
            raise InvalidInput("InvalidRequest", "The development principal cannot be deleted: connection.json "
                                                 "and `batchyard` commands sign in with it.")
        with self.db.transaction():
            self.db.execute("DELETE FROM principals WHERE client_id = ?", (principal.client_id,))
            for callback in self._on_delete:
                callback(principal.object_id)
        return principal

    def on_delete(self, callback) -> None:
        self._on_delete.append(callback)

    def _insert_principal(self, client_id: str, tenant_id: str, object_id: str, display_name: str) -> Principal:
        self.db.execute("INSERT INTO principals (client_id, tenant_id, object_id, display_name) VALUES (?, ?, ?, ?)",
                        (client_id, tenant_id, object_id, display_name))
        return Principal(client_id, tenant_id, object_id, display_name)

    def _add_secret(self, client_id: str, secret: str, end: datetime | None, display_name: str) -> dict:
        row = {"key_id": str(uuid.uuid4()), "client_id": client_id, "secret_hash": hash_secret(secret),
               "hint": secret[:3], "display_name": display_name, "start_time": _iso(datetime.now(UTC)),
               "end_time": _iso(end) if end else None}
        self.db.execute("INSERT INTO principal_secrets (key_id, client_id, secret_hash, hint, display_name, "
                        "start_time, end_time) VALUES (:key_id, :client_id, :secret_hash, :hint, :display_name, "
                        ":start_time, :end_time)", row)
        return _credential(row)

    @staticmethod
    def _end_of(end: datetime | None) -> datetime:
        """Entra's default lifetime for a client secret made without an end date: two years."""
        if end is None:
            return datetime.now(UTC) + DEFAULT_SECRET_LIFETIME
        return end if end.tzinfo else end.replace(tzinfo=UTC)

    def tenants(self) -> set[str]:
        return {r["tenant_id"] for r in self.db.query("SELECT DISTINCT tenant_id FROM principals")}

    def authenticate_client(self, tenant_id: str, client_id: str, secret: str, address: str) -> Principal:
        """The principal a client id and secret sign in as (the token endpoint's and the
        portal's check), from `address`, under the limits on failed sign-ins: a locked
        client id or address gets TooManyRequests before its secret is checked."""
        return self.sign_in_limits.attempt(client_id, address,
                                           lambda: self._check_secret(tenant_id, client_id, secret))

    def _check_secret(self, tenant_id: str, client_id: str, secret: str) -> Principal:
        """Entra's order: the tenant, then the application, then its secrets."""
        if tenant_id.lower() not in {t.lower() for t in self.tenants()}:
            raise InvalidInput("invalid_request", f"AADSTS90002: Tenant '{tenant_id}' not found. Check to make sure "
                                                  "you have the correct tenant ID and are signing into the correct "
                                                  "cloud.")
        rows = self.db.query("SELECT * FROM principals WHERE client_id = ? AND tenant_id = ? COLLATE NOCASE",
                             (client_id.lower(), tenant_id))
        stored = self.db.query("SELECT * FROM principal_secrets WHERE client_id = ?",
                               (rows[0]["client_id"],)) if rows else []
        # Check even when the client is unknown, so timing says nothing about which ids exist.
        matched = [s for s in stored if verify_secret(secret or "", s["secret_hash"])]
        if not stored:
            verify_secret(secret or "", _UNKNOWN_CLIENT_HASH)
        if not rows:
            raise InvalidInput(
                "unauthorized_client",
                f"AADSTS700016: Application with identifier '{client_id}' was not found in the directory "
                f"'{tenant_id}'. This can happen if the application has not been installed by the administrator of "
                "the tenant or consented to by any user in the tenant. You may have sent your authentication request "
                "to the wrong tenant.",
            )
        if not matched:
            raise Unauthenticated(
                "invalid_client",
                f"AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is "
                f"the client secret value, not the client secret ID, for a secret added to app '{client_id}'.",
            )
        credential = matched[0]
        if credential["end_time"] and datetime.fromisoformat(credential["end_time"]) <= datetime.now(UTC):
            raise Unauthenticated(
                "invalid_client",
                f"AADSTS7000222: The provided client secret keys for app '{client_id}' are expired. Visit the Azure "
                "portal to create new keys for your app: https://aka.ms/NewClientSecret, or consider using "
                "certificate credentials for added security: https://aka.ms/certCreds.",
            )
        if not is_current_hash(credential["secret_hash"]):
            self.db.execute("UPDATE principal_secrets SET secret_hash = ? WHERE key_id = ?",
                            (hash_secret(secret), credential["key_id"]))
        return _principal(rows[0])

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
                options={"verify_aud": False, "require": ["exp", "iat", "nbf", "aud", "iss", "tid", "oid"]},
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
        issuer = claims.get("iss")
        if not all(isinstance(claims[name], str) for name in ("iss", "tid", "oid")):  # each is named as text
            raise Unauthenticated("InvalidAuthenticationToken", "The access token's iss, tid and oid must be strings.")
        if issuer not in {f"{base}/{claims['tid']}/v2.0" for base in self.issuer_bases()}:
            raise Unauthenticated("InvalidAuthenticationToken",
                                  f"The access token is from an issuer this server does not trust: '{issuer}'.")
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


def principal_wire(principal: Principal) -> dict:
    """A principal as `batchyard principal` and its HTTP route show it (Graph's names)."""
    return {"clientId": principal.client_id, "objectId": principal.object_id, "tenantId": principal.tenant_id,
            "displayName": principal.display_name}


def _principal(row) -> Principal:
    return Principal(row["client_id"], row["tenant_id"], row["object_id"], row["display_name"])


def _credential(row) -> dict:
    return {"keyId": row["key_id"], "hint": row["hint"] or None, "displayName": row["display_name"] or None,
            "startDateTime": row["start_time"], "endDateTime": row["end_time"]}


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _display_name(name) -> str:
    if not isinstance(name, str) or not name.strip() or len(name) > 120:
        raise InvalidInput("InvalidRequest", "A principal needs a display name of 1 to 120 characters.")
    return name.strip()
