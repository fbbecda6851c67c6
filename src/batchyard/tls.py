"""A local certificate authority and a server certificate signed by it, made on first start."""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .private_files import private_dir, write_private
from .runtime.networks import SERVICE_ADDRESS


def _pem_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _san_entries(names: list[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for name in names:
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            out.append(x509.DNSName(name))
    return out


def _cert_covers(cert: x509.Certificate, names: list[str]) -> bool:
    """Whether the certificate names every entry of `names` (wildcards literally) and stays
    valid for a week more."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    now = dt.datetime.now(dt.timezone.utc)
    if cert.not_valid_after_utc < now + dt.timedelta(days=7):
        return False
    present = set(_san_entries(list(san.get_values_for_type(x509.DNSName)))) | \
        {x509.IPAddress(ip) for ip in san.get_values_for_type(x509.IPAddress)}
    return set(_san_entries(names)) <= present


def server_names(host: str, extra: list[str] = ()) -> list[str]:
    """What the server certificate names: loopback, the listening host, and `extra`
    (e.g. *.{batch host suffix})."""
    # SERVICE_ADDRESS: where machines reach the service, through their network's gateway
    return sorted({"localhost", "127.0.0.1", "::1", SERVICE_ADDRESS, host, *extra})


def ensure_certificates(tls_dir: Path, names: list[str]) -> tuple[Path, Path, Path]:
    """Returns (ca_bundle, server_cert, server_key) for a certificate naming `names` (see
    server_names); reuses what exists while it still fits, and makes a new one otherwise."""
    private_dir(tls_dir)
    ca_cert_path, ca_key_path = tls_dir / "ca.pem", tls_dir / "ca-key.pem"
    cert_path, key_path = tls_dir / "server.pem", tls_dir / "server-key.pem"
    now = dt.datetime.now(dt.timezone.utc)

    if ca_cert_path.exists() and ca_key_path.exists():
        ca_cert = x509.load_pem_x509_certificate(ca_cert_path.read_bytes())
        ca_key = serialization.load_pem_private_key(ca_key_path.read_bytes(), password=None)
    else:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Batchyard local CA")])
        ca_cert = (
            x509.CertificateBuilder()
            .subject_name(name).issuer_name(name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        write_private(ca_key_path, _pem_key(ca_key))
        write_private(ca_cert_path, ca_cert.public_bytes(serialization.Encoding.PEM))

    if cert_path.exists() and key_path.exists():
        existing = x509.load_pem_x509_certificate(cert_path.read_bytes())
        if existing.issuer == ca_cert.subject and _cert_covers(existing, names):
            return ca_cert_path, cert_path, key_path

    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Batchyard server")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=825))
        .add_extension(x509.SubjectAlternativeName(_san_entries(names)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    write_private(key_path, _pem_key(key))
    write_private(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return ca_cert_path, cert_path, key_path
