"""SharedKey request signing as azure-batch's BatchSharedKeyAuthPolicy does it (WIRE.md 1.3),
rebuilt on the server side to verify `Authorization: SharedKey {account}:{signature}`."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qs

from ...services.errors import Unauthenticated

# The order is part of the signature format; a missing header contributes "".
SIGNED_HEADERS = (
    "content-encoding",
    "content-language",
    "content-length",
    "content-md5",
    "content-type",
    "date",
    "if-modified-since",
    "if-match",
    "if-none-match",
    "if-unmodified-since",
    "range",
)

AUTH_FAILED_MESSAGE = (
    "Server failed to authenticate the request. Make sure the value of Authorization header "
    "is formed correctly including the signature."
)

_MONTHS = {m: i for i, m in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), start=1)}
# RFC 1123 exactly as the SDK writes it: "Thu, 26 Nov 2026 09:13:23 GMT". Parsed by hand so the
# result does not depend on the process locale (strptime's %a/%b do).
_RFC1123 = re.compile(
    r"^(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), (\d{2}) (" + "|".join(_MONTHS) + r") (\d{4}) "
    r"(\d{2}):(\d{2}):(\d{2}) GMT$")


def string_to_sign(method: str, raw_path: str, raw_query: str,
                   headers: list[tuple[str, str]], account: str, absent_length: str = "0") -> str:
    """The exact text the client signed. raw_path must still be percent-encoded.
    absent_length: what the client signed for a Content-Length the request does not carry."""
    present = {name.lower(): value for name, value in headers if value}
    if method not in ("GET", "HEAD") and "content-length" not in present:
        # The Python SDK signs "0" for a body-less request that carries no Content-Length.
        present["content-length"] = absent_length
    out = method + "\n"
    out += "".join(present.get(name, "") + "\n" for name in SIGNED_HEADERS)
    # The client picks names containing "ocp-" case-sensitively; HTTP servers may lower-case
    # names, so the only faithful server-side rule is to lower-case first (WIRE.md 1.3).
    ocp = sorted((name.lower(), value) for name, value in headers if "ocp-" in name.lower() and value)
    out += "".join(f"{name}:{value}\n" for name, value in ocp)
    out += f"/{account}{raw_path}"
    query = parse_qs(raw_query)  # form-decodes and drops blank values, as the client does
    out += "".join(f"\n{name}:{query[name][0]}" for name in sorted(query))
    return out


def signed_texts(method: str, raw_path: str, raw_query: str,
                 headers: list[tuple[str, str]], account: str) -> list[str]:
    """Every text a client may have signed for this request. The SDKs differ only on a
    request that carries no Content-Length: for any method but GET and HEAD the Python SDK
    signs "0", while the Node.js SDK (@azure/batch) signs "0" for POST only and "" for the
    others (its body-less DELETEs). Both describe the same empty body, so both are accepted
    there, and only there."""
    if method in ("GET", "HEAD") or _header(headers, "content-length") is not None:
        return [string_to_sign(method, raw_path, raw_query, headers, account)]
    return [string_to_sign(method, raw_path, raw_query, headers, account, length) for length in ("0", "")]


def sign(key: str, text: str) -> str:
    """base64(HMAC-SHA256(base64decode(key), utf8(text))). Raises binascii.Error on a bad key."""
    digest = hmac.new(base64.b64decode(key), text.encode("utf-8"), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def _failed(reason: str) -> Unauthenticated:
    return Unauthenticated("AuthenticationFailed", AUTH_FAILED_MESSAGE,
                           details=[{"key": "AuthenticationErrorDetail", "value": reason}])


def parse_authorization(value: str) -> tuple[str, str]:
    """`SharedKey {account}:{signature}` -> (account, signature)."""
    scheme, _, credential = (value or "").strip().partition(" ")
    if not scheme:
        raise _failed("The Authorization header is missing.")
    if scheme.lower() != "sharedkey":
        raise _failed(f"Authentication scheme {scheme} is not supported.")
    account, colon, signature = credential.strip().partition(":")
    if not colon or not account or not signature or " " in signature:
        raise _failed("The Authorization header is not in the correct format: "
                      "expected 'SharedKey {account}:{signature}'.")
    return account, signature


def _header(headers: list[tuple[str, str]], wanted: str) -> str | None:
    for name, value in headers:
        if name.lower() == wanted and value:
            return value
    return None


def parse_rfc1123(value: str) -> datetime | None:
    match = _RFC1123.match(value.strip())
    if not match:
        return None
    day, month, year, hour, minute, second = match.groups()
    try:
        return datetime(int(year), _MONTHS[month], int(day), int(hour), int(minute), int(second),
                        tzinfo=timezone.utc)
    except ValueError:  # e.g. 31 Feb
        return None


def _check_date(headers: list[tuple[str, str]], now: datetime, max_skew: timedelta) -> None:
    # Signing covers the date, so a captured request can only be replayed within the window.
    value = _header(headers, "ocp-date") or _header(headers, "date")
    if value is None:
        raise _failed("Request date header not specified: send ocp-date (or Date).")
    sent = parse_rfc1123(value)
    if sent is None:
        raise _failed(f"The request date '{value}' is not a valid RFC 1123 date.")
    if now.tzinfo is None:
        now = now.replace(tzinfo=timezone.utc)
    if abs(now - sent) > max_skew:
        raise _failed(f"The request time '{value}' is out of range: it must be within "
                      f"{int(max_skew.total_seconds() // 60)} minutes of the server time.")


def _matches(key: str, text: str, signature: bytes) -> bool:
    if not key:  # an unset key must never verify an empty-key signature
        return False
    try:
        expected = sign(key, text).encode("ascii")
    except (binascii.Error, ValueError, TypeError):
        return False  # a misconfigured key fails closed instead of crashing the request
    return hmac.compare_digest(expected, signature)


def verify(method: str, raw_path: str, raw_query: str, headers: list[tuple[str, str]],
           keys: list[str], account: str, signature: str, now: datetime,
           max_skew: timedelta = timedelta(minutes=15)) -> None:
    """Raise Unauthenticated unless the date is fresh and `signature` matches one of `keys`."""
    _check_date(headers, now, max_skew)
    texts = signed_texts(method, raw_path, raw_query, headers, account)
    # Bytes, not str: compare_digest refuses non-ASCII str, and the signature is client input.
    received = signature.encode("utf-8")
    # Every key and every form is tried (primary and secondary keys, so rotation works
    # without a flag day), without stopping at the first match.
    matched = [_matches(key, text, received) for key in keys for text in texts]
    if not any(matched):
        raise _failed(f"The MAC signature found in the HTTP request '{signature}' is not the same "
                      f"as any computed signature.")
