"""Real OCI registries and images for the container tests, all offline: Debian's
`docker-registry` (the Docker distribution registry) on a free loopback port, anonymous or
with htpasswd authentication, and images built here from busybox-static's binary, written
as OCI image layouts and pushed with skopeo (Debian's `docker-registry`, `skopeo`,
`busybox-static` and `apache2-utils`, installed by .ci/run)."""

from __future__ import annotations

import base64
import datetime
import gzip
import hashlib
import hmac
import http.client
import http.server
import io
import ipaddress
import json
import shutil
import ssl
import subprocess
import tarfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import jwt
import zstandard
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from conftest import free_port

BUSYBOX = Path("/bin/busybox")
APPLETS = ("sh", "cat", "echo", "ls", "id", "pwd", "env", "sleep", "test", "touch", "mkdir", "whoami", "false",
           "true", "printf")


def need(program: str) -> str:
    found = shutil.which(program)
    assert found, f"{program} is missing: install Debian's docker-registry, skopeo, busybox-static and " \
                  f"apache2-utils (see .ci/run)"
    return found


class TokenService:
    """A registry token service (Docker's token authentication) on loopback: HTTP basic
    credentials in, an RS256 JWT granting the scopes asked for out, its certificate in the
    x5c header; the registry trusts that certificate. Stopped by `stop()`."""

    def __init__(self, root: Path, users: dict[str, str], service: str = "batchyard-tests"):
        self.users, self.service, self.issuer = users, service, "batchyard-test-issuer"
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "registry token issuer")])
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(self.key.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
                .not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .sign(self.key, hashes.SHA256()))
        self.certificate = root / "token-issuer.pem"
        self.certificate.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self.x5c = base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()
        self.issued = 0
        service_ = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                service_.answer(self)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.realm = f"http://127.0.0.1:{self.httpd.server_address[1]}/token"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def answer(self, request) -> None:
        sent = request.headers.get("Authorization", "")
        basic = base64.b64decode(sent[6:]).decode() if sent.startswith("Basic ") else ":"
        user, _, secret = basic.partition(":")
        if user not in self.users or not hmac.compare_digest(self.users[user], secret):
            request.send_response(401)
            request.send_header("Content-Length", "0")
            request.end_headers()
            return
        query = urllib.parse.parse_qs(urllib.parse.urlparse(request.path).query)
        access = []
        for scope in query.get("scope", []):
            kind, name, actions = scope.split(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        token = jwt.encode({"iss": self.issuer, "sub": user, "aud": self.service, "iat": now, "nbf": now - 5,
                            "exp": now + 300, "jti": str(now) + user, "access": access},
                           self.key, algorithm="RS256", headers={"x5c": [self.x5c]})
        self.issued += 1
        body = json.dumps({"token": token, "expires_in": 300}).encode()
        request.send_response(200)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(len(body)))
        request.end_headers()
        request.wfile.write(body)

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def tls_files(root: Path) -> tuple[Path, Path, Path]:
    """A CA (its PEM is a bundle to trust) and a certificate it signed for 127.0.0.1, with
    its key: (ca, certificate, key)."""
    now = datetime.datetime.now(datetime.timezone.utc)

    def issue(subject: str, key, issuer: x509.Name, signer, ca: bool) -> x509.Certificate:
        builder = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                                                                           subject)]))
                   .issuer_name(issuer).public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if not ca:
            builder = builder.add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        return builder.sign(signer, hashes.SHA256())

    ca_key, key = (rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(2))
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "registry test CA")])
    ca = issue("registry test CA", ca_key, ca_name, ca_key, True)
    cert = issue("127.0.0.1", key, ca_name, ca_key, False)
    paths = root / "ca.pem", root / "registry.pem", root / "registry.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


class Registry:
    """`docker-registry serve` on 127.0.0.1, stopped by `stop()`: anonymous, with htpasswd
    (basic) authentication for `users`, or with bearer tokens from `tokens`."""

    def __init__(self, root: Path, users: dict[str, str] | None = None, tokens: TokenService | None = None,
                 tls: tuple[Path, Path] | None = None):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.users = users or (tokens.users if tokens else {})
        config = {"version": 0.1, "log": {"level": "warn"},
                  "storage": {"filesystem": {"rootdirectory": str(root / "data")}, "delete": {"enabled": True}},
                  "http": {"addr": self.address}}
        if tls:
            config["http"]["tls"] = {"certificate": str(tls[0]), "key": str(tls[1])}
        if users:
            lines = [subprocess.run([need("htpasswd"), "-Bbn", name, secret], check=True, capture_output=True,
                                    text=True).stdout.strip() for name, secret in users.items()]
            (root / "htpasswd").write_text("\n".join(lines) + "\n")
            config["auth"] = {"htpasswd": {"realm": "batchyard-tests", "path": str(root / "htpasswd")}}
        if tokens:
            config["auth"] = {"token": {"realm": tokens.realm, "service": tokens.service, "issuer": tokens.issuer,
                                        "rootcertbundle": str(tokens.certificate)}}
        (root / "config.yml").write_text(json.dumps(config))  # JSON is YAML
        self.proc = subprocess.Popen([need("docker-registry"), "serve", str(root / "config.yml")],
                                     stdout=open(root / "registry.log", "ab"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{'https' if tls else 'http'}://{self.address}/v2/", timeout=2,
                                       context=ssl._create_unverified_context())  # only: is it up?
                break
            except urllib.error.HTTPError:
                break  # 401: up, and asking for credentials
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the registry did not start: {(root / 'registry.log').read_text()[-2000:]}")
                time.sleep(0.05)

    def push(self, layout: Path, name: str, user: str | None = None) -> str:
        """The image layout pushed as NAME (repository:tag); returns its full reference."""
        creds = ["--dest-creds", f"{user}:{self.users[user]}"] if user else []
        subprocess.run([need("skopeo"), "--insecure-policy", "copy", "--quiet", "--dest-tls-verify=false",
                        *creds, f"oci:{layout}:latest", f"docker://{self.address}/{name}"],
                       check=True, capture_output=True, timeout=120)
        return f"{self.address}/{name}"

    def corrupt(self, digest: str) -> None:
        """The registry's stored copy of a blob altered (same size): a pull must refuse it."""
        hex_ = digest.removeprefix("sha256:")
        data = self.root / "data/docker/registry/v2/blobs/sha256" / hex_[:2] / hex_ / "data"
        size = data.stat().st_size
        data.write_bytes(bytes(size))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def layer_digests(layout: Path) -> list[str]:
    index = json.loads((layout / "index.json").read_text())
    manifest = index["manifests"][0]["digest"].removeprefix("sha256:")
    return [layer["digest"] for layer in
            json.loads((layout / "blobs" / "sha256" / manifest).read_text())["layers"]]


def busybox_files(extra: dict[str, bytes] | None = None) -> dict[str, bytes | tuple]:
    """A small root filesystem: busybox and its applets, /etc/passwd and /etc/group."""
    files: dict[str, bytes | tuple] = {"bin/busybox": ("file", BUSYBOX.read_bytes(), 0o755)}
    for applet in APPLETS:
        files[f"bin/{applet}"] = ("link", "busybox")
    files["etc/passwd"] = b"root:x:0:0:root:/root:/bin/sh\nworker:x:1234:2345:worker:/home/worker:/bin/sh\n"
    files["etc/group"] = b"root:x:0:\nworkers:x:2345:\n"
    files["tmp/"] = ("dir", 0o1777)
    files.update(extra or {})
    return files


def layer_tar(files: dict[str, bytes | tuple]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, content in sorted(files.items()):
            info = tarfile.TarInfo(name.rstrip("/"))
            info.mtime = 1_700_000_000
            kind = content[0] if isinstance(content, tuple) else "file"
            if kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, content[1]
                tar.addfile(info)
            elif kind == "link":
                info.type, info.linkname = tarfile.SYMTYPE, content[1]
                tar.addfile(info)
            else:
                data, mode = (content[1], content[2]) if isinstance(content, tuple) else (content, 0o644)
                info.size, info.mode = len(data), mode
                tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def write_layout(path: Path, layers: list[tuple[dict, str]], config: dict | None = None) -> Path:
    """An OCI image layout at `path` (tag latest) of layers given as (files, compression),
    compression "gzip", "zstd" or "none"; config: the image config's `config` part."""
    blobs = path / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)

    def blob(data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return f"sha256:{digest}"

    descriptors, diff_ids = [], []
    for files, compression in layers:
        raw = layer_tar(files)
        diff_ids.append("sha256:" + hashlib.sha256(raw).hexdigest())
        packed, suffix = {"gzip": (gzip.compress(raw, compresslevel=1, mtime=0), "+gzip"),
                          "zstd": (zstandard.ZstdCompressor().compress(raw), "+zstd"),
                          "none": (raw, "")}[compression]
        descriptors.append({"mediaType": f"application/vnd.oci.image.layer.v1.tar{suffix}",
                            "digest": blob(packed), "size": len(packed)})
    config_data = json.dumps({"architecture": "amd64", "os": "linux", "config": config or {},
                              "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                      "digest": blob(config_data), "size": len(config_data)},
                           "layers": descriptors}).encode()
    (path / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (path / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": blob(manifest),
         "size": len(manifest), "annotations": {"org.opencontainers.image.ref.name": "latest"},
         "platform": {"architecture": "amd64", "os": "linux"}}]}))
    return path


class HoldingProxy:
    """A loopback HTTP proxy in front of a registry that counts the HEADs of manifests
    (how `docker pull` asks whether a tag moved) and, while `hold` is clear, keeps each
    HEAD's answer (fetched from the registry at once) until `hold` is set: a test can then
    make other pulls arrive while a check is out. Stopped by `stop()`."""

    def __init__(self, registry: str):
        self.registry = registry
        self.heads = 0
        self.held = 0  # HEADs asked and not yet answered
        self.hold = threading.Event()
        self.hold.set()
        self._lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                proxy.forward(self, "GET")

            def do_HEAD(self):
                proxy.forward(self, "HEAD")

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def forward(self, request, method: str) -> None:
        upstream = http.client.HTTPConnection(self.registry, timeout=30)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "connection")}
        upstream.request(method, request.path, headers=headers)
        answer = upstream.getresponse()
        body = answer.read()
        upstream.close()
        counted = method == "HEAD" and "/manifests/" in request.path
        if counted:
            with self._lock:
                self.heads += 1
                self.held += 1
            self.hold.wait(60)
        request.send_response(answer.status)
        for name, value in answer.getheaders():
            if name.lower() not in ("connection", "transfer-encoding"):
                request.send_header(name, value)
        request.end_headers()
        if method == "GET":
            request.wfile.write(body)
        if counted:
            with self._lock:
                self.held -= 1

    def stop(self) -> None:
        self.hold.set()
        self.httpd.shutdown()
        self.httpd.server_close()
