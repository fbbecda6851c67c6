"""Unit tests for the pure Batch helpers: SharedKey, OData, durations, VM sizes. No server."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta, timezone
from urllib.parse import urlsplit

import pytest
from azure.batch._patch import BatchSharedKeyAuthPolicy
from azure.core.credentials import AzureNamedKeyCredential
from azure.core.pipeline import PipelineContext, PipelineRequest
from azure.core.rest import HttpRequest

from batchyard.api.batch import sharedkey
from batchyard.store.keyset import KeyRange
from batchyard.services.batch import durations, odata, pool_spec, vm_sizes
from batchyard.services.errors import InvalidInput, Unauthenticated

ACCOUNT = "testacct"
KEY = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
DATE = "Thu, 26 Nov 2026 09:13:23 GMT"
NOW = datetime(2026, 11, 26, 9, 13, 23, tzinfo=timezone.utc)
JSON = "application/json; odata=minimalmetadata"


def detail(error, key):
    return next(d["value"] for d in error.details if d["key"] == key)


# ---------------------------------------------------------------------------------------------
# SharedKey: the WIRE.md 1.3 test vectors

VECTORS = [
    ("GET", "/pools/pool1", "api-version=2025-06-01", [("ocp-date", DATE)],
     "GET\n\n\n\n\n\n\n\n\n\n\n\nocp-date:Thu, 26 Nov 2026 09:13:23 GMT\n/testacct/pools/pool1\n"
     "api-version:2025-06-01",
     "NL8sNHoGq63jU2z/4+Llf1luyUgnOgSE/IhXoVoI7Ak="),
    ("POST", "/pools/pool1/resize", "api-version=2025-06-01",
     [("Content-Length", "122"), ("content-type", JSON), ("ocp-date", DATE)],
     "POST\n\n\n122\n\napplication/json; odata=minimalmetadata\n\n\n\n\n\n\nocp-date:Thu, 26 Nov 2026 "
     "09:13:23 GMT\n/testacct/pools/pool1/resize\napi-version:2025-06-01",
     "0V7WFb3iLy4Fp2mTbyn+QxVFX/6MStFT1yI90Y0voII="),
    ("GET", "/pools", "api-version=2025-06-01&maxresults=1&$filter=state%20eq%20%27active%27&$select=id,state",
     [("ocp-date", DATE)],
     "GET\n\n\n\n\n\n\n\n\n\n\n\nocp-date:Thu, 26 Nov 2026 09:13:23 GMT\n/testacct/pools\n"
     "$filter:state eq 'active'\n$select:id,state\napi-version:2025-06-01\nmaxresults:1",
     "hasgJPvE/Oxq/VY7mjKAhfEpRCaWPBax7tpXPPWWrfI="),
    ("GET", "/jobs/job1/tasks/t1/files/wd%2Fout%20dir%2Fresult.txt", "api-version=2025-06-01",
     [("ocp-date", "Thu, 26 Nov 2026 09:14:24 GMT"), ("ocp-range", "bytes=0-4")],
     "GET\n\n\n\n\n\n\n\n\n\n\n\nocp-date:Thu, 26 Nov 2026 09:14:24 GMT\nocp-range:bytes=0-4\n"
     "/testacct/jobs/job1/tasks/t1/files/wd%2Fout%20dir%2Fresult.txt\napi-version:2025-06-01",
     "L4ypjn+trRyK8JEMrwroOhRPcoMaJHYtYBYMVAVakF0="),
]


@pytest.mark.parametrize("method,path,query,headers,expected_text,expected_sig", VECTORS)
def test_sharedkey_vectors(method, path, query, headers, expected_text, expected_sig):
    # The SDK's other headers ride along and must not change anything.
    headers = [("User-Agent", "azsdk-python-batch/15.1.0"), ("Accept", "application/json"),
               ("client-request-id", "a15c41b0"), *headers]
    text = sharedkey.string_to_sign(method, path, query, headers, ACCOUNT)
    assert text == expected_text
    assert sharedkey.sign(KEY, text) == expected_sig
    when = sharedkey.parse_rfc1123(dict(headers)["ocp-date"])
    sharedkey.verify(method, path, query, headers, [KEY], ACCOUNT, expected_sig, now=when)


def test_sharedkey_vector_with_lowercased_and_capitalised_names():
    # Servers that normalise header case must still arrive at the same string.
    for spell in (str.lower, str.title):
        headers = [(spell("Content-Length"), "122"), (spell("Content-Type"), JSON), (spell("ocp-date"), DATE)]
        text = sharedkey.string_to_sign("POST", "/pools/pool1/resize", "api-version=2025-06-01", headers, ACCOUNT)
        assert sharedkey.sign(KEY, text) == "0V7WFb3iLy4Fp2mTbyn+QxVFX/6MStFT1yI90Y0voII="


OBSERVED = [
    ("POST", "/pools/pool1/stopresize", "api-version=2025-06-01", [("Content-Length", "0")],
     "POST\n\n\n0\n\n\n\n\n\n\n\n\nocp-date:D\n/testacct/pools/pool1/stopresize\napi-version:2025-06-01"),
    # No Content-Length at all on a DELETE: "0" is signed anyway.
    ("DELETE", "/pools/pool1", "api-version=2025-06-01", [],
     "DELETE\n\n\n0\n\n\n\n\n\n\n\n\nocp-date:D\n/testacct/pools/pool1\napi-version:2025-06-01"),
    ("GET", "/prefix/acct1/pools/pool1", "api-version=2025-06-01", [("If-Match", '"0x1"')],
     'GET\n\n\n\n\n\n\n\n"0x1"\n\n\n\nocp-date:D\n/testacct/prefix/acct1/pools/pool1\napi-version:2025-06-01'),
    ("GET", "/prefix/acct1/pools",
     "api-version=2025-06-01&$filter=id%20eq%20%27a%2Bb%27%20and%20state%20eq%20%27active%27&$expand=stats",
     [],
     "GET\n\n\n\n\n\n\n\n\n\n\n\nocp-date:D\n/testacct/prefix/acct1/pools\n$expand:stats\n"
     "$filter:id eq 'a+b' and state eq 'active'\napi-version:2025-06-01"),
    ("GET", "/prefix/acct1/pools/pool1", "api-version=2025-06-01&timeOut=30&$select=id", [],
     "GET\n\n\n\n\n\n\n\n\n\n\n\nocp-date:D\n/testacct/prefix/acct1/pools/pool1\n$select:id\n"
     "api-version:2025-06-01\ntimeOut:30"),
]


@pytest.mark.parametrize("method,path,query,headers,expected", OBSERVED)
def test_sharedkey_observed_strings(method, path, query, headers, expected):
    text = sharedkey.string_to_sign(method, path, query, [*headers, ("ocp-date", "D")], ACCOUNT)
    assert text == expected


def test_string_to_sign_query_rules():
    # Case-sensitive code-point order, '+' is a space, blank values dropped, first value wins.
    text = sharedkey.string_to_sign("GET", "/x", "timeOut=5&maxresults=2&$skiptoken=a+b&empty=&recursive=true"
                                    "&api-version=1&api-version=2", [], ACCOUNT)
    assert text.endswith("/testacct/x\n$skiptoken:a b\napi-version:1\nmaxresults:2\nrecursive:true\ntimeOut:5")


def test_string_to_sign_ocp_headers_sorted_and_blank_ignored():
    text = sharedkey.string_to_sign("GET", "/x", "", [("ocp-range", "bytes=0-1"), ("Ocp-Date", DATE),
                                                      ("ocp-empty", "")], ACCOUNT)
    assert text.endswith(f"ocp-date:{DATE}\nocp-range:bytes=0-1\n/testacct/x")


def sdk_sign(method: str, url: str, headers: dict | None = None, body: dict | None = None) -> HttpRequest:
    request = HttpRequest(method, url, headers=headers or {}, json=body)
    policy = BatchSharedKeyAuthPolicy(AzureNamedKeyCredential(ACCOUNT, KEY))
    policy.on_request(PipelineRequest(request, PipelineContext(None)))
    return request


@pytest.mark.parametrize("method,url,headers,body", [
    ("GET", "https://h/prefix/acct1/jobs/j1/tasks/t1/files/wd%2Fout%20dir%2Fr.txt?api-version=2025-06-01",
     {"ocp-range": "bytes=0-4", "Accept": "application/octet-stream"}, None),
    ("GET", "https://h/pools?api-version=2025-06-01&maxresults=1&$filter=state%20eq%20%27active%27"
            "&$select=id,state&timeOut=30", {"If-None-Match": '"0x2"'}, None),
    ("POST", "https://h/pools/p1/resize?api-version=2025-06-01",
     {"content-type": JSON}, {"targetDedicatedNodes": 3, "resizeTimeout": "PT10M00S"}),
    ("DELETE", "https://h/pools/p%2B1?api-version=2025-06-01", {}, None),
])
def test_roundtrip_with_real_sdk_policy(method, url, headers, body):
    request = sdk_sign(method, url, headers, body)
    received = list(request.headers.items())
    scheme = request.headers["Authorization"].split(" ", 1)[0]
    account, signature = sharedkey.parse_authorization(request.headers["Authorization"])
    assert (scheme, account) == ("SharedKey", ACCOUNT)
    parts = urlsplit(url)
    now = datetime.now(timezone.utc)
    sharedkey.verify(method, parts.path, parts.query, received, ["bm90LXRoaXMtb25l", KEY], ACCOUNT, signature, now)
    # As an HTTP server hands them over: lower-cased names.
    lowered = [(name.lower(), value) for name, value in received]
    sharedkey.verify(method, parts.path, parts.query, lowered, [KEY], ACCOUNT, signature, now)
    # A different path (decoded, as a careless framework would pass it) does not verify.
    with pytest.raises(Unauthenticated):
        sharedkey.verify(method, parts.path.replace("%2F", "/").replace("%2B", "+") + "x", parts.query,
                         received, [KEY], ACCOUNT, signature, now)


def signed_vector():
    method, path, query, headers, _, signature = VECTORS[0]
    return method, path, query, headers, signature


def test_verify_refuses_tampered_signature_without_leaking():
    method, path, query, headers, signature = signed_vector()
    forged = signature[:-2] + ("A=" if signature[-2] != "A" else "B=")
    with pytest.raises(Unauthenticated) as caught:
        sharedkey.verify(method, path, query, headers, [KEY], ACCOUNT, forged, NOW)
    error = caught.value
    assert error.code == "AuthenticationFailed"
    assert error.message == sharedkey.AUTH_FAILED_MESSAGE
    reason = detail(error, "AuthenticationErrorDetail")
    assert reason == (f"The MAC signature found in the HTTP request '{forged}' is not the same as any "
                      f"computed signature.")
    assert KEY not in reason and signature not in reason


def test_verify_refuses_tampered_request():
    method, path, query, headers, signature = signed_vector()
    with pytest.raises(Unauthenticated):
        sharedkey.verify(method, "/pools/pool2", query, headers, [KEY], ACCOUNT, signature, NOW)
    with pytest.raises(Unauthenticated):
        sharedkey.verify(method, path, query, headers, [KEY], "otheracct", signature, NOW)


def test_verify_survives_bad_keys_and_odd_signatures():
    method, path, query, headers, signature = signed_vector()
    # Invalid base64 and empty keys are skipped; the good key still verifies.
    sharedkey.verify(method, path, query, headers, ["not base64!!!", "abc", "", KEY], ACCOUNT, signature, NOW)
    with pytest.raises(Unauthenticated):
        sharedkey.verify(method, path, query, headers, ["abc", ""], ACCOUNT, signature, NOW)
    with pytest.raises(Unauthenticated):
        sharedkey.verify(method, path, query, headers, [], ACCOUNT, signature, NOW)
    with pytest.raises(Unauthenticated):  # non-ASCII must not make compare_digest raise TypeError
        sharedkey.verify(method, path, query, headers, [KEY], ACCOUNT, "sïgnature", NOW)


@pytest.mark.parametrize("skew", [timedelta(minutes=16), timedelta(minutes=-16), timedelta(days=400)])
def test_verify_refuses_stale_or_future_date(skew):
    method, path, query, headers, signature = signed_vector()
    with pytest.raises(Unauthenticated) as caught:
        sharedkey.verify(method, path, query, headers, [KEY], ACCOUNT, signature, NOW + skew)
    assert "out of range" in detail(caught.value, "AuthenticationErrorDetail")


def test_verify_accepts_within_window_and_naive_now():
    method, path, query, headers, signature = signed_vector()
    sharedkey.verify(method, path, query, headers, [KEY], ACCOUNT, signature, NOW + timedelta(minutes=14))
    sharedkey.verify(method, path, query, headers, [KEY], ACCOUNT, signature, NOW.replace(tzinfo=None))


def test_verify_uses_date_header_when_no_ocp_date():
    headers = [("Date", DATE)]
    text = sharedkey.string_to_sign("GET", "/pools", "", headers, ACCOUNT)
    sharedkey.verify("GET", "/pools", "", headers, [KEY], ACCOUNT, sharedkey.sign(KEY, text), NOW)


@pytest.mark.parametrize("headers,reason", [
    ([], "not specified"),
    ([("ocp-date", "")], "not specified"),
    ([("ocp-date", "2026-11-26T09:13:23Z")], "RFC 1123"),
    ([("ocp-date", "Thu, 31 Feb 2026 09:13:23 GMT")], "RFC 1123"),
    ([("ocp-date", "Thu, 26 Nov 2026 09:13:23 +0100")], "RFC 1123"),
])
def test_verify_refuses_missing_or_bad_date(headers, reason):
    text = sharedkey.string_to_sign("GET", "/pools", "", headers, ACCOUNT)
    with pytest.raises(Unauthenticated) as caught:
        sharedkey.verify("GET", "/pools", "", headers, [KEY], ACCOUNT, sharedkey.sign(KEY, text), NOW)
    assert caught.value.code == "AuthenticationFailed"
    assert reason in detail(caught.value, "AuthenticationErrorDetail")


def test_parse_authorization():
    assert sharedkey.parse_authorization("SharedKey testacct:abc/+=") == ("testacct", "abc/+=")
    assert sharedkey.parse_authorization("sharedkey  acct:sig") == ("acct", "sig")


@pytest.mark.parametrize("value", ["", "SharedKey", "SharedKey acct", "SharedKey :sig", "SharedKey acct:",
                                   "Bearer abc.def", "Basic dXNlcjpwYXNz", "SharedKey acct:si g"])
def test_parse_authorization_malformed(value):
    with pytest.raises(Unauthenticated) as caught:
        sharedkey.parse_authorization(value)
    assert caught.value.code == "AuthenticationFailed"
    assert caught.value.message.startswith("Server failed to authenticate the request.")
    assert caught.value.details[0]["key"] == "AuthenticationErrorDetail"


# ---------------------------------------------------------------------------------------------
# OData $filter

POOLS = [
    {"id": "pool-a", "state": "active", "allocationState": "steady", "targetDedicatedNodes": 2,
     "enableAutoScale": False, "creationTime": "2025-01-01T10:00:00.1234567Z",
     "executionInfo": {"exitCode": 0, "result": "success"}},
    {"id": "pool-b", "state": "deleting", "allocationState": "resizing", "targetDedicatedNodes": 5,
     "enableAutoScale": True, "creationTime": "2025-06-01T00:00:00Z",
     "executionInfo": {"exitCode": 3, "result": "failure"}},
    {"id": "Other's", "state": "active", "allocationState": "stopping", "targetDedicatedNodes": 0,
     "creationTime": "2024-12-31T23:59:59Z"},
]


def ids(text):
    predicate = odata.compile_filter(text)
    return [pool["id"] for pool in POOLS if predicate(pool)]


@pytest.mark.parametrize("text,expected", [
    (None, ["pool-a", "pool-b", "Other's"]),
    ("  ", ["pool-a", "pool-b", "Other's"]),
    ("state eq 'active'", ["pool-a", "Other's"]),
    ("state eq 'Active'", ["pool-a", "Other's"]),  # enum-like values ignore case
    ("state ne 'active'", ["pool-b"]),
    ("targetDedicatedNodes gt 2", ["pool-b"]),
    ("targetDedicatedNodes ge 2", ["pool-a", "pool-b"]),
    ("targetDedicatedNodes lt 2", ["Other's"]),
    ("targetDedicatedNodes le 2", ["pool-a", "Other's"]),
    ("2 lt targetDedicatedNodes", ["pool-b"]),  # literal first
    ("targetDedicatedNodes eq -1", []),
    ("enableAutoScale eq true", ["pool-b"]),
    ("enableAutoScale eq false", ["pool-a"]),  # missing property: false, not "not true"
    ("enableAutoScale ne true", ["pool-a"]),
    ("enableAutoScale", ["pool-b"]),
    ("enableAutoScale eq null", ["Other's"]),
    ("enableAutoScale ne null", ["pool-a", "pool-b"]),
    ("targetDedicatedNodes eq true", []),  # bool never equals a number
    ("id eq 'other''s'", ["Other's"]),
    ("executionInfo/exitCode eq 0", ["pool-a"]),
    ("executionInfo.exitCode gt 0", ["pool-b"]),
    ("executionInfo/result eq 'failure'", ["pool-b"]),
    ("executionInfo/missing/deeper eq 1", []),
    ("noSuchProperty ne 'x'", []),
    ("creationTime gt datetime'2025-01-01T00:00:00Z'", ["pool-a", "pool-b"]),
    ("creationTime lt DateTime'2025-01-01T10:00:00.5'", ["pool-a", "Other's"]),
    ("creationTime ge 2025-06-01T00:00:00Z", ["pool-b"]),
    ("state eq 'active' and targetDedicatedNodes gt 0", ["pool-a"]),
    ("state eq 'deleting' or targetDedicatedNodes eq 0", ["pool-b", "Other's"]),
    # and binds tighter than or: a or (b and c)
    ("id eq 'pool-a' or state eq 'active' and targetDedicatedNodes gt 5", ["pool-a"]),
    ("(id eq 'pool-a' or state eq 'active') and targetDedicatedNodes gt 0", ["pool-a"]),
    ("not state eq 'active'", ["pool-b"]),
    ("not (state eq 'active' or id eq 'pool-b')", []),
    ("not not enableAutoScale", ["pool-b"]),
    ("((state eq 'active'))", ["pool-a", "Other's"]),
    ("startswith(id,'pool-')", ["pool-a", "pool-b"]),
    ("startswith(id, 'POOL-')", []),  # startswith is case-sensitive
    ("startswith(executionInfo/result,'fail') eq true", ["pool-b"]),
    ("startswith(id,'pool') eq false", ["Other's"]),
    ("startswith(id,'pool') and not allocationState eq 'steady'", ["pool-b"]),
    ("state EQ 'active' AND id Ne 'pool-a'", ["Other's"]),  # keywords in any case
])
def test_filter(text, expected):
    assert ids(text) == expected


@pytest.mark.parametrize("text", [
    "state eq", "state 'active'", "eq 'active'", "state eq 'active", "state eq 'active' and",
    "(state eq 'active'", "state eq 'active')", "state eq 'a' or or id eq 'b'", "state lk 'a'",
    "state eq 'a' id eq 'b'", "'a' eq 'b'", "state eq state", "startswith(id)", "startswith('x','y')",
    "endswith(id,'x')", "substringof('x',id)", "state eq 'a' #", "creationTime gt datetime'yesterday'",
    "startswith(id,'x') gt true", "5", "'text'", "state eq 1abc", "(" * 200 + "id eq 'x'" + ")" * 200,
    "not", "()", "state eq 'a',", "targetDedicatedNodes eq " + "9" * 5000,
])
def test_filter_syntax_errors(text):
    with pytest.raises(InvalidInput) as caught:
        odata.compile_filter(text)
    error = caught.value
    assert error.code == "InvalidQueryParameterValue"
    assert error.message == "The value for one of the HTTP query parameters is not in the correct format."
    assert detail(error, "QueryParameterName") == "$filter"
    assert detail(error, "QueryParameterValue") == text
    assert detail(error, "Reason")


def test_filter_unterminated_string_reason():
    with pytest.raises(InvalidInput) as caught:
        odata.compile_filter("state eq 'active")
    assert "Unterminated string" in detail(caught.value, "Reason")


def test_filter_property_names_are_case_sensitive():
    assert ids("State eq 'active'") == []


@pytest.mark.parametrize("text,state,ids", [
    ("state eq 'Active'", "active", KeyRange()),
    ("id gt 'a' and state eq 'running' and executionInfo/exitCode eq 0", "running", KeyRange()),
    ("(state eq 'active')", "active", KeyRange()),  # with no or/not, parentheses only group
    ("'active' eq state", "active", KeyRange()),
    ("state eq 'active' or id eq 'x'", None, KeyRange()),  # a match need not be active
    ("not state eq 'active'", None, KeyRange()),
    ("State eq 'active'", None, KeyRange()),  # another property: names are case-sensitive
    ("state ne 'active'", None, KeyRange()),
    ("state eq 3", None, KeyRange()),
    (None, None, KeyRange()),
    ("state eq 'active", None, KeyRange()),  # malformed: compile_filter reports it
    # ids: keys are lower-cased ids, so a range of keys covers every case of the id
    ("id eq 'Task-7'", None, KeyRange("task-7", "task-7\0")),
    ("startswith(id, 'T1') and state eq 'completed'", "completed", KeyRange("t1", "t1\U0010ffff")),
    ("startswith(id, 't') and startswith(id, 't12')", None, KeyRange("t12", "t12\U0010ffff")),
    ("startswith(id, 't1') and id eq 't15'", None, KeyRange("t15", "t15\0")),
    ("startswith(id, 't1') eq false", None, KeyRange()),  # the tasks it excludes
    ("startswith(id, 't1') or id eq 'x'", None, KeyRange()),
    ("startswith(commandLine, 'x')", None, KeyRange()),
    ("id eq 'tâche'", None, KeyRange()),  # non-ASCII: case mappings are not char by char
    ("state eq 'active' AND id eq 'X'", "active", KeyRange("x", "x\0")),  # keywords in any case
    ("state eq 'active' Or id eq 'x'", None, KeyRange()),
    ("NOT state eq 'active'", None, KeyRange()),
    ("startswith(id, 't1') ne true", None, KeyRange()),
])
def test_a_filter_narrows_the_store_query_only_by_what_every_match_holds(text, state, ids):
    assert odata.narrowing(text) == odata.Narrowing(state, ids)


# ---------------------------------------------------------------------------------------------
# $select and maxresults

def test_select():
    pool = {"odata.metadata": "m", "id": "p", "state": "active", "vmSize": "x", "eTag": "0x1"}
    assert odata.apply_select(pool, "id, state,nothere") == {"odata.metadata": "m", "id": "p", "state": "active"}
    assert odata.apply_select(pool, None) == pool
    assert odata.apply_select(pool, "") == pool
    assert odata.apply_select(pool, "*") == pool
    assert list(odata.apply_select(pool, "eTag,id")) == ["odata.metadata", "id", "eTag"]  # wire order kept


@pytest.mark.parametrize("select", ["id,", ",id", "id,,state", "id state", "executionInfo/exitCode", " , "])
def test_select_invalid(select):
    with pytest.raises(InvalidInput) as caught:
        odata.apply_select({"id": "p"}, select)
    assert caught.value.code == "InvalidQueryParameterValue"
    assert detail(caught.value, "QueryParameterName") == "$select"
    assert detail(caught.value, "QueryParameterValue") == select


@pytest.mark.parametrize("value,expected", [
    (None, 1000), ("", 1000), ("1", 1), ("10", 10), (" 25 ", 25), ("1000", 1000), ("1001", 1000),
    ("99999999999999999999999", 1000), ("007", 7),
])
def test_max_results(value, expected):
    assert odata.parse_max_results(value) == expected


def test_max_results_custom_bounds():
    assert odata.parse_max_results(None, default=50, maximum=100) == 50
    assert odata.parse_max_results("500", default=50, maximum=100) == 100


@pytest.mark.parametrize("value", ["0", "-1", "abc", "1.5", "1_000", "+5", "١٢", "1e3", "000"])
def test_max_results_invalid(value):
    with pytest.raises(InvalidInput) as caught:
        odata.parse_max_results(value)
    assert caught.value.code == "InvalidQueryParameterValue"
    assert detail(caught.value, "QueryParameterName") == "maxresults"
    assert detail(caught.value, "QueryParameterValue") == value


# ---------------------------------------------------------------------------------------------
# Durations

@pytest.mark.parametrize("text,expected", [
    ("PT15M00S", timedelta(minutes=15)),
    ("PT01M30S", timedelta(seconds=90)),
    ("PT02H00M00S", timedelta(hours=2)),
    ("P1D", timedelta(days=1)),
    ("P1DT02H00M03S", timedelta(days=1, hours=2, seconds=3)),
    ("PT01.5S", timedelta(seconds=1.5)),
    ("P", timedelta(0)),
    ("PT0S", timedelta(0)),
    ("PT15M", timedelta(minutes=15)),
    ("PT05M00S", timedelta(minutes=5)),
    ("PT36H", timedelta(hours=36)),
    ("P2W", timedelta(weeks=2)),
    ("P1W1D", timedelta(days=8)),
    ("PT0.0000001S", timedelta(0)),  # one tick is below a microsecond
    ("PT1.1234567S", timedelta(seconds=1, microseconds=123456)),
    ("P10675199DT2H48M5.4775807S", durations.TIMESPAN_MAX),
])
def test_parse_duration(text, expected):
    assert durations.parse_duration(text, "resizeTimeout") == expected


def test_sdk_written_durations_parse():
    from azure.batch._utils.model_base import _timedelta_as_isostr
    for td in (timedelta(0), timedelta(minutes=15), timedelta(seconds=1.5), timedelta(days=3, seconds=7),
               timedelta(hours=25, microseconds=1)):
        assert durations.parse_duration(_timedelta_as_isostr(td), "x") == td


@pytest.mark.parametrize("text", [
    "", "15 minutes", "-PT5M", "PT-5M", "PT", "P1DT", "PT5", "T5M", "pt15m", "P1Y", "P1M", "PT1H2H",
    "PT1M2H", "PT.5S", "PT1.S", "P1.5D", "P10675199DT2H48M5.4775808S", "P99999999999D", "PT15M ", None, 900,
    "P" + "9" * 5000 + "D",
])
def test_parse_duration_invalid(text):
    with pytest.raises(InvalidInput) as caught:
        durations.parse_duration(text, "resizeTimeout")
    error = caught.value
    assert error.code == "InvalidPropertyValue"
    assert error.message == "The value provided for one of the properties in the request body is invalid."
    assert detail(error, "PropertyName") == "resizeTimeout"
    assert detail(error, "PropertyValue") == str(text)
    assert detail(error, "Reason")


def test_duration_years_reason():
    with pytest.raises(InvalidInput) as caught:
        durations.parse_duration("P1Y", "retentionTime")
    assert "Years and months" in detail(caught.value, "Reason")


@pytest.mark.parametrize("td,expected", [
    (timedelta(0), "PT0S"),
    (timedelta(minutes=15), "PT15M"),
    (timedelta(hours=1, minutes=30), "PT1H30M"),
    (timedelta(days=1, hours=2), "P1DT2H"),
    (timedelta(days=1), "P1D"),
    (timedelta(seconds=1.5), "PT1.5S"),
    (timedelta(microseconds=1), "PT0.000001S"),
    (timedelta(days=2, hours=3, minutes=4, seconds=5), "P2DT3H4M5S"),
    (timedelta(minutes=-5), "-PT5M"),
    (durations.TIMESPAN_MAX, "P10675199DT2H48M5.4775807S"),
    (timedelta.max, "P10675199DT2H48M5.4775807S"),
    (timedelta.min, "-P10675199DT2H48M5.4775808S"),
])
def test_format_duration(td, expected):
    assert durations.format_duration(td) == expected


def test_format_parse_roundtrip():
    for td in (timedelta(0), timedelta(seconds=59.25), timedelta(days=400, hours=23), durations.TIMESPAN_MAX):
        assert durations.parse_duration(durations.format_duration(td), "x") == td


# ---------------------------------------------------------------------------------------------
# VM sizes

@pytest.mark.parametrize("name,cores,memory_mib", [
    ("Standard_D2s_v3", 2, 8192),
    ("standard_d2s_v3", 2, 8192),
    ("D2S_V3", 2, 8192),
    ("Standard_A1_v2", 1, 2048),
    ("Standard_A2m_v2", 2, 16384),
    ("Standard_DS1_v2", 1, 3584),
    ("Standard_D5_v2", 16, 57344),
    ("Standard_E64s_v3", 64, 442368),
    ("Standard_E96s_v5", 96, 688128),
    ("Standard_F72s_v2", 72, 147456),
    ("Standard_B1s", 1, 1024),
    ("Standard_B1ms", 1, 2048),
    ("Standard_D96ds_v5", 96, 393216),
    ("Standard_D2as_v5", 2, 8192),
    ("Standard_NC6s_v3", 6, 114688),
    ("  Standard_F2s_v2 ", 2, 4096),
])
def test_vm_size_lookup(name, cores, memory_mib):
    size = vm_sizes.lookup(name)
    assert size is not None and (size.cores, size.memory_mib) == (cores, memory_mib)


def test_vm_size_canonical_name_and_unknowns():
    assert vm_sizes.lookup("standard_nc6s_v3").name == "Standard_NC6s_v3"
    for name in ("Standard_D3s_v3", "Standard_Nope", "", "standard_", None):
        assert vm_sizes.lookup(name) is None


def test_vm_size_catalog_is_consistent():
    sizes = vm_sizes.all_sizes()
    names = [size.name.lower() for size in sizes]
    assert len(names) == len(set(names))
    assert all(size.name.startswith("Standard_") and size.cores > 0 and size.memory_mib >= 512 for size in sizes)
    required = ["A8_v2", "D64s_v3", "D2_v3", "D96s_v5", "D2ds_v5", "E2s_v3", "E2s_v5", "F2s_v2", "B8ms",
                "DS5_v2", "D1_v2"]
    assert all(vm_sizes.lookup(name) for name in required)
    with pytest.raises(dataclasses.FrozenInstanceError):
        sizes[0].cores = 3


# Signed by @azure/batch 10.2.0's BatchSharedKeyCredentials (Node.js) for KEY, with ocp-date DATE:
# it signs an empty Content-Length for a body-less DELETE, where the Python SDK signs "0".
NODE_DELETE_SIG = "g00HOvTn+vhB6JkU52jRPURX0jPqftsF3tWDTGpU62E="
NODE_QUERY = "api-version=2022-01-01.15.0"


def test_sharedkey_accepts_node_sdk_empty_content_length_without_one():
    now = sharedkey.parse_rfc1123(DATE)
    sharedkey.verify("DELETE", "/pools/pool1", NODE_QUERY, [("ocp-date", DATE)], [KEY], ACCOUNT,
                     NODE_DELETE_SIG, now=now)
    # The Python SDK's form of the same request is accepted too.
    python_sig = sharedkey.sign(KEY, sharedkey.string_to_sign("DELETE", "/pools/pool1", NODE_QUERY,
                                                              [("ocp-date", DATE)], ACCOUNT))
    assert python_sig != NODE_DELETE_SIG
    sharedkey.verify("DELETE", "/pools/pool1", NODE_QUERY, [("ocp-date", DATE)], [KEY], ACCOUNT, python_sig, now=now)


@pytest.mark.parametrize("length", ["0", "12"])
def test_sharedkey_empty_content_length_not_when_one_is_sent(length):
    # A Content-Length that is sent is signed as sent: Node's signature over "" no longer fits.
    with pytest.raises(Unauthenticated):
        sharedkey.verify("DELETE", "/pools/pool1", NODE_QUERY, [("Content-Length", length), ("ocp-date", DATE)],
                         [KEY], ACCOUNT, NODE_DELETE_SIG, now=sharedkey.parse_rfc1123(DATE))


def test_sharedkey_get_has_one_form():
    # GET and HEAD sign "" in both SDKs; a signature over "0" is refused.
    text = sharedkey.string_to_sign("GET", "/pools/pool1", NODE_QUERY, [("Content-Length", "0"), ("ocp-date", DATE)],
                                    ACCOUNT)
    with pytest.raises(Unauthenticated):
        sharedkey.verify("GET", "/pools/pool1", NODE_QUERY, [("ocp-date", DATE)], [KEY], ACCOUNT,
                         sharedkey.sign(KEY, text), now=sharedkey.parse_rfc1123(DATE))


def test_sharedkey_node_signature_is_bound_to_the_request():
    now = sharedkey.parse_rfc1123(DATE)
    for method, path in (("DELETE", "/pools/pool2"), ("POST", "/pools/pool1"), ("PUT", "/pools/pool1")):
        with pytest.raises(Unauthenticated):
            sharedkey.verify(method, path, NODE_QUERY, [("ocp-date", DATE)], [KEY], ACCOUNT, NODE_DELETE_SIG, now=now)


def test_the_urls_of_added_tasks_come_from_their_job_s_url_and_are_not_remembered():
    """A collection adds up to 100 tasks, and its answer holds each one's URL: made from the
    job's tasks URL, made once, with each id percent-encoded as every URL's segments are, and
    none kept in the cache of URLs that pages ask for again and again."""
    from batchyard.api.batch.views import Urls, _url

    urls = Urls("https://acct.region.batch.example:8443/batch/acct")
    task_url = urls.url_of_each("jobs", "job 1", "tasks")
    cached = _url.cache_info().currsize
    made = [task_url(f"t/{i}") for i in range(100)]
    assert made[7] == "https://acct.region.batch.example:8443/batch/acct/jobs/job%201/tasks/t%2F7"
    assert _url.cache_info().currsize == cached
    assert made[7] == urls.url("jobs", "job 1", "tasks", "t/7")


@pytest.mark.parametrize("body", [
    {"odata.metadata": "https://a/$metadata#tasks", "value": [{"id": "t1", "exitCode": -1, "ok": True,
                                                               "none": None, "name": "naïve ✓ \u2028"}]},
    {"huge": 10 ** 30, "negative": -(10 ** 25), "id": "kept as a client gave it"},
])
def test_batch_json_bodies_are_the_bytes_starlette_would_write(body):
    """Every Batch answer with a JSON body is written by orjson (views.json_bytes): the same
    compact UTF-8 as Starlette's JSONResponse, and through the json module for what orjson
    refuses (an integer past 64 bits)."""
    from starlette.responses import JSONResponse

    from batchyard.api.batch.router import BatchJSON

    assert BatchJSON(body).body == JSONResponse(body).body


def test_what_a_pool_keeps_from_creation_compares_as_creation_reads_it_on_both_planes():
    """One check for the data plane's PATCH and the management plane's update: a value sent
    back in another spelling is no change; a pool stored before jobDefaultOrder had a
    default is no different from one sent with it; a real change is named."""
    kept = {"vmSize": "standard_a1_v2", "taskSlotsPerNode": 2, "enableInterNodeCommunication": False,
            "taskSchedulingPolicy": {"nodeFillType": "spread"}}  # as stored before jobDefaultOrder
    same = {"vmSize": "STANDARD_A1_V2", "taskSlotsPerNode": 2,
            "taskSchedulingPolicy": {"nodeFillType": "spread", "jobDefaultOrder": "none"}}
    assert pool_spec.changes_kept_at_creation(same, kept) == []
    changed = {**same, "taskSchedulingPolicy": {"nodeFillType": "pack"}, "enableInterNodeCommunication": True}
    assert pool_spec.changes_kept_at_creation(changed, kept) == ["taskSchedulingPolicy", "enableInterNodeCommunication"]
    with pytest.raises(InvalidInput) as refused:
        pool_spec.refuse_changes_kept_at_creation(changed, kept)
    assert refused.value.details[0]["value"] == "taskSchedulingPolicy"
