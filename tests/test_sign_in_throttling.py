"""Failed client-secret sign-ins throttled on a real `batchyard serve` with low limits, through
the unchanged azure-identity ClientSecretCredential and the portal's own sign-in form: a
client locked after its failures (even its right secret refused, 429 + Retry-After,
AADSTS50053), another client unaffected until the address's limit, the address then
locked for everyone, and both open again once the window has passed (the SDK itself waits
out Retry-After and retries)."""

from __future__ import annotations

import uuid

import pytest
import requests
from azure.core.exceptions import ClientAuthenticationError
from azure.identity import ClientSecretCredential

from conftest import Server
from portal_browser import csrf_of

SCOPE = "https://management.azure.com/.default"
WRONG = "not-the-secret-" + "q" * 24
LIMITS = {"BATCHYARD_SIGN_IN_FAILURES_PER_CLIENT": "2", "BATCHYARD_SIGN_IN_FAILURES_PER_ADDRESS": "4",
          "BATCHYARD_SIGN_IN_WINDOW_SECONDS": "6"}
# a window long enough for every step before the wait, even on a busy machine


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with Server(tmp_path_factory.mktemp("throttle") / "data", extra_env=LIMITS) as srv:
        yield srv


class Seen:
    """The token endpoint's answers as the SDK's own pipeline received them (not OpenID
    discovery's)."""

    def __init__(self):
        self.answers: list[tuple[int, str | None]] = []

    def __call__(self, pipeline_response):
        http = pipeline_response.http_response
        if "/oauth2/" in pipeline_response.http_request.url:
            self.answers.append((http.status_code, http.headers.get("Retry-After")))


def _credential(info, client_id, secret, seen, **options) -> ClientSecretCredential:
    return ClientSecretCredential(info["tenant_id"], client_id, secret, authority=info["authority"],
                                  disable_instance_discovery=True, connection_verify=info.get("ca_bundle"),
                                  raw_response_hook=seen, **options)


def _refused_by_sdk(info, client_id, secret) -> tuple[str, tuple[int, str | None]]:
    """One token request without the SDK's retries: the error's message and the answer seen."""
    seen = Seen()
    with pytest.raises(ClientAuthenticationError) as failed:
        _credential(info, client_id, secret, seen, retry_total=0).get_token(SCOPE)
    assert len(seen.answers) == 1, seen.answers
    return failed.value.message, seen.answers[0]


def _portal_sign_in(info, client_id, secret) -> requests.Response:
    http = requests.Session()
    http.verify = info.get("ca_bundle")
    http.trust_env = False
    form = http.get(info["portal_url"] + "signin", timeout=30)
    return http.post(info["portal_url"] + "signin", timeout=30, allow_redirects=False,
                     data={"csrf_token": csrf_of(form.text), "client_id": client_id, "client_secret": secret})


def test_failed_sign_ins_are_throttled_per_client_and_per_address_then_reset(server):
    info = server.info
    dev, secret = info["client_id"], info["client_secret"]
    token_url = f"{info['authority']}/{info['tenant_id']}/oauth2/v2.0/token"
    # successes never count: many in a row, and one makes a second principal
    for _ in range(3):
        token = _credential(info, dev, secret, Seen()).get_token(SCOPE).token
    other = requests.post(f"{info['authority']}/batchyard/principals", json={"displayName": "throttle-other"},
                          verify=info.get("ca_bundle"), timeout=30,
                          headers={"Authorization": f"Bearer {token}"}).json()

    # two wrong secrets for the development client: refused as Entra refuses them
    for _ in range(2):
        message, answer = _refused_by_sdk(info, dev, WRONG)
        assert answer == (401, None) and "AADSTS7000215" in message
    # then it is locked: the right secret too, without the secret being checked
    message, (status, retry_after) = _refused_by_sdk(info, dev, secret)
    assert status == 429 and 1 <= int(retry_after) <= 6 and "AADSTS50053" in message
    raw = requests.post(token_url, verify=info.get("ca_bundle"), timeout=30, data={
        "grant_type": "client_credentials", "client_id": dev, "client_secret": secret, "scope": SCOPE})
    body = raw.json()
    assert raw.status_code == 429 and int(raw.headers["Retry-After"]) >= 1
    assert body["error"] == "invalid_grant" and body["error_codes"] == [50053]
    assert "account is locked" in body["error_description"] and secret not in raw.text
    # the portal refuses it the same way, next to the form
    page = _portal_sign_in(info, dev, secret)
    assert page.status_code == 429 and int(page.headers["Retry-After"]) >= 1
    assert 'id="signin-error"' in page.text and "AADSTS50053" in page.text and secret not in page.text

    # another client is not locked by those failures
    assert _credential(info, other["clientId"], other["clientSecret"], Seen()).get_token(SCOPE).token
    # until its address reaches its limit: two more failures (unknown client ids) from here
    for _ in range(2):
        unknown = requests.post(token_url, verify=info.get("ca_bundle"), timeout=30, data={
            "grant_type": "client_credentials", "client_id": str(uuid.uuid4()), "client_secret": WRONG,
            "scope": SCOPE})
        assert unknown.status_code == 400 and unknown.json()["error_codes"] == [700016]
    message, (status, _) = _refused_by_sdk(info, other["clientId"], other["clientSecret"])
    assert status == 429 and "IP address" in message
    page = _portal_sign_in(info, other["clientId"], other["clientSecret"])
    assert page.status_code == 429 and "IP address" in page.text and other["clientSecret"] not in page.text

    # with its retries on (the default), the SDK waits out Retry-After and then gets its token
    seen = Seen()
    assert _credential(info, dev, secret, seen).get_token(SCOPE).token
    assert [status for status, _ in seen.answers] == [429, 200]
    assert _portal_sign_in(info, dev, secret).status_code == 303
    assert _portal_sign_in(info, other["clientId"], other["clientSecret"]).status_code == 303

    log = server.log.read_text(errors="replace")
    assert WRONG not in log and secret not in log and other["clientSecret"] not in log
