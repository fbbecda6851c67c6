"""Account endpoint forms, the certificate's names and the settings that refuse to combine."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509

from batchyard import azure_names
from batchyard.config import Settings
from batchyard.tls import ensure_certificates, server_names


def dns_names(cert_path: Path) -> set[str]:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    return set(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
               .get_values_for_type(x509.DNSName))


def test_account_endpoint_forms(tmp_path):
    s = Settings(data_dir=tmp_path, port=9443)
    assert s.account_endpoint("acct", "westus") == "127.0.0.1:9443/batch/acct"
    s.account_endpoints = "host"
    assert s.account_endpoint("acct", "westus") == "acct.batch.localhost:9443"
    s.azure_hostnames = True
    assert s.account_endpoint("acct", "West US") == "acct.westus.batch.azure.com"


def test_certificate_follows_the_host_suffix(tmp_path):
    first = server_names("127.0.0.1", ["one.test", "*.one.test"])
    ca, cert, _ = ensure_certificates(tmp_path, first)
    assert {"*.one.test", "one.test", "localhost"} <= dns_names(cert)
    ca_bytes, cert_bytes = ca.read_bytes(), cert.read_bytes()
    ensure_certificates(tmp_path, first)
    assert cert.read_bytes() == cert_bytes  # still fits: kept
    ensure_certificates(tmp_path, server_names("127.0.0.1", ["two.test", "*.two.test"]))
    assert "*.two.test" in dns_names(cert) and "*.one.test" not in dns_names(cert)
    assert ca.read_bytes() == ca_bytes  # the CA clients trust stays


def test_azure_certificate_names_cover_every_region_and_account_locations():
    names = azure_names.certificate_names({"West US", "Mars Base", "bad/name", ""})
    assert names[:2] == ["management.azure.com", "login.microsoftonline.com"]
    assert "*.westus.batch.azure.com" in names and "*.eastus2.batch.azure.com" in names
    assert "*.marsbase.batch.azure.com" in names
    assert not any("/" in n or n == "*..batch.azure.com" for n in names)


@pytest.mark.parametrize("args,message", [
    (["--batch-host-suffix", "localhost"], "at least two"),
    (["--batch-host-suffix", "bad_name.test"], "at least two"),
    (["--azure-hostnames", "--no-tls"], "needs TLS"),
])
def test_serve_refuses_settings_that_cannot_work(tmp_path, args, message):
    result = subprocess.run([sys.executable, "-m", "batchyard.cli", "serve", "--data-dir", str(tmp_path / "d"), *args],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and message in result.stderr
    assert not (tmp_path / "d").exists()


def test_hosts_needs_a_data_directory(tmp_path):
    result = subprocess.run([sys.executable, "-m", "batchyard.cli", "hosts", "--data-dir", str(tmp_path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "batchyard serve --data-dir" in result.stderr
