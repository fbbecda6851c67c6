"""A client of the OCI distribution protocol (registry API v2), as `docker pull` speaks it:
image references, anonymous, basic and bearer-token authentication, manifests and image
indexes (the linux/amd64 entry is chosen), and blobs streamed with their digest checked.

HTTPS trusts the service's CA bundle setting (or the system's); a registry on a loopback
address that does not speak TLS is spoken to in plain HTTP, as Docker treats loopback
registries (insecure by default); nowhere else: not a redirect (registries send blobs to
storage elsewhere) nor a token service off loopback that would get the login in clear.

oras (PyPI) was weighed: it pushes and pulls artifacts but picks no platform from an index
and leaves layers to the caller, so the small part needed here is written on `requests`.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import requests

DOCKER_HUB = "registry-1.docker.io"
INDEX_TYPES = ("application/vnd.oci.image.index.v1+json",
               "application/vnd.docker.distribution.manifest.list.v2+json")
MANIFEST_TYPES = ("application/vnd.oci.image.manifest.v1+json",
                  "application/vnd.docker.distribution.manifest.v2+json")
_ACCEPT = ", ".join(INDEX_TYPES + MANIFEST_TYPES)
_PLATFORM = ("linux", "amd64")
_MAX_MANIFEST = 4 << 20  # manifests and configs are small; a registry that sends more is refused
_CHUNK = 1 << 20
# Docker's reference grammar, in short: [host[:port]/]path[:tag][@digest]
_REFERENCE = re.compile(
    r"^(?:(?P<host>[a-zA-Z0-9.-]+(?::[0-9]+)?|\[[0-9a-fA-F:]+\](?::[0-9]+)?)/)?"
    r"(?P<path>[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*)"
    r"(?::(?P<tag>[\w][\w.-]{0,127}))?(?:@(?P<digest>sha256:[0-9a-f]{64}))?$")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


class RegistryError(Exception):
    """A pull failed; the message says why (never with a credential in it)."""


@dataclass(frozen=True)
class Reference:
    registry: str  # host[:port], as a registry login names it
    repository: str
    tag: str | None
    digest: str | None

    @property
    def wanted(self) -> str:
        return self.digest or self.tag or "latest"

    def __str__(self) -> str:
        return f"{self.registry}/{self.repository}" + (f":{self.tag}" if self.tag else "") + \
            (f"@{self.digest}" if self.digest else "")


def parse_reference(text: str) -> Reference:
    """As `docker pull` reads it: a first part with a dot, a colon or `localhost` names the
    registry, else Docker Hub (whose one-part names live under library/); no tag is :latest."""
    match = _REFERENCE.match(text or "")
    if match is None:
        raise ValueError(f"'{text}' is not a valid image reference")
    host, path = match.group("host"), match.group("path")
    if host is not None and not ("." in host or ":" in host or host == "localhost" or host.startswith("[")):
        if host != host.lower():  # then it is a path component, and those are lower-case
            raise ValueError(f"'{text}' is not a valid image reference")
        path, host = f"{host}/{path}", None
    if host is None or host in ("docker.io", "index.docker.io"):
        host = DOCKER_HUB
        if "/" not in path:
            path = f"library/{path}"
    tag = match.group("tag")
    digest = match.group("digest")
    return Reference(host, path, tag or (None if digest else "latest"), digest)


def same_registry(login_server: str, registry: str) -> bool:
    """A pool's registry login applies to the images it serves: `docker.io` is Docker Hub."""
    def norm(name: str) -> str:
        name = re.sub(r"^https?://", "", name.strip().rstrip("/")).lower()
        return DOCKER_HUB if name in ("docker.io", "index.docker.io", DOCKER_HUB) else name
    return norm(login_server) == norm(registry)


def is_loopback(registry: str) -> bool:
    host = registry.rsplit(":", 1)[0] if not registry.startswith("[") else registry[1:registry.index("]")]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _plain_refused(url: str) -> bool:
    """Whether `url` is one this client must not speak to: only HTTPS, or plain HTTP on loopback."""
    parts = urlsplit(url)
    if parts.scheme == "https":
        return False
    return parts.scheme != "http" or not is_loopback(parts.netloc.rpartition("@")[2])


class _Session(requests.Session):
    def get_redirect_target(self, response):
        """A redirect is followed only to where the client may go (checked before it is asked)."""
        target = super().get_redirect_target(response)
        if target and _plain_refused(urljoin(response.url, target)):
            response.close()
            raise RegistryError(f"the registry redirected to {urlsplit(urljoin(response.url, target)).netloc} "
                                "over plain HTTP, which only loopback registries may use")
        return target


def checked_digest(digest, what: str) -> str:
    """A digest a document names, before it is used in a path or a URL."""
    if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
        raise RegistryError(f"the {what} names an unsupported digest {str(digest)[:80]!r}")
    return digest


@dataclass(frozen=True)
class Login:
    username: str
    password: str

    def __repr__(self) -> str:  # never a password in a log line or a traceback
        return f"Login({self.username!r}, ***)"


class RegistryClient:
    """One repository of one registry; a bearer token, once had, is kept for later requests."""

    def __init__(self, reference: Reference, login: Login | None, ca_bundle: str | None, timeout: float = 60):
        self.ref = reference
        self.login = login
        self.session = _Session()
        self.session.verify = ca_bundle or True
        self.session.trust_env = False  # loopback registries must not go through a proxy
        self.timeout = timeout
        self.base = f"https://{reference.registry}/v2/{reference.repository}"
        self._plain_allowed = is_loopback(reference.registry)
        self._token: str | None = None

    def close(self) -> None:
        self.session.close()

    # requests ---------------------------------------------------------------------------------

    def _get(self, url: str, accept: str | None = None, stream: bool = False, method: str = "GET"
             ) -> requests.Response:
        headers = {"Accept": accept} if accept else {}
        try:
            response = self._send(url, headers, stream, method)
            if response.status_code == 401:
                challenge = response.headers.get("WWW-Authenticate", "")
                response.close()
                self._authenticate(challenge)
                response = self._send(url, headers, stream, method)
        except requests.exceptions.SSLError as exc:
            raise RegistryError(f"TLS with {self.ref.registry} failed: {_short(exc)}") from None
        except requests.exceptions.RequestException as exc:
            raise RegistryError(f"cannot reach {self.ref.registry}: {_short(exc)}") from None
        if response.status_code == 401 or response.status_code == 403:
            response.close()
            raise RegistryError(f"{self.ref.registry} refused access to {self.ref.repository} "
                                f"({'wrong or missing credentials' if response.status_code == 401 else 'denied'})")
        if response.status_code == 404:
            response.close()
            raise RegistryError(f"{self.ref} was not found in the registry")
        if response.status_code != 200:
            response.close()
            raise RegistryError(f"{self.ref.registry} answered {response.status_code} for {url.rsplit('/', 2)[-2:]}")
        return response

    def _send(self, url: str, headers: dict, stream: bool, method: str = "GET") -> requests.Response:
        if self.base.startswith("http://") and url.startswith("https://"):
            url = "http://" + url.removeprefix("https://")  # made before the switch to plain HTTP
        try:
            return self._send_once(url, headers, stream, method)
        except requests.exceptions.SSLError as exc:
            # a loopback registry without TLS answers the handshake in plain HTTP; one whose
            # certificate is not trusted is refused like any other
            if not self._plain_allowed or "CERTIFICATE_VERIFY_FAILED" in str(exc):
                raise
        self._plain_allowed = False
        self.base = "http://" + self.base.removeprefix("https://")
        return self._send(url, headers, stream, method)

    def _send_once(self, url: str, headers: dict, stream: bool, method: str) -> requests.Response:
        if self._token:
            headers = {**headers, "Authorization": f"Bearer {self._token}"}
            auth = None
        else:
            auth = (self.login.username, self.login.password) if self.login and self._basic else None
        return self.session.request(method, url, headers=headers, auth=auth, stream=stream, timeout=self.timeout)

    _basic = False

    def _authenticate(self, challenge: str) -> None:
        scheme, _, params = challenge.partition(" ")
        if scheme.lower() == "basic":
            if self.login is None or self._basic:
                return  # the retry answers 401 again, reported as missing credentials
            self._basic = True
            return
        if scheme.lower() != "bearer":
            raise RegistryError(f"{self.ref.registry} asks for an unknown authentication scheme")
        fields = dict(re.findall(r'(\w+)="([^"]*)"', params))
        realm = fields.get("realm")
        if not realm:
            raise RegistryError(f"{self.ref.registry} sent a bearer challenge without a realm")
        query = {"service": fields.get("service", ""),
                 "scope": fields.get("scope") or f"repository:{self.ref.repository}:pull"}
        if _plain_refused(realm):  # the login would travel in clear (as Docker, the realm may be another host)
            raise RegistryError(f"{self.ref.registry} names a token service that is not HTTPS")
        auth = (self.login.username, self.login.password) if self.login else None
        try:
            answer = self.session.get(realm, params=query, auth=auth, timeout=self.timeout)
        except requests.exceptions.RequestException as exc:
            raise RegistryError(f"cannot reach the token service of {self.ref.registry}: {_short(exc)}") from None
        if answer.status_code != 200:
            raise RegistryError(f"the token service of {self.ref.registry} refused the credentials "
                                f"({answer.status_code})")
        body = _json(answer.content, "token")
        self._token = body.get("token") or body.get("access_token")
        if not isinstance(self._token, str):
            self._token = None
        if not self._token:
            raise RegistryError(f"the token service of {self.ref.registry} sent no token")

    def _small(self, url: str, accept: str | None = None) -> tuple[bytes, str]:
        response = self._get(url, accept, stream=True)
        try:
            data = b""
            for chunk in response.iter_content(_CHUNK):
                data += chunk
                if len(data) > _MAX_MANIFEST:
                    raise RegistryError(f"{self.ref} has a manifest larger than {_MAX_MANIFEST} bytes")
            return data, response.headers.get("Content-Type", "").split(";")[0].strip()
        finally:
            response.close()

    # the protocol -----------------------------------------------------------------------------

    def current_digest(self) -> str | None:
        """The digest the reference names at the registry now (an index's, or a manifest's),
        from a HEAD of its manifest as `docker pull` asks first; None if the registry does
        not say (then only a GET tells)."""
        response = self._get(f"{self.base}/manifests/{self.ref.wanted}", _ACCEPT, method="HEAD")
        response.close()
        digest = response.headers.get("Docker-Content-Digest", "")
        return digest if digest.startswith("sha256:") else None

    def manifest(self) -> tuple[str, str, dict, dict]:
        """(the digest the reference names, manifest digest, manifest, config) for
        linux/amd64, through an index if the reference names one; every document checked
        against the digest that named it."""
        data, kind = self._small(f"{self.base}/manifests/{self.ref.wanted}", _ACCEPT)
        digest = named = "sha256:" + hashlib.sha256(data).hexdigest()
        if self.ref.digest and digest != self.ref.digest:
            raise RegistryError(f"{self.ref} arrived with digest {digest}")
        document = _json(data, "manifest")
        kind = document.get("mediaType") or kind
        if kind in INDEX_TYPES or "manifests" in document:
            entry = _pick_platform(document, str(self.ref))
            data, _ = self._small(f"{self.base}/manifests/{checked_digest(entry.get('digest'), 'index')}", _ACCEPT)
            digest = _checked(data, entry["digest"], "manifest")
            document = _json(data, "manifest")
        if not isinstance(document.get("layers"), list) or not isinstance(document.get("config"), dict):
            raise RegistryError(f"{self.ref} is not an image manifest")
        config_digest = checked_digest(document["config"].get("digest"), "manifest")
        config_data, _ = self._small(f"{self.base}/blobs/{config_digest}")
        _checked(config_data, config_digest, "config")
        return named, digest, document, _json(config_data, "config")

    def blob(self, digest: str) -> Iterator[bytes]:
        """A blob's bytes in chunks; raises RegistryError at the end if they do not hash to
        `digest`, so the caller drops whatever it made of them."""
        algorithm, _, expected = digest.partition(":")
        if algorithm != "sha256" or not re.fullmatch(r"[0-9a-f]{64}", expected):
            raise RegistryError(f"unsupported digest {digest}")
        response = self._get(f"{self.base}/blobs/{digest}", stream=True)
        hasher = hashlib.sha256()
        try:
            for chunk in response.iter_content(_CHUNK):
                hasher.update(chunk)
                yield chunk
        except requests.exceptions.RequestException as exc:
            raise RegistryError(f"the download of {digest} broke: {_short(exc)}") from None
        finally:
            response.close()
        if hasher.hexdigest() != expected:
            raise RegistryError(f"blob {digest} arrived with digest sha256:{hasher.hexdigest()}")


def _pick_platform(index: dict, name: str) -> dict:
    for entry in index.get("manifests") or []:
        platform = (entry.get("platform") if isinstance(entry, dict) else None) or {}
        if (platform.get("os"), platform.get("architecture")) == _PLATFORM:
            return entry
    raise RegistryError(f"{name} has no image for linux/amd64")


def _checked(data: bytes, digest: str, what: str) -> str:
    got = "sha256:" + hashlib.sha256(data).hexdigest()
    if got != digest:
        raise RegistryError(f"the {what} {digest} arrived with digest {got}")
    return got


def _json(data: bytes, what: str) -> dict:
    try:
        value = json.loads(data)
    except ValueError:
        raise RegistryError(f"the registry sent a {what} that is not JSON") from None
    if not isinstance(value, dict):
        raise RegistryError(f"the registry sent a {what} that is not a JSON object")
    return value


def _short(exc: Exception) -> str:
    return str(exc).split("\n")[0][:200]
