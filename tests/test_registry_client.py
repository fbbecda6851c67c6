"""What a registry (or whoever answers as one) may not make the OCI client do
(runtime/oci_registry.py): send a login in clear off loopback, follow a redirect to plain
HTTP off loopback, or use a digest it names in a path or URL unchecked. A small registry
impostor on loopback answers; nothing the client is sent to off loopback is ever asked."""

from __future__ import annotations

import http.server
import json
import threading

import pytest

from batchyard.runtime.oci_registry import Login, RegistryClient, RegistryError, parse_reference

INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"


class Impostor:
    """Answers each path with a fixed (status, headers, body); records what was asked."""

    def __init__(self):
        self.answers: dict[str, tuple[int, dict, bytes]] = {}
        self.asked: list[str] = []
        impostor = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                impostor.asked.append(self.path)
                status, headers, body = impostor.answers.get(self.path.split("?")[0], (404, {}, b""))
                self.send_response(status)
                for name, value in {**headers, "Content-Length": str(len(body))}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.registry = f"127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def client(self, login: Login | None = None) -> RegistryClient:
        return RegistryClient(parse_reference(f"{self.registry}/app:1"), login, None, timeout=5)


@pytest.fixture(scope="module")
def impostor():
    server = Impostor()
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


def pull_fails(impostor, login=None) -> str:
    client = impostor.client(login)
    try:
        with pytest.raises(RegistryError) as failure:
            client.manifest()
    finally:
        client.close()
    return str(failure.value)


def test_the_login_never_goes_in_clear_off_loopback(impostor):
    impostor.answers["/v2/app/manifests/1"] = (
        401, {"WWW-Authenticate": 'Bearer realm="http://192.0.2.1/token",service="x"'}, b"")
    assert "not HTTPS" in pull_fails(impostor, Login("alice", "s3cret"))
    # a token service on loopback may speak plain HTTP; one that answers nonsense is a clear error
    impostor.answers["/token"] = (200, {"Content-Type": "application/json"}, b"<html>not json")
    impostor.answers["/v2/app/manifests/1"] = (
        401, {"WWW-Authenticate": f'Bearer realm="http://{impostor.registry}/token",service="x"'}, b"")
    assert "token" in pull_fails(impostor, Login("alice", "s3cret"))
    assert "/token?" in " ".join(impostor.asked)


def test_redirects_to_plain_http_off_loopback_are_not_followed(impostor):
    impostor.answers["/v2/app/manifests/1"] = (302, {"Location": "http://192.0.2.1/v2/app/manifests/1"}, b"")
    assert "plain HTTP" in pull_fails(impostor)
    impostor.answers["/v2/app/manifests/1"] = (302, {"Location": "/v2/app/manifests/moved"}, b"")
    impostor.answers["/v2/app/manifests/moved"] = (200, {}, b"[]")  # a loopback redirect is followed
    assert "not a JSON object" in pull_fails(impostor)


@pytest.mark.parametrize("document, reason", [
    ({"mediaType": INDEX, "manifests": [{"digest": "../../../v2/other/manifests/1",
                                         "platform": {"os": "linux", "architecture": "amd64"}}]},
     "the index names an unsupported digest '../../../v2/other/manifests/1'"),
    ({"schemaVersion": 2, "config": {"digest": "../../other/blobs/x"}, "layers": []},
     "the manifest names an unsupported digest '../../other/blobs/x'"),
    ({"mediaType": INDEX, "manifests": ["not an entry"]}, "has no image for linux/amd64"),  # skipped, not used
])
def test_digests_a_document_names_are_checked_before_use(impostor, document, reason):
    impostor.answers["/v2/app/manifests/1"] = (200, {"Content-Type": MANIFEST}, json.dumps(document).encode())
    impostor.asked.clear()
    assert reason in pull_fails(impostor)
    assert impostor.asked == ["/v2/app/manifests/1"]
