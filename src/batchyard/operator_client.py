"""The operator's commands talk to the running server as any client does: a token from its
token endpoint with the credentials of connection.json, then ARM requests over HTTPS
checked against its CA."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import click

from .services.batch.accounts import QUOTAS_ACTION

API_VERSION = "2024-07-01"
# What the commands read from connection.json (server.py writes it)
CONNECTION_KEYS = ("client_id", "client_secret", "authority", "tenant_id", "arm_endpoint", "subscription_id")


class OperatorClient:
    def __init__(self, connection_file: Path):
        if not connection_file.exists():
            raise click.ClickException(f"{connection_file} does not exist: is `batchyard serve` running there?")
        try:
            self.info = json.loads(connection_file.read_text())
            ca = self.info.get("ca_bundle")
            self._tls = ssl.create_default_context(cafile=ca) if ca else None
        except (OSError, ValueError, AttributeError, ssl.SSLError) as exc:
            raise click.ClickException(f"{connection_file} cannot be read as `batchyard serve` writes it: {exc}") \
                from None
        missing = [key for key in CONNECTION_KEYS if not isinstance(self.info.get(key), str)]
        if missing:
            raise click.ClickException(f"{connection_file} lacks {', '.join(missing)}: it is not one `batchyard "
                                       "serve` wrote")
        self._token = self._get_token()

    def _request(self, method: str, url: str, body: bytes | None = None, headers: dict | None = None) -> dict:
        request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(request, context=self._tls, timeout=60) as response:
                return json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            raise click.ClickException(f"{method} {urllib.parse.urlsplit(url).path}: {exc.code} {detail}") from None
        except (urllib.error.URLError, OSError) as exc:  # no server there (a stale connection.json), TLS, ...
            raise click.ClickException(f"{urllib.parse.urlsplit(url).netloc} does not answer: "
                                       f"{getattr(exc, 'reason', exc)}. Is `batchyard serve` running?") from None

    def _get_token(self) -> str:
        form = urllib.parse.urlencode({
            "grant_type": "client_credentials", "client_id": self.info["client_id"],
            "client_secret": self.info["client_secret"], "scope": "https://management.azure.com/.default"})
        url = f"{self.info['authority']}/{self.info['tenant_id']}/oauth2/v2.0/token"
        return self._request("POST", url, form.encode(),
                             {"Content-Type": "application/x-www-form-urlencoded"})["access_token"]

    def _arm(self, method: str, path: str, body: dict | None = None) -> dict:
        url = f"{self.info['arm_endpoint']}{path}?api-version={API_VERSION}"
        data = json.dumps(body).encode() if body is not None else None
        return self._request(method, url, data, {"Authorization": f"Bearer {self._token}",
                                                 "Content-Type": "application/json"})

    def account_id(self, name: str) -> str:
        accounts = self._arm("GET", f"/subscriptions/{self.info['subscription_id']}/providers/"
                                    "Microsoft.Batch/batchAccounts")["value"]
        for account in accounts:
            if account["name"].lower() == name.lower():
                return account["id"]
        raise click.ClickException(f"There is no Batch account named {name!r}.")

    def set_quotas(self, account: str, quotas: dict) -> dict:
        return self._arm("POST", f"{self.account_id(account)}/{QUOTAS_ACTION}", quotas)

    # service principals (api/principals.py) ------------------------------------------------

    def _principals(self, method: str, path: str = "", body: dict | None = None) -> dict:
        url = f"{self.info['arm_endpoint']}/batchyard/principals{path}"
        data = json.dumps(body).encode() if body is not None else None
        return self._request(method, url, data, {"Authorization": f"Bearer {self._token}",
                                                 "Content-Type": "application/json"})

    def create_principal(self, name: str, end: str | None) -> dict:
        return self._principals("POST", "", {"displayName": name, "endDateTime": end})

    def list_principals(self) -> list[dict]:
        return self._principals("GET")["value"]

    def delete_principal(self, client_id: str) -> None:
        self._principals("DELETE", "/" + urllib.parse.quote(client_id, safe=""))

    def add_secret(self, client_id: str, end: str | None, name: str) -> dict:
        return self._principals("POST", f"/{urllib.parse.quote(client_id, safe='')}/secrets",
                                {"endDateTime": end, "displayName": name})

    def remove_secret(self, client_id: str, key_id: str) -> None:
        self._principals("DELETE", f"/{urllib.parse.quote(client_id, safe='')}/secrets/"
                                   f"{urllib.parse.quote(key_id, safe='')}")
